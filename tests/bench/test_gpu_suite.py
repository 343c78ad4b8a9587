"""benchmarks/gpu_suite.sh dry-runs on CPU at a tiny size: the same bench command a GPU machine runs, writing
JSON/CSV/PNG with the same-run GEMM probe (on CPU: FP32 only; no GPU figure is invented)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "gpu_suite.sh"


@pytest.mark.slow
def test_gpu_suite_dry_run_on_cpu(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    env = {**os.environ, "MODELS": "srresnet:x2", "RES": "32", "BACKENDS": "torch", "PRECISIONS": "fp32",
           "WARMUP": "0", "SECONDS_PER_CASE": "0.01", "OUT": str(tmp_path), "NAME": "dry",
           "DEPLOYKIT": f"{sys.executable} -m deploykit.cli.app", "DEPLOYKIT_CACHE": str(tmp_path / "cache")}
    run = subprocess.run(["bash", str(SUITE)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    (folder,) = [p for p in tmp_path.iterdir() if p.name != "cache"]
    data = json.loads((folder / "dry.json").read_text())
    assert {p.suffix for p in folder.iterdir()} == {".json", ".csv", ".png"}
    assert data["settings"]["sizes"] == ["32x32"] and data["settings"]["seconds"] == 0.01
    (record,) = data["records"]
    assert record["status"] == "ok" and record["peak_fraction"] is not None
    on_gpu = folder.name.startswith("gpu-")
    assert ("fp16" in data["probe"]["before"]) == on_gpu  # a GPU probe only where a GPU ran it
    if not on_gpu:
        assert "dry run" in run.stderr
