"""ONNX Runtime on the GPU: the CUDA execution provider and the TensorRT execution provider.

The provider option dictionaries are built by pure functions (unit-tested without a GPU); the backend class
subclasses OrtBackend for ``run`` / names / close and only builds its session differently.

FP16 with the TensorRT EP: the EP builds a *strongly typed* TensorRT network whenever ``trt_fp16_enable`` is off
(microsoft/onnxruntime#24298), so deploykit feeds it the mixed-precision FP16 ONNX with the flag off: the zoo's
FP32 islands hold on TensorRT 10 and 11 alike. ``fp16_mode="flag"`` (FP32 ONNX + ``trt_fp16_enable``, TensorRT's
free choice per layer) exists for comparison on TensorRT 10 only; TensorRT 11 removed that flag.
FP16 with the CUDA EP runs the same FP16 ONNX.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deploykit.artifacts.lookup import onnx_artifact
from deploykit.errors import BackendUnavailableError, EngineError
from deploykit.runtime.gpu import (
    STRONG_TYPING_MAJOR,
    ort_provider_missing,
    parse_version,
)
from deploykit.runtime.ort import OrtBackend, default_threads
from deploykit.zoo.registry import get_spec

CUDA_EP = "CUDAExecutionProvider"
TRT_EP = "TensorrtExecutionProvider"
CONV_ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
FP16_MODES = ("strong", "flag")


def _flag(value: bool) -> str:
    return "True" if value else "False"


def profile_shapes_option(shapes: dict[str, tuple[int, ...]]) -> str:
    """{'image': (1, 3, 64, 64), 'noise': (1, 1, 64, 64)} -> 'image:1x3x64x64,noise:1x1x64x64' (trtexec syntax)."""
    return ",".join(f"{name}:{'x'.join(str(int(d)) for d in dims)}" for name, dims in shapes.items())


def cuda_provider_options(*, device_id: int = 0, conv_algo_search: str = "EXHAUSTIVE",
                          gpu_mem_limit: int | None = None, cuda_graph: bool = False) -> dict[str, str]:
    """Options for CUDAExecutionProvider (string values, as ONNX Runtime parses them)."""
    algo = conv_algo_search.upper()
    if algo not in CONV_ALGO_SEARCH:
        raise EngineError(f"cudnn_conv_algo_search must be one of {', '.join(CONV_ALGO_SEARCH)}, not {conv_algo_search}")
    options = {"device_id": str(int(device_id)), "cudnn_conv_algo_search": algo,
               "do_copy_in_default_stream": "1", "enable_cuda_graph": "1" if cuda_graph else "0"}
    if gpu_mem_limit is not None:
        options["gpu_mem_limit"] = str(int(gpu_mem_limit))
    return options


def tensorrt_provider_options(*, profile_shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]],
                              cache_dir: str | Path, precision: str = "fp16", fp16_mode: str = "strong",
                              tensorrt_version: str | tuple[int, ...] | None = None, cache_prefix: str | None = None,
                              device_id: int = 0, opt_level: int = 3, workspace_bytes: int | None = None,
                              cuda_graph: bool = False) -> dict[str, str]:
    """Options for TensorrtExecutionProvider: engine and timing caches, explicit profile, optimisation level.

    ``profile_shapes`` is ``Profile.shapes(spec)``: per input (min, opt, max) NCHW. The TensorRT EP needs all
    three for every dynamic input, and rebuilds cached engines when they change.
    """

    if precision not in ("fp16", "fp32"):
        raise EngineError(f"unknown precision '{precision}' (use fp16 or fp32)")
    if fp16_mode not in FP16_MODES:
        raise EngineError(f"fp16_mode must be one of {', '.join(FP16_MODES)}, not {fp16_mode}")
    flag_fp16 = precision == "fp16" and fp16_mode == "flag"
    if flag_fp16 and tensorrt_version is not None and parse_version(tensorrt_version)[0] >= STRONG_TYPING_MAJOR:
        raise EngineError("fp16_mode='flag' needs TensorRT 10 (TensorRT 11 removed the FP16 builder flag); "
                          "use fp16_mode='strong' with the FP16 ONNX")
    if not 0 <= int(opt_level) <= 5:
        raise EngineError(f"trt_builder_optimization_level must be 0..5, not {opt_level}")
    cache = str(Path(cache_dir))
    options = {
        "device_id": str(int(device_id)),
        "trt_fp16_enable": _flag(flag_fp16),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": cache,
        "trt_builder_optimization_level": str(int(opt_level)),
        "trt_profile_min_shapes": profile_shapes_option({n: s[0] for n, s in profile_shapes.items()}),
        "trt_profile_opt_shapes": profile_shapes_option({n: s[1] for n, s in profile_shapes.items()}),
        "trt_profile_max_shapes": profile_shapes_option({n: s[2] for n, s in profile_shapes.items()}),
        "trt_cuda_graph_enable": _flag(cuda_graph),
    }
    if cache_prefix:
        options["trt_engine_cache_prefix"] = cache_prefix
    if workspace_bytes is not None:
        options["trt_max_workspace_size"] = str(int(workspace_bytes))
    return options


def ort_gpu_onnx_precision(provider: str, precision: str, fp16_mode: str = "strong") -> str:
    """Which ONNX artifact a GPU session runs: FP16 precision runs the FP16 ONNX except TensorRT-EP 'flag' mode."""
    if precision == "fp32" or (provider == "tensorrt" and fp16_mode == "flag"):
        return "fp32"
    return "fp16"


def providers_for(provider: str, *, cuda_options: dict[str, str],
                  trt_options: dict[str, str] | None = None) -> list[tuple[str, dict[str, str]]]:
    """Provider list in priority order; the CUDA EP stays registered behind the TensorRT EP as the fallback."""
    if provider == "cuda":
        return [(CUDA_EP, cuda_options)]
    if provider == "tensorrt":
        if trt_options is None:
            raise EngineError("the TensorRT execution provider needs its options (profile shapes, caches)")
        return [(TRT_EP, trt_options), (CUDA_EP, cuda_options)]
    raise EngineError(f"unknown ONNX Runtime GPU provider '{provider}' (use cuda or tensorrt)")


class OrtGpuBackend(OrtBackend):
    """OrtBackend whose session runs on the CUDA EP or the TensorRT EP (with the CUDA EP as fallback)."""

    def __init__(self, path: str | Path, *, provider: str, precision: str = "fp32",
                 cuda_options: dict[str, str] | None = None, trt_options: dict[str, str] | None = None,
                 threads: int | None = None):
        import onnxruntime as ort

        wanted = TRT_EP if provider == "tensorrt" else CUDA_EP
        missing = ort_provider_missing(wanted)
        if missing:
            raise BackendUnavailableError(missing)
        providers = providers_for(provider, cuda_options=cuda_options or cuda_provider_options(),
                                  trt_options=trt_options)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        active = self.session.get_providers()
        if wanted not in active:
            raise BackendUnavailableError(f"ONNX Runtime did not enable {wanted} (session runs on {active})")
        self.path = Path(path)
        self.name = f"ort-{provider}"
        self.device, self.precision = f"cuda:{(cuda_options or {}).get('device_id', '0')}", precision
        self.providers = providers
        self._in = {i.name: (np.float16 if i.type == "tensor(float16)" else np.float32)
                    for i in self.session.get_inputs()}

    @classmethod
    def for_export(cls, export_dir: str | Path, manifest: dict, *, provider: str, precision: str, profile,
                   fp16_mode: str = "strong", device_id: int = 0, opt_level: int = 3,
                   workspace_bytes: int | None = None, tensorrt_version: str | None = None) -> "OrtGpuBackend":
        """Session over the export's ONNX artifact for ``precision``; TensorRT-EP caches go to ``ort_trt_cache/``."""
        export_dir = Path(export_dir)
        spec = get_spec(manifest["model"]["name"])
        which = ort_gpu_onnx_precision(provider, precision, fp16_mode)
        artifact = onnx_artifact(manifest, which)
        if artifact is None:
            raise EngineError(f"{export_dir} has no {which.upper()} ONNX for ort-{provider}/{precision}; re-export")
        trt_options = None
        if provider == "tensorrt":
            cache_dir = export_dir / "ort_trt_cache"
            cache_dir.mkdir(exist_ok=True)
            trt_options = tensorrt_provider_options(
                profile_shapes=profile.shapes(spec), cache_dir=cache_dir, precision=precision, fp16_mode=fp16_mode,
                tensorrt_version=tensorrt_version, cache_prefix=Path(artifact["file"]).stem.replace(".", "_"),
                device_id=device_id, opt_level=opt_level, workspace_bytes=workspace_bytes)
        return cls(export_dir / artifact["file"], provider=provider, precision=precision,
                   cuda_options=cuda_provider_options(device_id=device_id), trt_options=trt_options)
