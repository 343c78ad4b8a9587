"""Parity of engines (TensorRT, ORT's TensorRT and CUDA EPs) against PyTorch FP32, inside the engine's profile,
recorded in the manifest's engine entry."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from deploykit.artifacts.engines import record_engine_parity, records_as_dicts
from deploykit.artifacts.manifest import read_manifest
from deploykit.errors import EngineError
from deploykit.runtime.gpu import torch_device
from deploykit.runtime.open import open_backend
from deploykit.runtime.profiles import Profile, engine_parity_shapes
from deploykit.runtime.torch_backend import strict_fp32
from deploykit.verify.parity import check_parity
from deploykit.verify.reference import reference_backend
from deploykit.zoo.registry import get_spec

# engine parity record name (the manifest's ``engines[].parity`` keys, --parity-backends) -> runner kind
ENGINE_BACKENDS = {"tensorrt": "trt", "ort-tensorrt": "ort-tensorrt", "ort-cuda": "ort-cuda"}


def open_engine_backend(kind: str, export_dir: str | Path, entry: dict, *, device: int = 0):
    """A runner of ``kind`` set up like the engine entry (same precision and profile) on CUDA device ``device``."""
    if kind not in ENGINE_BACKENDS:
        raise EngineError(f"unknown engine backend '{kind}' (use {', '.join(ENGINE_BACKENDS)})")
    manifest = read_manifest(export_dir)
    return open_backend(ENGINE_BACKENDS[kind], get_spec(manifest["model"]["name"]), precision=entry["precision"],
                        export_dir=export_dir, manifest=manifest, engine=entry,
                        profile=Profile.from_dict(entry["profile"]), device=device)


def run_engine_parity(export_dir: str | Path, entry: dict, *, backends: Sequence[str] = ("tensorrt",),
                      shapes: Sequence[tuple[int, int, int]] | None = None, device: int = 0) -> dict[str, list[dict]]:
    """Parity of each backend on CUDA device ``device`` against PyTorch FP32 at shapes inside the engine's profile;
    recorded in the manifest."""
    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    shapes = list(shapes or engine_parity_shapes(Profile.from_dict(entry["profile"])))
    where = torch_device(device)
    reference, spec = reference_backend(manifest, device=where)
    output = spec.outputs[spec.image_output].name
    results = {}
    for kind in backends:
        with open_engine_backend(kind, export_dir, entry, device=device) as candidate, strict_fp32(where):
            records = check_parity(spec, reference, candidate, shapes, outputs=[output])
        results[kind] = records_as_dicts(records)
        record_engine_parity(export_dir, entry["key"], kind, records)
    return results
