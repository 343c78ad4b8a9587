"""The manifest: the contract with C++ and edge apps (``exports/<model>/<variant>/manifest.json``).

Versioned schema. It says what the graph takes and returns (names, dtypes, layout, value range, shape contract),
which files exist (sha256, bytes), how they were made (exporter, opset, forms, simplifier, FP32-kept nodes, tool
versions) and how they were proven (parity figures per backend, precision and shape).

This module is the manifest's one reader and one writer: :func:`write_manifest` writes a whole new one (an
export, in its staging folder), :func:`update_manifest` changes an existing one in place (an engine, an
AOTInductor package, parity records), atomically and keeping every key it does not touch.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from collections.abc import Callable
from importlib import metadata
from pathlib import Path, PurePosixPath

from deploykit.errors import ArtifactError
from deploykit.util.files import write_json_atomic
from deploykit.util.locks import folder_lock
from deploykit.util.text import one_line
from deploykit.zoo.spec import ModelSpec

SCHEMA = "deploykit.manifest"
SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
_TOOLS = ("deploykit", "torch", "onnx", "onnxruntime", "onnxscript", "onnxslim", "onnxsim",
          "onnxconverter-common", "numpy")


def tool_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def io_section(spec: ModelSpec, dims_in: dict[str, list], dims_out: dict[str, list]) -> dict:
    by_name = {t.name: t for t in (*spec.inputs, *spec.outputs)}
    return {
        "layout": "NCHW",
        "value_range": list(spec.value_range),
        "inputs": [{"name": n, "dtype": "float32", "dims": d, "description": by_name[n].description}
                   for n, d in dims_in.items()],
        "outputs": [{"name": n, "dtype": "float32", "dims": d, "description": by_name[n].description}
                    for n, d in dims_out.items()],
    }


def contract_section(spec: ModelSpec) -> dict:
    return {"scale": spec.scale, "multiple_of": spec.multiple_of, "min_size": spec.min_size,
            "square": spec.square, "padding": "reflect right/bottom to multiple_of, crop the output back"}


def new_manifest(spec: ModelSpec) -> dict:
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {"name": spec.name, "family": spec.family, "variant": spec.variant, "task": spec.task,
                  "params": spec.params, "source": spec.source},
        "shape_contract": contract_section(spec),
        "tools": tool_versions(),
    }


def read_manifest(path: str | Path) -> dict:
    """Load a manifest (or the one inside a directory); ArtifactError when missing or of another schema."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"no manifest at {path}; run 'deploykit export' first") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ArtifactError(f"cannot read manifest {path}: {one_line(str(exc))[:200]}") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        schema = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ArtifactError(f"{path} is not a deploykit manifest (schema {schema!r})"[:300])
    version = data.get("schema_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ArtifactError(f"{path} has a schema_version that is not a number; re-run 'deploykit export'")
    if version > SCHEMA_VERSION:
        raise ArtifactError(f"{path} has schema version {version}; this deploykit reads "
                            f"up to {SCHEMA_VERSION}: upgrade deploykit")
    _check_shape(path, data)
    return data


def _check_shape(path: Path, data: dict) -> None:
    """The keys every reader indexes without looking: ``model.name``, and each artifact / engine entry's files,
    which must be plain names inside the export folder (never ``../../etc/passwd`` or an absolute path)."""
    bad = f"manifest {path} is damaged ({{}}); re-run 'deploykit export'"
    model = data.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise ArtifactError(bad.format("no model.name"))
    for section in ("artifacts", "engines"):
        entries = data.get(section, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ArtifactError(bad.format(f"{section} is not a list of entries"))
        for entry in entries:
            check_member_name(entry.get("file"), f"{section} file", bad)
            if entry.get("external_data"):  # None / "" : no external weights
                check_member_name(entry["external_data"], f"{section} external_data", bad)


def check_member_name(name: object, what: str, bad: str = "{}") -> str:
    """``name`` as a file name inside an export folder: a non-empty relative path with no ``..``, no absolute
    path, no backslash or NUL; ArtifactError (``bad`` formatted with the reason) otherwise."""
    if not isinstance(name, str) or not name.strip():
        raise ArtifactError(bad.format(f"{what} is not a file name"))
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "~")) or "\\" in name or "\0" in name or ".." in parts or ":" in parts[0]:
        raise ArtifactError(bad.format(f"{what} {name[:80]!r} points outside the export folder"))
    return name


def manifest_path(path: str | Path) -> Path:
    """An export directory or its manifest.json -> the manifest.json path."""
    path = Path(path)
    return path if path.name == MANIFEST_NAME else path / MANIFEST_NAME


def write_manifest(path: str | Path, manifest: dict) -> None:
    """Write a whole manifest (strict JSON, atomically) into ``path`` (a directory or the manifest file)."""
    write_json_atomic(manifest_path(path), manifest)


def update_manifest(path: str | Path, change: Callable[[dict], object]) -> dict:
    """Read the manifest, let ``change`` edit it in place, write it back atomically; returns the new manifest.
    Every key ``change`` leaves alone is kept as it was. Holds the export folder's writer lock (``util.locks``)
    over the read-modify-write, so two updaters never drop each other's change."""
    file = manifest_path(path)
    with folder_lock(file.parent, "deploykit manifest update"):
        manifest = read_manifest(file)
        change(manifest)
        write_json_atomic(file, manifest)
    return manifest
