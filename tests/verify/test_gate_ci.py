"""docs/ci.md's complete CI job, run as written: VapSR x4 with the official weights and the real photo -- export
(+ AOTI), golden, parity on ORT FP32/FP16 at two resolutions (one 1024 input pixels wide, tiled), the C++ check.
Skips cleanly without ../shared or without the C++ toolchain."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from deploykit.serve.cpp_build import missing_headers, missing_tools, torch_cmake_prefix

REPO = Path(__file__).resolve().parents[2]
PHOTO = REPO.parent / "shared" / "images" / "noisy_real.png"


def job_script() -> str:
    """The ```bash block of docs/ci.md that starts with '# ci-job'."""
    match = re.search(r"```bash\n# ci-job\n(.*?)```", (REPO / "docs" / "ci.md").read_text(), re.S)
    assert match, "docs/ci.md lost its '# ci-job' block"
    return match.group(1)


@pytest.mark.slow
def test_docs_ci_job_runs(vapsr_x4_weights, tmp_path):
    missing = missing_tools() + missing_headers() + ([] if torch_cmake_prefix() else ["torch's CMake files"])
    if missing:
        pytest.skip("C++ toolchain incomplete, missing: " + "; ".join(missing))
    if not PHOTO.exists():
        pytest.skip(f"the real photo is not at {PHOTO}")
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "deploykit").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m deploykit.cli.app "$@"\n')
    (shim / "deploykit").chmod(0o755)
    work = tmp_path / "ci"
    env = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}", "WEIGHTS": str(vapsr_x4_weights),
           "PHOTO": str(PHOTO), "WORK": str(work), "CPP_BUILD": str(REPO / "build" / "cpp"),
           "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    proc = subprocess.run(["bash", "-c", job_script()], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    report = json.loads((work / "parity.json").read_text())
    assert report["passed"] and report["model"] == "vapsr:x4" and report["inputs"] == "images"
    assert len(report["weights_sha256"]) == 64  # the real checkpoint, not a random init
    cases = {(c["res"], c["precision"]): c for c in report["cases"]}
    assert set(cases) == {("128x128", "fp32"), ("128x128", "fp16"), ("1024x256", "fp32"), ("1024x256", "fp16")}
    assert all(c["status"] == "passed" for c in cases.values())
    assert cases[("1024x256", "fp16")]["plan"].startswith("tiled:") and cases[("128x128", "fp32")]["plan"] == "whole"
    assert cases[("1024x256", "fp32")]["max_abs"] <= 1e-4 and cases[("1024x256", "fp16")]["psnr_db"] >= 40
    suite = ET.parse(work / "parity.xml").getroot().find("testsuite")
    assert len(suite.findall("testcase")) == 4 and suite.get("failures") == "0" and suite.get("skipped") == "0"
    assert (work / "parity.html").read_text().count("data:image/png;base64,") == 4 * 7
    golden = json.loads((work / "golden" / "golden.json").read_text())
    assert golden["weights_sha256"] == report["weights_sha256"] and golden["cases"][0]["res"] == [64, 64]
    assert re.search(r"aoti_run: check \S+golden: 1 of 1 cases passed", proc.stdout), proc.stdout[-2000:]
    print(proc.stdout[-1500:])
