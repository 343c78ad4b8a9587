"""Engines in the manifest: entries, identity checks before loading, and parity against PyTorch FP32.

An engine entry lives in the manifest's ``engines`` list (schema ``deploykit.manifest`` v1, additive key). It
carries the engine's identity (model, variant, precision, profile, TensorRT version, GPU name and compute
capability, ONNX file and sha256, build path), a 16-hex ``key`` over that identity, the file with its sha256, the
build settings, the engine's I/O tensors as TensorRT reports them, and per-backend parity records.

Writes go through ``update_manifest`` and keep every other manifest key as it was; an entry with the same key
replaces the old one (a rebuild), others are kept (one entry per profile / GPU / TensorRT version).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

from deploykit.artifacts.lookup import verified_file
from deploykit.artifacts.manifest import update_manifest
from deploykit.errors import EngineError, EngineMismatchError
from deploykit.util.files import sha256_file

ENGINE_KIND = "tensorrt-engine"


def engine_entry(*, identity: dict, key: str, file: str, profile: dict, build: dict, io: list[dict],
                 created: str, engine_path: str | Path | None = None, sha256: str | None = None,
                 nbytes: int | None = None) -> dict:
    """The manifest record of one engine (sha256 / bytes read from ``engine_path`` when not given)."""
    if engine_path is not None and (sha256 is None or nbytes is None):
        sha256, nbytes = sha256_file(engine_path), Path(engine_path).stat().st_size
    return {"kind": ENGINE_KIND, "key": key, "file": file, "bytes": nbytes, "sha256": sha256,
            "precision": identity["precision"], "tensorrt": identity["tensorrt"],
            "gpu_name": identity["gpu_name"], "compute_capability": identity["compute_capability"],
            "identity": identity, "profile": profile, "build": build, "io": io, "created": created, "parity": {}}


def upsert_engine_entry(export_dir: str | Path, entry: dict) -> dict:
    """Add (or replace, same key) an engine entry; every other manifest key is preserved. Atomic write."""
    def add(manifest: dict) -> None:
        manifest["engines"] = [*(e for e in manifest.get("engines", []) if e.get("key") != entry["key"]), entry]

    return update_manifest(export_dir, add)


def find_engine(manifest: dict, *, key: str | None = None, precision: str | None = None,
                file: str | None = None) -> dict:
    """The one engine entry matching key / file / precision (the newest when several match a precision)."""
    engines = manifest.get("engines", [])
    if key is not None:
        found = [e for e in engines if e.get("key") == key]
    elif file is not None:
        found = [e for e in engines if e.get("file") == Path(file).name]
    else:
        found = [e for e in engines if precision is None or e.get("precision") == precision]
    if not found:
        what = key or file or (f"{precision} " if precision else "") + "engine"
        raise EngineError(f"no {what} is recorded in this manifest; run 'deploykit build' first")
    return sorted(found, key=lambda e: e.get("created", ""))[-1]


def check_engine_identity(entry: dict, *, tensorrt_version: str, compute_capability: str,
                          gpu_name: str | None = None, onnx_sha256: str | None = None) -> list[str]:
    """Refuse (EngineMismatchError) an engine built for another TensorRT version or compute capability -- before
    any deserialisation. Returns warnings (another GPU model of the same compute capability loads but was not
    the GPU the tactics were timed on)."""
    built_trt, built_cc = str(entry.get("tensorrt")), str(entry.get("compute_capability"))
    problems = []
    if built_trt != str(tensorrt_version):
        problems.append(f"it was built with TensorRT {built_trt} and this machine has TensorRT {tensorrt_version} "
                        "(plans load only in the TensorRT version that built them)")
    if built_cc != str(compute_capability):
        problems.append(f"it was built for compute capability {built_cc} ({entry.get('gpu_name')}) and this GPU is "
                        f"{compute_capability}" + (f" ({gpu_name})" if gpu_name else ""))
    if onnx_sha256 is not None and entry.get("identity", {}).get("onnx_sha256") != onnx_sha256:
        problems.append("the ONNX file it was built from has changed since (sha256 differs)")
    if problems:
        raise EngineMismatchError(f"engine {entry.get('file')} cannot be used here: {'; '.join(problems)}; "
                                  "rebuild it on this machine with 'deploykit build'")
    warnings = []
    if gpu_name is not None and entry.get("gpu_name") not in (None, gpu_name):
        warnings.append(f"engine was tuned on {entry.get('gpu_name')}, running on {gpu_name} (same compute "
                        "capability: it loads, timings may differ)")
    return warnings


def verify_engine_file(export_dir: str | Path, entry: dict) -> Path:
    """The engine file exists and matches the sha256 in its entry (no torn or foreign file)."""
    return verified_file(export_dir, entry, again="deploykit build", error=EngineError)


def records_as_dicts(records: Iterable) -> list[dict]:
    """ParityRecords -> dicts; non-finite floats (a shape mismatch reports inf) become None: the manifest is strict
    JSON (write_json_atomic refuses NaN/inf)."""
    rows = [dict(r) if isinstance(r, dict) else r.to_dict() for r in records]
    for row in rows:
        for k, v in row.items():
            if isinstance(v, float) and not math.isfinite(v):
                row[k] = None
    return rows


def _worst(values: Iterable, pick) -> float | None:
    values = [v for v in values if v is not None]
    return pick(values) if values else None


def record_engine_parity(export_dir: str | Path, key: str, backend: str, records: Iterable) -> dict:
    """Store parity records (ParityRecord or dicts, vs PyTorch FP32) under ``engines[key].parity[backend]``, plus a
    summary; atomic, every other manifest key kept. Returns the updated entry."""
    rows = records_as_dicts(records)
    if not rows:
        raise EngineError(f"no parity records to store for {backend}")

    def store(manifest: dict) -> None:
        entry = find_engine(manifest, key=key)
        entry.setdefault("parity", {})[backend] = rows
        entry["parity_summary"] = {
            name: {"passed": all(r["passed"] for r in recs), "min_psnr_db": _worst((r["psnr_db"] for r in recs), min),
                   "max_abs": _worst((r["max_abs"] for r in recs), max),
                   "nonfinite": sum(r["nonfinite"] for r in recs), "shapes": [r["shape"] for r in recs]}
            for name, recs in entry["parity"].items()}

    return find_engine(update_manifest(export_dir, store), key=key)
