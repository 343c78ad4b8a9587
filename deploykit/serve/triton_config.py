"""One model's ``config.pbtxt``: the options that decide it, its text, and its check against Triton's own schema.

Kept apart from writing the repository so that the text can be rendered and validated without touching a disk.
Inputs, outputs, dtypes and dims come from the manifest (``-1`` for dynamic H and W; the batch dim is Triton's own
when ``max_batch_size > 0``). :func:`validate_config` parses a text with Triton's ``ModelConfig`` protobuf schema
(``tritonclient.grpc.model_config_pb2``, imported on use: tritonclient is an optional dependency).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from deploykit._version import __version__
from deploykit.errors import ArtifactError, BackendUnavailableError, InputError
from deploykit.imaging.tiling import check_tile
from deploykit.zoo.registry import ModelSpec

TRITON_BACKENDS = ("onnxruntime", "tensorrt", "python")  # Triton backends a repository entry runs on
SUFFIX = {"onnxruntime": "onnx", "tensorrt": "trt", "python": "python"}  # model directory name suffix per backend
PLATFORM = {"onnxruntime": 'platform: "onnxruntime_onnx"', "tensorrt": 'platform: "tensorrt_plan"',
            "python": 'backend: "python"'}
DEVICES = ("auto", "cpu", "gpu")
INSTANCE_KIND = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}
DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int64": "TYPE_INT64",
          "int32": "TYPE_INT32", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
DEFAULT_WARMUP = 64
DEFAULT_QUEUE_DELAY_US = 2000
PARAM_PREFIX = "deploykit_"
STUB_MODULES = ("deploykit", "onnxruntime", "numpy", "torch")  # what the python backend's stub must import


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


def check_options(spec: ModelSpec, options: RepoOptions) -> None:
    """InputError naming the option when ``options`` cannot make a model directory for ``spec``."""
    if options.backend not in TRITON_BACKENDS:
        raise InputError(f"unknown --backend '{options.backend}' (use {', '.join(TRITON_BACKENDS)})")
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
        check_tile(options.tile, options.overlap, spec)
    name = options.model_name
    if name is not None and (not name or name.startswith(".") or "/" in name or os.sep in name):
        raise InputError(f"bad --model-name {name!r}: a plain directory name, not starting with '.'")


# --- text pieces -------------------------------------------------------------------------------------------------

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


def _io_dtype(manifest: dict, backend: str, artifact: str) -> str:
    """The float dtype of the ONNX artifact's inputs and outputs (engines take float32)."""
    if backend == "tensorrt":
        return "float32"
    art = next((a for a in manifest.get("artifacts", []) if a.get("file") == artifact), {})
    return art.get("io_dtype", "float32")


def _static_hw(inputs: list[dict]) -> tuple[int, int] | None:
    dims = inputs[0]["dims"]
    if len(dims) == 4 and all(isinstance(d, int) and d > 0 for d in dims[2:]):
        return int(dims[2]), int(dims[3])
    return None


def _max_batch(options: RepoOptions, engines: list[dict] | None, notes: list[str]) -> int:
    """``--max-batch``, lowered to what every engine's optimisation profile allows."""
    max_batch = max(0, int(options.max_batch))
    if engines:
        engine_max = min(int(e["profile"]["batch"][2]) for e in engines)
        if max_batch > engine_max:
            notes.append(f"max_batch_size lowered from {max_batch} to {engine_max}: the engines' optimisation "
                         f"profiles allow batch <= {engine_max} (rebuild with 'deploykit build --batch N' for more)")
            max_batch = engine_max
    return max_batch


def _head_block(spec: ModelSpec, manifest: dict, backend: str, precision: str, model_name: str,
                max_batch: int) -> str:
    return "\n".join([
        f"# generated by deploykit {__version__} from {spec.name} ({manifest.get('created', '?')}); "
        f"backend {backend}, {precision}",
        f"# shape contract: H and W multiple of {spec.multiple_of}, >= {spec.min_size}"
        f"{', square' if spec.square else ''}; output is x{spec.scale}. The client pads/tiles "
        "(deploykit triton-client).",
        f"name: {_q(model_name)}",
        PLATFORM[backend],
        f"max_batch_size: {max_batch}"])


def _tensor_block(kind: str, tensors: list[dict], batched: bool) -> str:
    rows = [f"  {{ name: {_q(t['name'])} data_type: {t['triton_dtype']} dims: {_fmt_dims(_dims(t['dims'], batched))} }}"
            for t in tensors]
    return f"{kind} [\n" + ",\n".join(rows) + "\n]"


def _instance_block(kind: str, count: int) -> str:
    return f"instance_group [\n  {{ count: {int(count)} kind: {kind} }}\n]"


def _onnxruntime_blocks(spec: ModelSpec, inputs: list[dict], options: RepoOptions, *, precision: str,
                        artifact: str, max_batch: int, model_name: str, notes: list[str]) -> list[str]:
    blocks = [f"default_model_filename: {_q(artifact)}",
              _instance_block(INSTANCE_KIND[options.device], options.instances)]
    if options.ort_trt:
        blocks.append(_ort_trt_block(spec, inputs, options, precision, max_batch, model_name, notes))
    return blocks


def _ort_trt_block(spec: ModelSpec, inputs: list[dict], options: RepoOptions, precision: str, max_batch: int,
                   model_name: str, notes: list[str]) -> str:
    cache = f"{options.ort_trt_cache.rstrip('/')}/{model_name}"
    params = {"precision_mode": "FP16" if precision == "fp16" else "FP32",
              "max_workspace_size_bytes": str(2 << 30),
              "trt_engine_cache_enable": "1",
              "trt_engine_cache_path": cache,
              "trt_timing_cache_enable": "1",
              "trt_timing_cache_path": cache}
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


