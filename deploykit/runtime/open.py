"""The one door to a runner: :func:`open_backend` builds every backend deploykit runs, for every caller (infer,
bench, parity, engine parity, Triton), and :func:`unavailable_reason` is the one answer to "can it run here?".

Backend names (``BACKENDS``) are the command line's: ``--backend`` of ``infer``, ``bench`` and ``parity``.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from deploykit.artifacts.lookup import aoti_artifact
from deploykit.artifacts.manifest import read_manifest
from deploykit.errors import BackendUnavailableError, InputError
from deploykit.runtime.base import Backend
from deploykit.runtime.gpu import (
    INSTALL_HINT,
    cuda_available,
    ort_provider_missing,
    ort_providers,
    tensorrt_unavailable_reason,
)
from deploykit.runtime.ort import OrtBackend, cpu_session_options
from deploykit.runtime.ort_gpu import OrtGpuBackend
from deploykit.runtime.profiles import Profile
from deploykit.runtime.tensorrt import TensorRTBackend
from deploykit.zoo.spec import ModelSpec

# torch_backend and aoti import torch: loaded only when such a runner is opened (the ORT-only tools stay light)
BACKENDS: dict[str, str] = {
    "torch": "PyTorch eager (FP32: the reference)",
    "torch-compile": "PyTorch torch.compile (compiled on first run per shape)",
    "ort": "ONNX Runtime, CPU execution provider",
    "ort-cuda": "ONNX Runtime, CUDA execution provider",
    "ort-tensorrt": "ONNX Runtime, TensorRT execution provider",
    "trt": "TensorRT engine built by 'deploykit build'",
    "aoti": "AOTInductor package built by 'deploykit export --aoti'",
}
PRECISIONS = ("fp32", "fp16")
_EP = {"ort-cuda": "CUDAExecutionProvider", "ort-tensorrt": "TensorrtExecutionProvider"}


def unavailable_reason(kind: str, device: int = 0) -> str | None:
    """None when backend ``kind`` can run on this machine, else the one-line reason with what to install."""
    if kind not in BACKENDS:
        return f"unknown backend '{kind}' (use {', '.join(BACKENDS)})"
    if kind in ("torch", "aoti"):
        return None if importlib.util.find_spec("torch") else "torch is not installed (pip install torch)"
    if kind == "torch-compile":
        import torch

        if not hasattr(torch, "compile"):
            return "this torch has no torch.compile"
        if not cuda_available() and not any(shutil.which(c) for c in ("g++", "c++", "clang++", "cc")):
            return "torch.compile on CPU needs a C++ compiler (install g++)"
        return None
    providers = ort_providers()
    if kind == "ort":
        return None if providers else "onnxruntime is not installed (pip install onnxruntime)"
    if kind in _EP:
        return ort_provider_missing(_EP[kind])
    reason = tensorrt_unavailable_reason(device)  # kind == "trt"
    if reason:
        return reason if INSTALL_HINT in reason else f"{reason}; install it with {INSTALL_HINT}"
    return None


def require_available(kind: str, device: int = 0) -> None:
    """BackendUnavailableError naming the backend and why, when it cannot run here."""
    reason = unavailable_reason(kind, device)
    if reason is not None:
        raise BackendUnavailableError(f"backend {kind} is not available here: {reason}")


def open_backend(kind: str, spec: ModelSpec, *, precision: str = "fp32", model=None, onnx: str | Path | None = None,
                 export_dir: str | Path | None = None, manifest: dict | None = None, engine: dict | None = None,
                 profile: Profile | None = None, threads: int | None = None, device: int = 0,
                 torch_device: str = "cpu", session_options=None) -> Backend:
    """A runner of ``kind`` for ``spec``, checked available first. What each kind runs:

    - ``torch`` / ``torch-compile``: ``model`` (an ``nn.Module``; the image output only) on ``torch_device``;
    - ``ort``: the ONNX file ``onnx`` on the CPU (``threads`` intra-op threads, ``session_options``);
    - ``ort-cuda``: ``onnx``, or the export's artifact of ``precision`` (``export_dir`` + ``manifest``);
    - ``ort-tensorrt``: the export's artifact, TensorRT EP built for ``profile``;
    - ``trt``: the engine entry ``engine`` of ``export_dir`` (or its newest of ``precision``);
    - ``aoti``: the export's AOTInductor package for ``torch_device``.
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}' (use {' or '.join(PRECISIONS)})")
    require_available(kind, device)
    if kind in ("torch", "torch-compile"):
        from deploykit.runtime.torch_backend import (
            ImageOutput,
            TorchBackend,
            compiled_backend,
        )

        if model is None:
            raise InputError(f"backend {kind} runs a PyTorch model: build one with deploykit.create_model")
        if kind == "torch":
            return TorchBackend.for_image(model, spec, device=torch_device, precision=precision)
        return compiled_backend(ImageOutput(model, spec.image_output), [t.name for t in spec.inputs],
                                [spec.outputs[spec.image_output].name], device=torch_device, precision=precision)
    if kind == "ort":
        if session_options is None:
            session_options = cpu_session_options(threads, arena=spec.ort_arena)
        return OrtBackend(_need(onnx, kind, "an ONNX file"), device="cpu", precision=precision, threads=threads,
                          session_options=session_options)
    if kind in _EP:
        provider = kind.split("-", 1)[1]
        if onnx is not None and kind == "ort-cuda":
            return OrtGpuBackend(onnx, provider=provider, precision=precision, threads=threads)
        return OrtGpuBackend.for_export(_need(export_dir, kind, "an export directory"),
                                        manifest if manifest is not None else read_manifest(export_dir),
                                        provider=provider, precision=precision, profile=profile, device_id=device)
    if kind == "trt":
        return TensorRTBackend(_need(export_dir, kind, "an export directory with an engine"), engine,
                               precision=None if engine else precision, device=device)
    from deploykit.runtime.aoti import AotiBackend

    folder = Path(_need(export_dir, kind, "an export directory with an AOTInductor package"))
    entry = aoti_artifact(manifest if manifest is not None else read_manifest(folder), torch_device)
    return AotiBackend(folder / entry["file"], [t.name for t in spec.inputs], [spec.outputs[spec.image_output].name],
                       device=torch_device)


def _need(value, kind: str, what: str):
    if value is None:
        raise InputError(f"backend {kind} needs {what}")
    return value

