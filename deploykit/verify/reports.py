"""The gate's machine-readable reports: JUnit XML (one testcase per case; failures carry the figures, a backend
that cannot run here is ``<skipped>``, never a pass) and JSON (schema ``deploykit.parity-report``, versioned).
Both are written atomically."""

from __future__ import annotations

import json
import math
import platform
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

from deploykit._version import __version__
from deploykit.util.files import write_bytes_atomic
from deploykit.util.system import cpu_model

SCHEMA = "deploykit.parity-report"
SCHEMA_VERSION = 1


def environment() -> dict:
    """What ran the gate: versions and the CPU (figures are only comparable on the same)."""
    versions = {}
    for name in ("numpy", "onnxruntime", "torch"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"deploykit": __version__, "python": platform.python_version(), "cpu": cpu_model(), **versions}


def _finite(value):
    """JSON has no infinity or NaN: such figures are written as null."""
    return value if not isinstance(value, float) or math.isfinite(value) else None


def report_dict(report) -> dict:
    cases = [{k: _finite(v) for k, v in c.to_dict().items()} for c in report.cases]
    worst = report.worst
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "model": report.model, "export_dir": str(report.export_dir), **{k: v for k, v in report.identity.items()
                                                                        if k != "model"},
        "inputs": report.inputs, "passed": report.passed, "exit_code": report.exit_code,
        "verdict": report.verdict(),
        "counts": {"cases": len(report.cases), "failed": len(report.failed), "skipped": len(report.skipped)},
        "tolerances": {p: t.to_dict() for p, t in report.tolerances.items()},
        "worst": worst.name if worst else None,
        "golden_saved": str(report.golden_saved) if report.golden_saved else None,
        "notes": report.notes, "environment": environment(), "cases": cases,
    }


def write_json(report, path: str | Path) -> Path:
    path = Path(path)
    write_bytes_atomic(path, (json.dumps(report_dict(report), indent=2, allow_nan=False) + "\n").encode())
    return path


def junit_tree(report) -> ET.ElementTree:
    suites = ET.Element("testsuites", name="deploykit parity")
    suite = ET.SubElement(suites, "testsuite", name=f"parity {report.model}", tests=str(len(report.cases)),
                          failures=str(len(report.failed)), errors="0", skipped=str(len(report.skipped)),
                          time=f"{sum(c.seconds for c in report.cases):.3f}")
    props = ET.SubElement(suite, "properties")
    for key, value in (("model", report.model), ("inputs", report.inputs),
                       ("weights_sha256", report.identity.get("weights_sha256")),
                       ("manifest_sha256", report.identity.get("manifest_sha256"))):
        ET.SubElement(props, "property", name=key, value=str(value))
    for case in report.cases:
        tc = ET.SubElement(suite, "testcase", classname=f"parity.{report.model}.{case.backend}.{case.precision}",
                           name=case.key, time=f"{case.seconds:.3f}")
        if case.status == "skipped":
            ET.SubElement(tc, "skipped", message=case.reason)
        elif case.status == "failed":
            el = ET.SubElement(tc, "failure", message=case.summary(), type="ParityFailure")
            el.text = case.summary()
        else:
            ET.SubElement(tc, "system-out").text = case.summary()
    ET.indent(suites)
    return ET.ElementTree(suites)


def write_junit(report, path: str | Path) -> Path:
    path = Path(path)
    data = ET.tostring(junit_tree(report).getroot(), encoding="utf-8", xml_declaration=True)
    write_bytes_atomic(path, data + b"\n")
    return path
