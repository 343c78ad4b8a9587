"""``deploykit triton``: a Triton Inference Server model repository from an export's artifacts.

One model directory per call, ``<repo>/<family>_<variant>_<suffix>/``:

- ``onnxruntime`` (suffix ``onnx``): ``platform: "onnxruntime_onnx"``, the FP32 or FP16 ONNX of the manifest in
  ``1/``; ``--ort-trt`` adds ONNX Runtime's TensorRT execution provider as the GPU accelerator.
- ``tensorrt`` (suffix ``trt``): ``platform: "tensorrt_plan"``, every engine of the manifest's ``engines`` list (one
  per GPU compute capability, newest build wins) in ``1/``, picked by the server through ``cc_model_filenames``.
- ``python`` (suffix ``python``): ``backend: "python"`` running ``deploykit/triton_python_model.py`` (copied as
  ``1/model.py``) on the same ONNX through deploykit's ``OrtBackend``: the repository also serves on CPU-only
  machines (the Triton container, or the ``tritonserver`` binary that ``nvidia-pytriton`` bundles).

Inputs, outputs, dtypes and dims come from the manifest (``-1`` for dynamic H and W; the batch dim is Triton's own
when ``max_batch_size > 0``). Each ``config.pbtxt`` is parsed with Triton's own ``ModelConfig`` protobuf schema
(``tritonclient.grpc.model_config_pb2``) before anything is written; a text that does not parse is an error. The model
directory is staged next to the repository (never inside it: Triton loads hidden directories too) and renamed into
place, so a server polling the repository never sees a half-written model.

:class:`LocalServer` starts the ``tritonserver`` binary bundled with ``nvidia-pytriton`` on loopback (tests, the CPU
path in docs/triton.md, ``deploykit triton-serve``).
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from deploykit.errors import ArtifactError, BackendUnavailableError, EngineError, InputError
from deploykit.manifest import MANIFEST_NAME, read_manifest
from deploykit.zoo import ModelSpec, get_spec

BACKENDS = ("onnxruntime", "tensorrt", "python")
SUFFIX = {"onnxruntime": "onnx", "tensorrt": "trt", "python": "python"}
DEVICES = ("auto", "cpu", "gpu")
VERSION = "1"
PYTHON_MODEL_SOURCE = Path(__file__).with_name("triton_python_model.py")
DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int64": "TYPE_INT64",
          "int32": "TYPE_INT32", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
DEFAULT_WARMUP = 64
DEFAULT_QUEUE_DELAY_US = 2000
PARAM_PREFIX = "deploykit_"


# --- what goes into config.pbtxt ---------------------------------------------------------------------------------

@dataclass
class RepoOptions:
    """Everything ``deploykit triton`` decides about one model directory."""

    backend: str = "onnxruntime"
    precision: str | None = None  # fp32 | fp16; None: fp32 for ONNX, the engines' one for tensorrt
    max_batch: int = 8
    instances: int = 1
    device: str = "auto"  # instance kind for onnxruntime: auto | cpu | gpu (tensorrt: gpu, python: cpu)
    tile: int | None = None
    overlap: int = 32
    ort_trt: bool = False
    ort_trt_cache: str = "/tmp/deploykit-ort-trt"
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    threads: int = 0  # python backend: ONNX Runtime intra-op threads per instance (0: cores / instances)
    model_name: str | None = None
    warmup: bool = True


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


def _q(text: str) -> str:
    return json.dumps(str(text), ensure_ascii=False)  # a double-quoted string with C escapes; UTF-8 kept as is


def _dims(dims: list, batched: bool) -> list[int]:
    """Manifest dims ('batch', 3, 'height', 'width') -> Triton dims: -1 for symbolic, batch dropped when batched."""
    out = [d if isinstance(d, int) and d > 0 else -1 for d in dims]
    return out[1:] if batched else out


def _fmt_dims(dims: list[int]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _param(key: str, value) -> str:
    return f"parameters {{ key: {_q(key)} value {{ string_value: {_q(value)} }} }}"


def _tensor_block(kind: str, tensors: list[dict], batched: bool) -> str:
    rows = [f"  {{ name: {_q(t['name'])} data_type: {t['triton_dtype']} dims: {_fmt_dims(_dims(t['dims'], batched))} }}"
            for t in tensors]
    return f"{kind} [\n" + ",\n".join(rows) + "\n]"


def _io(manifest: dict, io_dtype: str) -> tuple[list[dict], list[dict]]:
    io = manifest.get("io") or {}
    if not io.get("inputs") or not io.get("outputs"):
        raise ArtifactError("the manifest has no io section (inputs/outputs); re-export the model with "
                            "'deploykit export'")

    def conv(t: dict) -> dict:
        dtype = io_dtype if t.get("dtype", "float32") == "float32" else t["dtype"]
        if dtype not in DTYPES:
            raise ArtifactError(f"tensor {t['name']} has dtype {dtype}, which has no Triton type here")
        return {**t, "dtype": dtype, "triton_dtype": DTYPES[dtype]}

    return [conv(t) for t in io["inputs"]], [conv(t) for t in io["outputs"]]


def _static_hw(inputs: list[dict]) -> tuple[int, int] | None:
    dims = inputs[0]["dims"]
    if len(dims) == 4 and all(isinstance(d, int) and d > 0 for d in dims[2:]):
        return int(dims[2]), int(dims[3])
    return None


def _warmup_hw(spec: ModelSpec, options: RepoOptions, static: tuple[int, int] | None,
               profile: dict | None) -> tuple[int, int]:
    if static:
        return static
    if profile is not None:
        lo, hi, opt = profile["min_hw"], profile["max_hw"], profile["opt_hw"]
        if options.tile and all(lo[k] <= options.tile <= hi[k] for k in (0, 1)):
            return options.tile, options.tile
        return int(opt[0]), int(opt[1])
    side = options.tile or min(DEFAULT_WARMUP, spec.tile or DEFAULT_WARMUP)
    side = -(-max(side, spec.min_size) // spec.multiple_of) * spec.multiple_of
    return side, side


def _warmup_block(inputs: list[dict], hw: tuple[int, int], batched: bool) -> str:
    batch = "batch_size: 1 " if batched else ""
    rows = []
    for t in inputs:
        dims = [d if isinstance(d, int) and d > 0 else None for d in t["dims"]]
        shape = [dims[1] or 1, *hw] if len(dims) == 4 else [d or 1 for d in dims[1:]]
        if not batched:
            shape = [1, *shape]
        rows.append(f"    inputs {{ key: {_q(t['name'])} value {{ data_type: {t['triton_dtype']} "
                    f"dims: {_fmt_dims(shape)} zero_data: true }} }}")
    return (f"model_warmup [\n  {{ name: \"{hw[0]}x{hw[1]}\" {batch}count: 1\n" + "\n".join(rows) + "\n  }\n]")


def _batching_block(options: RepoOptions, max_batch: int) -> str:
    comment = [
        "# Dynamic batching merges queued requests whose non-batch dims are equal. Tiles of one size (deploykit",
        "# triton-client --tile T sends every tile of every image at T x T) batch well; whole images of different",
        "# sizes do not batch with each other (each runs alone; Triton's ragged batching does not apply to",
        "# convolutional images), so tile on the client for throughput.",
    ]
    if max_batch <= 1:
        return "# max_batch_size <= 1: no dynamic batching (each request runs alone)."
    preferred = sorted({b for b in (max_batch // 2, max_batch) if b > 1})
    block = (f"dynamic_batching {{\n  preferred_batch_size: {_fmt_dims(preferred)}\n"
             f"  max_queue_delay_microseconds: {int(options.queue_delay_us)}\n}}")
    return "\n".join(comment) + "\n" + block


def _instance_block(kind: str, count: int) -> str:
    return f"instance_group [\n  {{ count: {int(count)} kind: {kind} }}\n]"


def _deploykit_params(spec: ModelSpec, manifest: dict, options: RepoOptions, precision: str,
                      artifact: str) -> list[str]:
    """Metadata the client reads back (model, contract, tile) -- backends ignore parameters they do not know."""
    params = {
        "model": spec.name, "precision": precision, "artifact": artifact, "scale": spec.scale,
        "multiple_of": spec.multiple_of, "min_size": spec.min_size, "square": int(spec.square),
        "image_output": spec.outputs[spec.image_output].name,
        "manifest_created": manifest.get("created", ""),
        "weights": manifest.get("weights", {}).get("source", "unknown"),
    }
    if options.tile:
        params["tile"], params["overlap"] = options.tile, options.overlap
    return [_param(PARAM_PREFIX + k, v) for k, v in params.items()]


def _pick_onnx(manifest: dict, folder: Path, precision: str, spec: ModelSpec) -> dict:
    files = [a for a in manifest.get("artifacts", []) if a.get("kind", "onnx") == "onnx"
             and a.get("precision") == precision]
    if not files:
        have = sorted({a.get("precision") for a in manifest.get("artifacts", []) if a.get("kind", "onnx") == "onnx"})
        hint = " (export without --no-fp16)" if precision == "fp16" else ""
        raise ArtifactError(f"no {precision} ONNX artifact for {spec.name} in {folder} (have: "
                            f"{', '.join(have) or 'none'}); "
                            f"run 'deploykit export {spec.name}'{hint} first")
    if not (folder / files[0]["file"]).is_file():
        raise ArtifactError(f"{folder / files[0]['file']} is listed in the manifest but missing; run "
                            f"'deploykit export {spec.name}' again")
    return files[0]


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


def render_config(spec: ModelSpec, manifest: dict, options: RepoOptions, *, model_name: str, precision: str,
                  artifact: str, engines: list[dict] | None = None) -> tuple[str, list[str]]:
    """The config.pbtxt text (with comments) and notes; not yet validated."""
    backend = options.backend
    notes: list[str] = []
    io_dtype = "float32"
    if backend != "tensorrt":
        art = next((a for a in manifest.get("artifacts", []) if a.get("file") == artifact), {})
        io_dtype = art.get("io_dtype", "float32")
    inputs, outputs = _io(manifest, io_dtype)
    static = _static_hw(inputs)
    max_batch = max(0, int(options.max_batch))
    profile = None
    if engines:
        profile = engines[0]["profile"]
        engine_max = min(int(e["profile"]["batch"][2]) for e in engines)
        if max_batch > engine_max:
            notes.append(f"max_batch_size lowered from {max_batch} to {engine_max}: the engines' optimisation "
                         f"profiles allow batch <= {engine_max} (rebuild with 'deploykit build --batch N' for more)")
            max_batch = engine_max
    batched = max_batch > 0
    head = [f"# generated by deploykit {_version()} from {spec.name} ({manifest.get('created', '?')}); "
            f"backend {backend}, {precision}",
            f"# shape contract: H and W multiple of {spec.multiple_of}, >= {spec.min_size}"
            f"{', square' if spec.square else ''}; output is x{spec.scale}. The client pads/tiles "
            "(deploykit triton-client).",
            f"name: {_q(model_name)}"]
    if backend == "onnxruntime":
        head.append('platform: "onnxruntime_onnx"')
    elif backend == "tensorrt":
        head.append('platform: "tensorrt_plan"')
    else:
        head.append('backend: "python"')
    head.append(f"max_batch_size: {max_batch}")
    blocks = ["\n".join(head), _tensor_block("input", inputs, batched), _tensor_block("output", outputs, batched)]
    if static:
        blocks.insert(1, f"# this export has a fixed input size {static[0]}x{static[1]} (exported with --static)")
    if backend == "onnxruntime":
        blocks.append(f"default_model_filename: {_q(artifact)}")
        kind = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}[options.device]
        blocks.append(_instance_block(kind, options.instances))
        if options.ort_trt:
            blocks.append(_ort_trt_block(spec, inputs, options, precision, max_batch, model_name, notes))
    elif backend == "tensorrt":
        rows = ["# TensorRT plans load only on the compute capability and TensorRT version they were built for:"]
        rows += [f"#   sm {e['compute_capability']}: {e['file']} ({e.get('gpu_name')}, TensorRT {e.get('tensorrt')}, "
                 f"profile min {e['profile']['min_hw']} opt {e['profile']['opt_hw']} max {e['profile']['max_hw']} "
                 "[H, W])" for e in engines]
        rows += [f"cc_model_filenames {{ key: {_q(e['compute_capability'])} value: {_q(e['file'])} }}"
                 for e in engines]
        blocks.append("\n".join(rows))
        blocks.append(_instance_block("KIND_GPU", options.instances))
        if options.tile:
            lo, hi = profile["min_hw"], profile["max_hw"]
            if not all(lo[k] <= options.tile <= hi[k] for k in (0, 1)):
                notes.append(f"--tile {options.tile} is outside the engines' profile (H, W from {lo} to {hi}); "
                             "requests of that size will be refused by TensorRT")
    else:
        blocks.append(_instance_block("KIND_CPU", options.instances))
    if backend == "python":
        blocks.append("\n".join([
            "# deploykit's python-backend model (1/model.py) runs the ONNX file with deploykit.backends.OrtBackend.",
            "# The server's Python stub must import deploykit and onnxruntime: model.py appends the paths below to",
            "# sys.path when they are missing (same Python minor version only); see docs/triton.md.",
            _param("deploykit_sys_path", os.pathsep.join(_python_paths())),
            _param("deploykit_python", f"{sys.version_info[0]}.{sys.version_info[1]}"),
            _param("deploykit_threads", int(options.threads))]))
    blocks.append(_batching_block(options, max_batch))
    blocks.append("\n".join(_deploykit_params(spec, manifest, options, precision, artifact)))
    if options.warmup:
        hw = _warmup_hw(spec, options, static, profile)
        blocks.append("# the model turns READY only after this warm-up request succeeded\n"
                      + _warmup_block(inputs, hw, batched))
    return "\n\n".join(blocks) + "\n", notes


def _ort_trt_block(spec: ModelSpec, inputs: list[dict], options: RepoOptions, precision: str, max_batch: int,
                   model_name: str, notes: list[str]) -> str:
    params = {"precision_mode": "FP16" if precision == "fp16" else "FP32",
              "max_workspace_size_bytes": str(2 << 30),
              "trt_engine_cache_enable": "1",
              "trt_engine_cache_path": f"{options.ort_trt_cache.rstrip('/')}/{model_name}",
              "trt_timing_cache_enable": "1",
              "trt_timing_cache_path": f"{options.ort_trt_cache.rstrip('/')}/{model_name}"}
    if options.tile:
        t, b = options.tile, max(1, max_batch)
        for key, batch in (("trt_profile_min_shapes", 1), ("trt_profile_opt_shapes", b),
                           ("trt_profile_max_shapes", b)):
            params[key] = ",".join(f"{i['name']}:{batch}x{i['dims'][1]}x{t}x{t}" for i in inputs)
    else:
        notes.append("--ort-trt without --tile: ONNX Runtime builds a TensorRT engine for each new input shape it "
                     "sees (slow first requests); give --tile T to pin one optimisation profile")
    rows = "\n".join(f"      parameters {{ key: {_q(k)} value: {_q(v)} }}" for k, v in params.items())
    return ("# ONNX Runtime's TensorRT execution provider (built at model load: loading is much slower; the engine\n"
            "# cache below makes later loads fast). CUDA EP remains the fallback for nodes TensorRT cannot run.\n"
            "optimization { execution_accelerators {\n  gpu_execution_accelerator: [ {\n    name: \"tensorrt\"\n"
            + rows + "\n  } ]\n} }")


def _version() -> str:
    try:
        from deploykit import __version__

        return __version__
    except Exception:  # noqa: BLE001
        return "?"


def _python_paths() -> list[str]:
    """Where deploykit and its runtime dependencies live for this interpreter (for the python backend's stub)."""
    import importlib.util

    paths = []
    here = Path(__file__).resolve().parent.parent
    paths.append(str(here))
    for module in ("onnxruntime", "numpy", "torch"):
        found = importlib.util.find_spec(module)
        if found and found.origin:
            paths.append(str(Path(found.origin).resolve().parent.parent))
    unique = []
    for p in paths:
        if p not in unique:
            unique.append(p)
    return unique


# --- validation against Triton's schema -------------------------------------------------------------------------

def _model_config_message():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise BackendUnavailableError("validating config.pbtxt needs Triton's ModelConfig schema from tritonclient: "
                                      "pip install 'tritonclient[grpc]'") from exc
    return model_config_pb2.ModelConfig()


def validate_config(text: str, *, model_name: str | None = None):
    """Parse ``text`` with Triton's ``ModelConfig`` schema; ArtifactError carrying the parse error otherwise.

    Beyond the grammar: the name must equal the directory name, there must be inputs and outputs, every tensor needs a
    data type and dims, and a model needs a platform or backend."""
    from google.protobuf import text_format

    config = _model_config_message()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ArtifactError(f"generated config.pbtxt does not parse as Triton's ModelConfig: {exc}") from exc
    problems = []
    if model_name is not None and config.name != model_name:
        problems.append(f"name {config.name!r} differs from the model directory {model_name!r}")
    if not (config.platform or config.backend):
        problems.append("neither platform nor backend is set")
    if not config.input or not config.output:
        problems.append("it declares no inputs or no outputs")
    for t in (*config.input, *config.output):
        if not t.dims or t.data_type == 0:
            problems.append(f"tensor {t.name!r} lacks dims or data_type")
    if config.max_batch_size < 0:
        problems.append("max_batch_size is negative")
    if problems:
        raise ArtifactError(f"generated config.pbtxt is not a usable Triton model config: {'; '.join(problems)}")
    return config


# --- writing -----------------------------------------------------------------------------------------------------

def export_folder(spec: ModelSpec, exports: Path) -> tuple[Path, dict]:
    folder = Path(exports) / spec.family / spec.variant
    if not (folder / MANIFEST_NAME).is_file():
        raise ArtifactError(f"no exported {spec.name} under {folder}; run 'deploykit export {spec.name}' first "
                            f"(or point --exports at the export root)")
    manifest = read_manifest(folder)
    if manifest.get("model", {}).get("name") != spec.name:
        raise ArtifactError(f"{folder} holds {manifest.get('model', {}).get('name')}, not {spec.name}; run "
                            f"'deploykit export {spec.name}' first")
    return folder, manifest


def default_model_name(spec: ModelSpec, backend: str) -> str:
    return f"{spec.family}_{spec.variant}_{SUFFIX[backend]}"


def _check_options(spec: ModelSpec, options: RepoOptions) -> None:
    if options.backend not in BACKENDS:
        raise InputError(f"unknown --backend '{options.backend}' (use {', '.join(BACKENDS)})")
    if options.precision not in (None, "fp32", "fp16"):
        raise InputError(f"unknown --precision '{options.precision}' (use fp32 or fp16)")
    if options.device not in DEVICES:
        raise InputError(f"unknown --device '{options.device}' (use {', '.join(DEVICES)})")
    if options.max_batch < 0 or options.instances < 1 or options.threads < 0 or options.queue_delay_us < 0:
        raise InputError("--max-batch must be >= 0, --instances >= 1, --threads >= 0")
    if options.ort_trt and options.backend != "onnxruntime":
        raise InputError("--ort-trt configures the onnxruntime backend; with --backend tensorrt the plan already is "
                         "TensorRT, the python backend runs ONNX Runtime on CPU")
    if options.device != "auto" and options.backend != "onnxruntime":
        raise InputError(f"--device chooses the onnxruntime instance kind; the {options.backend} backend runs on "
                         f"{'GPU' if options.backend == 'tensorrt' else 'CPU'} only")
    if options.ort_trt and options.device == "cpu":
        raise InputError("--ort-trt needs GPU instances; drop --device cpu")
    if options.tile is not None:
        from deploykit.tiling import check_tile

        check_tile(options.tile, options.overlap, spec)
    name = options.model_name
    if name is not None and (not name or name.startswith(".") or "/" in name or os.sep in name):
        raise InputError(f"bad --model-name {name!r}: a plain directory name, not starting with '.'")


def write_repository(name: str, repo: str | Path, *, exports: str | Path = "exports",
                     options: RepoOptions | None = None) -> RepoResult:
    """Write (or replace) one model directory of a Triton repository from ``exports/<family>/<variant>``."""
    options = options or RepoOptions()
    spec = get_spec(name)
    _check_options(spec, options)
    folder, manifest = export_folder(spec, Path(exports))
    model_name = options.model_name or default_model_name(spec, options.backend)
    notes: list[str] = []
    copies: list[tuple[Path, str]] = []  # (source, name inside the version directory)
    engines = None
    if options.backend == "tensorrt":
        from deploykit.engines import verify_engine_file

        engines, precision, more = pick_engines(manifest, options.precision, spec)
        notes += more
        for e in engines:
            copies.append((verify_engine_file(folder, e), e["file"]))
        artifact = engines[0]["file"]
    else:
        precision = options.precision or "fp32"
        art = _pick_onnx(manifest, folder, precision, spec)
        artifact = art["file"]
        copies.append((folder / artifact, artifact))
        if options.backend == "python":
            copies.append((PYTHON_MODEL_SOURCE, "model.py"))
    if manifest.get("weights", {}).get("source") == "random-init":
        notes.append(f"{spec.name} was exported from a random initialisation: outputs are not meaningful images "
                     "(export with --weights)")
    text, more = render_config(spec, manifest, options, model_name=model_name, precision=precision,
                               artifact=artifact, engines=engines)
    notes += more
    validate_config(text, model_name=model_name)
    copies.append((folder / MANIFEST_NAME, MANIFEST_NAME))
    repo = Path(repo)
    model_dir, replaced = _publish(repo, model_name, text, copies)
    files = ["config.pbtxt"] + [f"{VERSION}/{n}" for _, n in copies]
    return RepoResult(repo, model_name, model_dir, options.backend, precision, text, files, notes, replaced)


def _staging_root(repo: Path) -> tuple[Path, bool]:
    """A directory on the repository's filesystem but outside it (Triton would load a staging dir inside it)."""
    parent = repo.resolve().parent
    if os.access(parent, os.W_OK):
        return parent, True
    return Path(tempfile.gettempdir()), False


def _publish(repo: Path, model_name: str, config_text: str, copies: list[tuple[Path, str]]) -> tuple[Path, bool]:
    try:
        repo.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"cannot create repository {repo}: {exc.strerror or exc}") from exc
    root, same_fs = _staging_root(repo)
    stage = Path(tempfile.mkdtemp(prefix=f".{repo.name}.{model_name}.staging-", dir=root))
    target = repo / model_name
    replaced = target.exists()
    try:
        new = stage / "new"
        (new / VERSION).mkdir(parents=True)
        for src, dst in copies:
            shutil.copy2(src, new / VERSION / dst)
        with open(new / "config.pbtxt", "w") as fh:
            fh.write(config_text)
            fh.flush()
            os.fsync(fh.fileno())
        old = stage / "old"
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


