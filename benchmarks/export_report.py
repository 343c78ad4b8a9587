"""Export every zoo model (default variants, or those named) with each exporter and tabulate the results.

Usage: python benchmarks/export_report.py [--exporters dynamo,legacy] [--out DIR] [--json FILE] [NAME ...]
The table feeds README 'Exporter choice' and the export issue's note: exporter, opset, nodes before/after
simplification, FP32 parity max abs per shape, FP16 PSNR (ORT and torch-half) and export time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback

from deploykit.errors import DeployKitError
from deploykit.exporting.pipeline import export
from deploykit.zoo.registry import families


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*")
    ap.add_argument("--exporters", default="auto")
    ap.add_argument("--out", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    names = args.names or [f"{f.name}:{f.default}" for f in families().values()]
    rows = []
    for name in names:
        for exporter in args.exporters.split(","):
            out = args.out or tempfile.mkdtemp(prefix="dk-report-")
            start = time.perf_counter()
            try:
                result = export(name, out=out, exporter=exporter)
                m = result.manifest
                fp32 = [p for p in m["parity"] if p["precision"] == "fp32"]
                fp16 = [p for p in m["parity"] if p["precision"] == "fp16"]
                half = m.get("fp16", {}).get("torch_fp16_emulation", [])
                row = {
                    "model": name, "exporter": m["export"]["exporter"], "asked": exporter,
                    "opset": m["export"]["opset"], "nodes_before": m["simplify"]["nodes_before"],
                    "nodes_after": m["simplify"]["nodes_after"], "simplified": m["simplify"]["applied"],
                    "fp32_max_abs": [p["max_abs"] for p in fp32], "shapes": [p["shape"] for p in fp32],
                    "fp16_ort_psnr": min(p["psnr_db"] for p in fp16) if fp16 else None,
                    "fp16_torch_emulation_psnr": min(p["psnr_db"] for p in half) if half else None,
                    "fp16_torch_emulation_nonfinite": sum(p["nonfinite"] for p in half) if half else None,
                    "fp32_kept_nodes": next((a.get("fp32_node_count") for a in m["artifacts"]
                                             if a["precision"] == "fp16"), None),
                    "attempts": m["export"]["attempts"],
                    "steps": {s["step"]: s["seconds"] for s in result.steps},
                    "total_s": round(time.perf_counter() - start, 1),
                }
            except DeployKitError as exc:
                row = {"model": name, "asked": exporter, "error": str(exc)[:500],
                       "total_s": round(time.perf_counter() - start, 1)}
            except Exception as exc:  # keep going: the report should show every model
                row = {"model": name, "asked": exporter, "error": f"{type(exc).__name__}: {exc}"[:500],
                       "trace": traceback.format_exc()[-1500:], "total_s": round(time.perf_counter() - start, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
