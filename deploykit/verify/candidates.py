"""The runners the gate judges, one per (backend x precision), opened through ``runtime.open.open_backend``;
one that cannot run here carries its reason instead (its cases are reported skipped, never passed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploykit.artifacts.lookup import onnx_artifact, verified_file
from deploykit.errors import DeployKitError, InputError
from deploykit.runtime.base import Backend
from deploykit.runtime.open import PRECISIONS, open_backend, unavailable_reason
from deploykit.util.text import one_line
from deploykit.zoo.spec import ModelSpec

GATE_BACKENDS = {
    "ort": "ONNX Runtime CPU on the export's ONNX of each precision",
    "ort-cuda": "ONNX Runtime CUDA EP on the export's ONNX",
    "ort-tensorrt": "ONNX Runtime TensorRT EP on the export's ONNX",
    "trt": "the export's TensorRT engine of each precision",
    "aoti": "the export's AOTInductor package (FP32)",
}


@dataclass
class Candidate:
    backend: str
    precision: str
    runner: Backend | None
    reason: str
    output: str

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.runner.run(feed)[self.output]

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()


def open_candidates(out_dir: Path, manifest: dict, spec: ModelSpec, backends: Sequence[str],
                    precisions: Sequence[str], *, threads: int | None = None) -> list[Candidate]:
    for name in backends:
        if name not in GATE_BACKENDS:
            raise InputError(f"unknown --backend '{name}' (use {', '.join(GATE_BACKENDS)})")
    for p in precisions:
        if p not in PRECISIONS:
            raise InputError(f"unknown --precision '{p}' (use {' or '.join(PRECISIONS)})")
    output = spec.outputs[spec.image_output].name
    return [_open(kind, p, out_dir, manifest, spec, output, threads) for kind in dict.fromkeys(backends)
            for p in dict.fromkeys(precisions) if not (kind == "aoti" and p != "fp32" and len(precisions) > 1)]


def _open(kind: str, precision: str, out_dir: Path, manifest: dict, spec: ModelSpec, output: str,
          threads: int | None) -> Candidate:
    def skipped(reason: str) -> Candidate:
        return Candidate(kind, precision, None, reason, output)

    reason = unavailable_reason(kind)
    if reason:
        return skipped(reason)
    if kind == "aoti" and precision != "fp32":
        return skipped("AOTInductor packages are FP32 only")  # asked for alone: else no such case
    try:
        if kind == "ort":
            artifact = onnx_artifact(manifest, precision)
            if artifact is None:
                return skipped(f"the export has no {precision} ONNX artifact")
            runner = open_backend("ort", spec, onnx=verified_file(out_dir, artifact), precision=precision,
                                  threads=threads)
        else:
            runner = open_backend(kind, spec, precision=precision, export_dir=out_dir, manifest=manifest)
    except DeployKitError as exc:
        return skipped(one_line(exc))
    return Candidate(kind, precision, runner, "", output if output in runner.output_names else
                     runner.output_names[0])