# --- a local server: the tritonserver binary bundled with nvidia-pytriton -------------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class BundledTriton:
    """Where nvidia-pytriton keeps its tritonserver: binary, shared libraries, backends, Python stubs."""

    root: Path
    binary: Path
    libs: Path
    backends: Path
    stub: Path
    version: str

    @classmethod
    def find(cls) -> "BundledTriton":
        import importlib.util

        found = importlib.util.find_spec("pytriton")
        if found is None or not found.submodule_search_locations:
            raise BackendUnavailableError("no tritonserver here: pip install nvidia-pytriton (it bundles the binary "
                                          "with the Python backend), or use the Triton container")
        pkg = Path(next(iter(found.submodule_search_locations)))
        root = pkg / "tritonserver"
        py = f"{sys.version_info[0]}.{sys.version_info[1]}"
        libs = next((p for p in (pkg.parent / "nvidia_pytriton.libs", root / "external_libs") if p.is_dir()),
                    pkg.parent / "nvidia_pytriton.libs")
        stub = root / "python_backend_stubs" / py / "triton_python_backend_stub"
        binary = root / "bin" / "tritonserver"
        if not binary.is_file():
            raise BackendUnavailableError(f"nvidia-pytriton is installed but {binary} is missing")
        if not stub.is_file():
            raise BackendUnavailableError(f"nvidia-pytriton has no Python backend stub for Python {py} ({stub})")
        try:
            from importlib import metadata

            version = metadata.version("nvidia-pytriton")
        except Exception:  # noqa: BLE001
            version = "?"
        return cls(root, binary, libs, root / "backends", stub, version)


