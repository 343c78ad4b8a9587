"""``deploykit triton``: a Triton Inference Server model repository from an export's artifacts.

One model directory per call, ``<repo>/<family>_<variant>_<suffix>/``:

- ``onnxruntime`` (suffix ``onnx``): ``platform: "onnxruntime_onnx"``, the FP32 or FP16 ONNX of the manifest in
  ``1/``; ``--ort-trt`` adds ONNX Runtime's TensorRT execution provider as the GPU accelerator.
- ``tensorrt`` (suffix ``trt``): ``platform: "tensorrt_plan"``, every engine of the manifest's ``engines`` list (one
  per GPU compute capability, newest build wins) in ``1/``, picked by the server through ``cc_model_filenames``.
- ``python`` (suffix ``python``): ``backend: "python"`` running ``deploykit/serve/triton_python_model.py`` (copied
  as ``1/model.py``) on the same ONNX through deploykit's ``OrtBackend``: the repository also serves on CPU-only
  machines (the Triton container, or the ``tritonserver`` binary that ``nvidia-pytriton`` bundles).

This module picks the files and publishes the directory; the text of ``config.pbtxt`` is
:mod:`deploykit.serve.triton_config`'s, and it is validated before anything is written (a text that does not parse
is an error). The model directory is staged next to the repository (never inside it: Triton loads hidden
directories too) and renamed into place, so a server polling the repository never sees a half-written model.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from deploykit.artifacts.engines import verify_engine_file
from deploykit.artifacts.lookup import read_export, require_onnx
from deploykit.artifacts.manifest import MANIFEST_NAME
from deploykit.errors import ArtifactError, EngineError, InputError
from deploykit.serve.triton_config import SUFFIX, RepoOptions, check_options, render_config, validate_config
from deploykit.util.files import sweep_stale
from deploykit.util.locks import folder_lock
from deploykit.util.owners import owner_tag
from deploykit.zoo.registry import ModelSpec, get_spec

VERSION = "1"
PYTHON_MODEL_SOURCE = Path(__file__).with_name("triton_python_model.py")


@dataclass
class RepoResult:
    """What ``write_repository`` wrote: the model directory, its config text, its files, notes for the user."""

    repo: Path
    model_name: str
    model_dir: Path
    backend: str
    precision: str
    config_text: str
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    replaced: bool = False


@dataclass
class _Sources:
    """The files of one model directory: (source, name inside the version directory), and what they are."""

    copies: list[tuple[Path, str]]
    artifact: str  # the ONNX file or the first engine (deploykit_artifact)
    precision: str
    engines: list[dict] | None = None
    notes: list[str] = field(default_factory=list)


def default_model_name(spec: ModelSpec, backend: str) -> str:
    return f"{spec.family}_{spec.variant}_{SUFFIX[backend]}"


def pick_engines(manifest: dict, precision: str | None, spec: ModelSpec) -> tuple[list[dict], str, list[str]]:
    """One engine per compute capability (the newest build of the wanted precision); notes about the rest."""
    engines = manifest.get("engines") or []
    if not engines:
        raise EngineError(f"the export of {spec.name} has no TensorRT engines in its manifest: build one per GPU "
                          f"architecture with 'deploykit build {spec.name}' on a machine with that GPU (or use "
                          "--backend onnxruntime / python)")
    precisions = sorted({e.get("precision") for e in engines})
    if precision is None:
        if len(precisions) > 1:
            raise InputError(f"the manifest has {' and '.join(precisions)} engines; choose one with --precision")
        precision = precisions[0]
    chosen = [e for e in engines if e.get("precision") == precision]
    if not chosen:
        raise EngineError(f"no {precision} TensorRT engine for {spec.name} (have: {', '.join(precisions)}); build it "
                          f"with 'deploykit build {spec.name} --precision {precision}' or pass --precision")
    by_cc: dict[str, list[dict]] = {}
    for e in chosen:
        by_cc.setdefault(str(e.get("compute_capability")), []).append(e)
    picked, notes = [], []
    for cc, group in sorted(by_cc.items()):
        group = sorted(group, key=lambda e: e.get("created", ""))
        picked.append(group[-1])
        for old in group[:-1]:
            notes.append(f"compute capability {cc}: {old['file']} (TensorRT {old.get('tensorrt')}) is superseded by "
                         f"the newer {group[-1]['file']}; one engine per capability goes into cc_model_filenames")
    versions = sorted({str(e.get("tensorrt")) for e in picked})
    if len(versions) > 1:
        notes.append(f"engines come from TensorRT {', '.join(versions)}: one Triton container ships one TensorRT "
                     "version and refuses plans from another; rebuild them with one version")
    return picked, precision, notes


def _engine_sources(manifest: dict, folder: Path, options: RepoOptions, spec: ModelSpec) -> _Sources:
    engines, precision, notes = pick_engines(manifest, options.precision, spec)
    copies = [(verify_engine_file(folder, e), e["file"]) for e in engines]
    return _Sources(copies, engines[0]["file"], precision, engines, notes)


def _onnx_sources(manifest: dict, folder: Path, options: RepoOptions, spec: ModelSpec) -> _Sources:
    precision = options.precision or "fp32"
    artifact = require_onnx(manifest, folder, precision, spec)["file"]
    copies = [(folder / artifact, artifact)]
    if options.backend == "python":
        copies.append((PYTHON_MODEL_SOURCE, "model.py"))
    return _Sources(copies, artifact, precision)


def write_repository(name: str, repo: str | Path, *, exports: str | Path = "exports",
                     options: RepoOptions | None = None) -> RepoResult:
    """Write (or replace) one model directory of a Triton repository from ``exports/<family>/<variant>``."""
    options = options or RepoOptions()
    spec = get_spec(name)
    check_options(spec, options)
    folder, manifest = read_export(spec, exports)
    model_name = options.model_name or default_model_name(spec, options.backend)
    pick = _engine_sources if options.backend == "tensorrt" else _onnx_sources
    sources = pick(manifest, folder, options, spec)
    notes = list(sources.notes)
    if manifest.get("weights", {}).get("source") == "random-init":
        notes.append(f"{spec.name} was exported from a random initialisation: outputs are not meaningful images "
                     "(export with --weights)")
    text, more = render_config(spec, manifest, options, model_name=model_name, precision=sources.precision,
                               artifact=sources.artifact, engines=sources.engines)
    notes += more
    validate_config(text, model_name=model_name)
    copies = [*sources.copies, (folder / MANIFEST_NAME, MANIFEST_NAME)]
    repo = Path(repo)
    model_dir, replaced = _publish(repo, model_name, text, copies)
    files = ["config.pbtxt"] + [f"{VERSION}/{n}" for _, n in copies]
    return RepoResult(repo, model_name, model_dir, options.backend, sources.precision, text, files, notes, replaced)


# --- publishing --------------------------------------------------------------------------------------------------

def _staging_root(repo: Path) -> tuple[Path, bool]:
    """A directory on the repository's filesystem but outside it (Triton would load a staging dir inside it)."""
    parent = repo.resolve().parent
    if os.access(parent, os.W_OK):
        return parent, True
    return Path(tempfile.gettempdir()), False


