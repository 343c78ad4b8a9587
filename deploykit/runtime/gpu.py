"""GPU facts and the TensorRT import: which CUDA device is here, what it is, whether TensorRT loads.

Everything is imported lazily inside the functions (torch, cuda-python, tensorrt), so importing this module never
needs a GPU.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from deploykit.errors import BackendUnavailableError, EngineError

INSTALL_HINT = "pip install 'deploykit[gpu]'"


JETSON_HINT = "on Jetson use the TensorRT that ships with JetPack"


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.6"
    index: int = 0
    source: str = "torch"


def import_tensorrt():
    """``import tensorrt`` or BackendUnavailableError with the one-line install hint."""
    try:
        import tensorrt  # noqa: PLC0415 (lazy on purpose: never at module import time)
    except ImportError:
        raise BackendUnavailableError(
            f"TensorRT is not installed (Python package 'tensorrt'); install it with {INSTALL_HINT} "
            f"({JETSON_HINT})") from None
    except OSError as exc:  # the wheel is there but libnvinfer / CUDA libraries cannot be loaded
        raise BackendUnavailableError(f"TensorRT is installed but cannot be loaded ({exc}); reinstall it with "
                                      f"{INSTALL_HINT} and check the NVIDIA driver") from None
    return tensorrt


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6 layout
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


def gpu_info(index: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device ``index`` via torch (if built with CUDA) or cuda-python."""
    try:
        import torch

        if torch.cuda.is_available() and index < torch.cuda.device_count():
            major, minor = torch.cuda.get_device_capability(index)
            return GpuInfo(torch.cuda.get_device_name(index), f"{major}.{minor}", index, "torch")
    except Exception:  # noqa: BLE001 (a broken CUDA torch is "no GPU via torch")
        pass
    try:
        cudart = _cudart()
        err, count = cudart.cudaGetDeviceCount()
        if int(err) == 0 and index < count:
            err, props = cudart.cudaGetDeviceProperties(index)
            if int(err) == 0:
                name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
                return GpuInfo(name.rstrip("\x00"), f"{props.major}.{props.minor}", index, "cuda-python")
    except Exception:  # noqa: BLE001
        pass
    raise BackendUnavailableError(
        f"no CUDA GPU {index} is visible (torch has no CUDA and cuda-python found none); TensorRT needs an NVIDIA "
        f"GPU with its driver, and {INSTALL_HINT} for the Python packages")


def gpu_free_memory(index: int = 0) -> int | None:
    """Free memory of CUDA device ``index`` (bytes) via torch or cuda-python; None when neither can read it. Kept
    out of :func:`gpu_info`, which only names the device: reading free memory creates a CUDA context on it (and
    through cuda-python makes it the thread's current device), which only a build on that device should do."""
    try:
        import torch

        if torch.cuda.is_available() and index < torch.cuda.device_count():
            return int(torch.cuda.mem_get_info(index)[0])
    except Exception:  # noqa: BLE001 (a broken CUDA torch: try cuda-python)
        pass
    try:
        cudart = _cudart()
        if int(cudart.cudaSetDevice(index)[0]) != 0:
            return None
        err, free, _total = cudart.cudaMemGetInfo()
        return int(free) if int(err) == 0 else None
    except Exception:  # noqa: BLE001
        return None


def tensorrt_unavailable_reason(index: int = 0) -> str | None:
    """None when TensorRT imports and a CUDA GPU is visible; otherwise the one-line reason."""
    try:
        import_tensorrt()
        gpu_info(index)
    except BackendUnavailableError as exc:
        return str(exc)
    return None


def cuda_available() -> bool:
    """Whether PyTorch sees a CUDA device (False without torch or with a CPU build)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 (a broken CUDA torch is "no GPU via torch")
        return False


def torch_device(index: int = 0) -> str:
    """'cuda:N' when PyTorch has CUDA (references run on the candidate's GPU), else 'cpu'."""
    return f"cuda:{index}" if cuda_available() else "cpu"


def ort_provider_missing(provider: str) -> str | None:
    """None when ONNX Runtime has execution provider ``provider`` here, else the one-line reason and the fix."""
    providers = ort_providers()
    if not providers:
        return f"onnxruntime is not installed; install the GPU build with {INSTALL_HINT}"
    if provider in providers:
        return None
    return (f"ONNX Runtime has no {provider} here (available: {', '.join(providers)}); install it with {INSTALL_HINT} "
            "on a machine with an NVIDIA GPU, and if the CPU package 'onnxruntime' is installed too, remove both and "
            "reinstall onnxruntime-gpu alone (they cannot co-exist)")


def ort_providers() -> list[str]:
    """ONNX Runtime's execution providers here ([] without onnxruntime)."""
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


MIN_TRT_MAJOR = 10


STRONG_TYPING_MAJOR = 11  # TensorRT 11.0 removed BuilderFlag.FP16 / OBEY_PRECISION_CONSTRAINTS


def parse_version(text: str | Sequence[int]) -> tuple[int, ...]:
    """'10.9.0.34' -> (10, 9, 0, 34); tuples pass through. Non-numeric tails ('10.0.0b6') are cut."""
    if not isinstance(text, str):
        return tuple(int(v) for v in text)
    parts = []
    for piece in text.strip().split("."):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
    if not parts:
        raise EngineError(f"cannot read a TensorRT version from {text!r}")
    return tuple(parts)


def version_text(version: str | Sequence[int]) -> str:
    return version if isinstance(version, str) else ".".join(str(v) for v in version)
