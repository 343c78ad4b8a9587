"""The runner ``infer`` restores with: a model with its weights, an exported artifact or an engine, opened through
``deploykit.runtime.open.open_backend`` and checked against the zoo's inputs."""

from __future__ import annotations

from pathlib import Path

from deploykit.artifacts.lookup import export_dir, onnx_artifact
from deploykit.artifacts.manifest import read_manifest
from deploykit.errors import ArtifactError, DeployKitError, InputError
from deploykit.runtime.base import Backend
from deploykit.runtime.open import PRECISIONS, open_backend, require_available
from deploykit.util.text import one_line
from deploykit.zoo.factory import build_model
from deploykit.zoo.spec import ModelSpec

INFER_BACKENDS = ("torch", "ort", "ort-cuda", "trt")  # the runtime.open backends infer restores with


def _onnx_path(spec: ModelSpec, precision: str, onnx: Path | None, exports: Path) -> tuple[Path, list[str]]:
    """The ONNX file to run: ``--onnx`` or the export's artifact of that precision; notes about its weights."""
    if onnx is not None:
        if not Path(onnx).is_file():
            raise ArtifactError(f"ONNX file {onnx} not found")
        return Path(onnx), []
    fp16 = " (with FP16)" if precision == "fp16" else ""
    hint = f"run 'deploykit export {spec.name}'{fp16} first, or pass --onnx FILE"
    folder = export_dir(spec, exports)
    try:
        manifest = read_manifest(folder)
    except ArtifactError as exc:
        raise ArtifactError(f"no exported {spec.name} under {folder} ({exc}); {hint}") from exc
    if manifest.get("model", {}).get("name") != spec.name:
        raise ArtifactError(f"{folder} holds {manifest.get('model', {}).get('name')}, not {spec.name}; {hint}")
    artifact = onnx_artifact(manifest, precision)
    if artifact is None or not (folder / artifact["file"]).is_file():
        raise ArtifactError(f"no {precision} ONNX artifact for {spec.name} in {folder}; {hint}")
    notes = []
    if manifest.get("weights", {}).get("source") == "random-init":
        notes.append(f"{artifact['file']} was exported from a random initialisation: outputs are not meaningful "
                     "images (export with --weights)")
    return folder / artifact["file"], notes


def open_runner(spec: ModelSpec, backend: str = "torch", *, precision: str = "fp32", weights: Path | None = None,
                onnx: Path | None = None, exports: Path = Path("exports"), seed: int = 0,
                unsafe_pickle: bool = False) -> tuple[Backend, str, list[str]]:
    """The runner ``infer`` restores with: (backend, name of its image output, notes to show the user).
    Resolves what to run (a model with ``--weights``, an exported artifact, an engine) and opens it through
    ``deploykit.runtime.open.open_backend``."""
    if backend not in INFER_BACKENDS:
        raise InputError(f"unknown backend '{backend}' (use {', '.join(INFER_BACKENDS)})")
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}' (use fp32 or fp16)")
    if backend == "torch":
        if onnx is not None:
            raise InputError("--onnx runs with --backend ort or ort-cuda, not torch")
        model, _, _ = build_model(spec, weights, seed=seed, unsafe_pickle=unsafe_pickle)
        notes = [] if weights else [f"no --weights: {spec.name} runs from a seeded random initialisation (seed "
                                    f"{seed}); outputs are not meaningful images"]
        return open_backend("torch", spec, model=model, precision=precision), spec.outputs[spec.image_output].name, \
            notes
    if weights is not None:
        raise InputError(f"--weights is for --backend torch; the {backend} backend runs an exported artifact with "
                         f"its weights inside (run 'deploykit export {spec.name} --weights FILE')")
    if backend == "trt":
        require_available("trt")
        if onnx is not None:
            raise InputError("--onnx is for the ort backends; trt runs the engine recorded in "
                             f"{export_dir(spec, exports)} (built by 'deploykit build')")
        runner, notes = open_backend("trt", spec, precision=precision, export_dir=export_dir(spec, exports)), []
    else:
        require_available(backend)
        path, notes = _onnx_path(spec, precision, onnx, exports)
        try:
            runner = open_backend(backend, spec, onnx=path, precision=precision)
        except DeployKitError:
            raise
        except Exception as exc:  # onnxruntime's own errors for a broken file
            raise ArtifactError(f"ONNX Runtime cannot load {path}: {one_line(exc, 200)}") from exc
    expected = [t.name for t in spec.inputs]
    if list(runner.input_names) != expected:
        raise ArtifactError(f"{runner.name} takes inputs {runner.input_names}, {spec.name} needs {expected}; "
                            f"re-export it with 'deploykit export {spec.name}'")
    image_out = spec.outputs[spec.image_output].name
    return runner, image_out if image_out in runner.output_names else runner.output_names[0], notes