def _stage(new: Path, config_text: str, copies: list[tuple[Path, str]]) -> None:
    """The complete model directory at ``new``: the version directory's files, then config.pbtxt (fsynced)."""
    (new / VERSION).mkdir(parents=True)
    for src, dst in copies:
        shutil.copy2(src, new / VERSION / dst)
    with open(new / "config.pbtxt", "w") as fh:
        fh.write(config_text)
        fh.flush()
        os.fsync(fh.fileno())


def _publish(repo: Path, model_name: str, config_text: str, copies: list[tuple[Path, str]]) -> tuple[Path, bool]:
    """Stage the model directory beside the repository and rename it into place (the old one restored on failure)."""
    try:
        repo.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"cannot create repository {repo}: {exc.strerror or exc}") from exc
    with folder_lock(repo, "deploykit triton"):  # one writer per repository
        return _publish_locked(repo, model_name, config_text, copies)


def _publish_locked(repo: Path, model_name: str, config_text: str,
                    copies: list[tuple[Path, str]]) -> tuple[Path, bool]:
    root, same_fs = _staging_root(repo)
    sweep_stale(root)  # staging of killed publishes: the name carries the writer's pid and start time
    stage = Path(tempfile.mkdtemp(prefix=f".{repo.name}.{model_name}.staging-{owner_tag()}-", dir=root))
    target = repo / model_name
    replaced = target.exists()
    try:
        new, old = stage / "new", stage / "old"
        _stage(new, config_text, copies)
        if replaced:
            _move(target, old, same_fs)
        try:
            _move(new, target, same_fs)
        except BaseException:
            if replaced and old.exists() and not target.exists():
                _move(old, target, same_fs)
            raise
    except OSError as exc:
        raise ArtifactError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return target, replaced


def _move(src: Path, dst: Path, same_fs: bool) -> None:
    """Rename (atomic on one filesystem); across filesystems copy + delete, which is not atomic."""
    if same_fs:
        try:
            os.replace(src, dst)
            return
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
    shutil.move(str(src), str(dst))