def _interpreter_libdir() -> str | None:
    """The directory of this interpreter's shared libpython, when it has one (a static build has none)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if libdir and any(Path(libdir).glob(f"libpython{version}*.so*")):
        return libdir
    return None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM the server when the process that started it dies (a killed test run leaves
    no server behind). Linux prctl(PR_SET_PDEATHSIG); ignored where unavailable."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


class LocalServer:
    """``tritonserver`` (from nvidia-pytriton) on 127.0.0.1 with free ports, serving ``repo``; a context manager.

    The Python backend's stub embeds libpython: with this interpreter's libdir first on LD_LIBRARY_PATH it embeds
    *this* Python (same site-packages, so deploykit and onnxruntime import); otherwise it takes whatever libpython
    the system has, and deploykit's model.py adds the recorded paths (docs/triton.md).
    """

    def __init__(self, repo: str | Path, *, host: str = "127.0.0.1", http_port: int | None = None,
                 grpc_port: int | None = None, workdir: str | Path | None = None, log_verbose: int = 0,
                 same_python: bool = True, extra_args: list[str] | None = None):
        self.repo = Path(repo).resolve()
        self.host = host
        self.http_port = http_port or free_port(host)
        self.grpc_port = grpc_port or free_port(host)
        while self.grpc_port == self.http_port:
            self.grpc_port = free_port(host)
        self.bundle = BundledTriton.find()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="deploykit-triton-"))
        self.log_path = self.workdir / "tritonserver.log"
        self.log_verbose = log_verbose
        self.same_python = same_python
        self.extra_args = list(extra_args or [])
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def _backends(self) -> Path:
        """A backend directory with the stub for this Python where the python backend looks for it."""
        dst = self.workdir / "backends"
        if not dst.exists():
            shutil.copytree(self.bundle.backends, dst, ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy2(self.bundle.stub, dst / "python" / "triton_python_backend_stub")
        return dst

    def command(self) -> list[str]:
        return [str(self.bundle.binary), f"--model-repository={self.repo}", f"--backend-directory={self._backends()}",
                f"--cache-directory={self.bundle.root / 'caches'}",
                "--http-address", self.host, "--http-port", str(self.http_port),
                "--grpc-address", self.host, "--grpc-port", str(self.grpc_port),
                "--allow-metrics", "false", "--allow-sagemaker", "false", "--allow-vertex-ai", "false",
                "--exit-on-error", "true", "--strict-readiness", "true", "--exit-timeout-secs", "10",
                "--model-control-mode", "none", "--log-verbose", str(self.log_verbose), *self.extra_args]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        libs = [str(self.bundle.libs)]
        libdir = _interpreter_libdir() if self.same_python else None
        if libdir:
            libs.insert(0, libdir)
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def start(self, timeout_s: float = 90.0) -> "LocalServer":
        """Start and wait until the server and every model are ready; BackendUnavailableError with the log tail."""
        if self.process is not None:
            return self
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                        env=self.environment(), cwd=self.workdir, start_new_session=True,
                                        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.stop()
                raise BackendUnavailableError(f"tritonserver exited with code {code} while starting:\n"
                                              f"{self.log_tail()}")
            if self.ready():
                return self
            time.sleep(0.25)
        self.stop()
        raise BackendUnavailableError(f"tritonserver was not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def ready(self) -> bool:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        text = [t for t in text if not t.startswith(("+", "|"))]  # Triton's boxed status tables
        return "\n".join(text[-lines:])

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGINT (graceful), then SIGKILL of the server's process group after ``timeout_s``."""
        proc, self.process = self.process, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait(timeout=10)
            code = proc.returncode
            atexit.unregister(self.stop)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()