def _tensorrt_blocks(engines: list[dict], options: RepoOptions, notes: list[str]) -> list[str]:
    rows = ["# TensorRT plans load only on the compute capability and TensorRT version they were built for:"]
    rows += [f"#   sm {e['compute_capability']}: {e['file']} ({e.get('gpu_name')}, TensorRT {e.get('tensorrt')}, "
             f"profile min {e['profile']['min_hw']} opt {e['profile']['opt_hw']} max {e['profile']['max_hw']} "
             "[H, W])" for e in engines]
    rows += [f"cc_model_filenames {{ key: {_q(e['compute_capability'])} value: {_q(e['file'])} }}"
             for e in engines]
    if options.tile:
        lo, hi = engines[0]["profile"]["min_hw"], engines[0]["profile"]["max_hw"]
        if not all(lo[k] <= options.tile <= hi[k] for k in (0, 1)):
            notes.append(f"--tile {options.tile} is outside the engines' profile (H, W from {lo} to {hi}); "
                         "requests of that size will be refused by TensorRT")
    return ["\n".join(rows), _instance_block("KIND_GPU", options.instances)]


def _python_blocks(options: RepoOptions) -> list[str]:
    return [_instance_block("KIND_CPU", options.instances), "\n".join([
        "# deploykit's python-backend model (1/model.py) runs the ONNX file with deploykit.runtime.ort.OrtBackend.",
        "# The server's Python stub must import deploykit and onnxruntime: model.py appends the paths below to",
        "# sys.path when they are missing (same Python minor version only); see docs/triton.md.",
        _param("deploykit_sys_path", os.pathsep.join(python_paths())),
        _param("deploykit_python", f"{sys.version_info[0]}.{sys.version_info[1]}"),
        _param("deploykit_threads", int(options.threads))])]


def python_paths() -> list[str]:
    """Where deploykit and its runtime dependencies live for this interpreter (for the python backend's stub): the
    directory each of :data:`STUB_MODULES` imports from, deploykit's first."""
    paths: list[str] = []
    for module in STUB_MODULES:
        found = importlib.util.find_spec(module)
        if found and found.origin:
            path = str(Path(found.origin).resolve().parent.parent)
            if path not in paths:
                paths.append(path)
    return paths


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


def _deploykit_params(spec: ModelSpec, manifest: dict, options: RepoOptions, precision: str, artifact: str) -> str:
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
    return "\n".join(_param(PARAM_PREFIX + k, v) for k, v in params.items())


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
    return ("# the model turns READY only after this warm-up request succeeded\n"
            f"model_warmup [\n  {{ name: \"{hw[0]}x{hw[1]}\" {batch}count: 1\n" + "\n".join(rows) + "\n  }\n]")


# --- the whole text ----------------------------------------------------------------------------------------------

def render_config(spec: ModelSpec, manifest: dict, options: RepoOptions, *, model_name: str, precision: str,
                  artifact: str, engines: list[dict] | None = None) -> tuple[str, list[str]]:
    """The config.pbtxt text (with comments) and notes; not yet validated. ``engines``: tensorrt only."""
    backend = options.backend
    notes: list[str] = []
    inputs, outputs = _io(manifest, _io_dtype(manifest, backend, artifact))
    static = _static_hw(inputs)
    max_batch = _max_batch(options, engines, notes)
    batched = max_batch > 0
    blocks = [_head_block(spec, manifest, backend, precision, model_name, max_batch),
              _tensor_block("input", inputs, batched), _tensor_block("output", outputs, batched)]
    if static:
        blocks.insert(1, f"# this export has a fixed input size {static[0]}x{static[1]} (exported with --static)")
    if backend == "onnxruntime":
        blocks += _onnxruntime_blocks(spec, inputs, options, precision=precision, artifact=artifact,
                                      max_batch=max_batch, model_name=model_name, notes=notes)
    elif backend == "tensorrt":
        blocks += _tensorrt_blocks(engines, options, notes)
    else:
        blocks += _python_blocks(options)
    blocks.append(_batching_block(options, max_batch))
    blocks.append(_deploykit_params(spec, manifest, options, precision, artifact))
    if options.warmup:
        profile = engines[0]["profile"] if engines else None
        blocks.append(_warmup_block(inputs, _warmup_hw(spec, options, static, profile), batched))
    return "\n\n".join(blocks) + "\n", notes


# --- validation against Triton's schema -------------------------------------------------------------------------

def _model_config_message():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise BackendUnavailableError("validating config.pbtxt needs Triton's ModelConfig schema from tritonclient: "
                                      "pip install 'tritonclient[grpc]'") from exc
    return model_config_pb2.ModelConfig()


def _problems(config, model_name: str | None) -> list[str]:
    """What makes a parsed config unusable beyond the grammar."""
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
    return problems


def validate_config(text: str, *, model_name: str | None = None):
    """Parse ``text`` with Triton's ``ModelConfig`` schema; ArtifactError carrying the parse error otherwise.

    Beyond the grammar: the name must equal the directory name, there must be inputs and outputs, every tensor needs a
    data type and dims, and a model needs a platform or backend."""
    config = _model_config_message()  # BackendUnavailableError without tritonclient[grpc] (which brings protobuf)
    from google.protobuf import text_format

    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ArtifactError(f"generated config.pbtxt does not parse as Triton's ModelConfig: {exc}") from exc
    problems = _problems(config, model_name)
    if problems:
        raise ArtifactError(f"generated config.pbtxt is not a usable Triton model config: {'; '.join(problems)}")
    return config
