"""``deploykit parity``: re-check existing artifacts against a freshly built PyTorch FP32 reference."""

from __future__ import annotations

from pathlib import Path

from deploykit.artifacts.lookup import locate, onnx_artifacts, verified_file
from deploykit.artifacts.manifest import read_manifest
from deploykit.errors import ArtifactError
from deploykit.runtime.open import open_backend
from deploykit.verify.parity import ParityRecord, check_parity
from deploykit.verify.reference import reference_backend
from deploykit.zoo.sample_inputs import parity_shapes


def rerun_parity(path: str | Path, *, weights: str | Path | None = None,
                 unsafe_pickle: bool = False) -> list[ParityRecord]:
    out_dir, only = locate(path)
    manifest = read_manifest(out_dir)
    reference, spec = reference_backend(manifest, weights=weights, unsafe_pickle=unsafe_pickle)
    _, shapes = parity_shapes(spec, static_hw=manifest.get("export", {}).get("static_hw"))
    records = []
    for artifact in onnx_artifacts(manifest):
        if only and artifact["file"] not in only:
            continue
        file = verified_file(out_dir, artifact)
        with open_backend("ort", spec, onnx=file, precision=artifact["precision"]) as backend:
            records += check_parity(spec, reference, backend, shapes)
    if not records:
        raise ArtifactError(f"no ONNX artifacts to check in {out_dir}")
    return records
