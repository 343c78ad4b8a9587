"""``deploykit doctor``: what this machine can do (export, ONNX Runtime CPU/GPU, TensorRT, C++ runners, Triton) and,
for what it cannot, the one thing to install. Reads versions and probes imports; builds and runs nothing.
"""

from __future__ import annotations

import platform
import shutil
from dataclasses import asdict, dataclass
from importlib import metadata

from deploykit._version import __version__
from deploykit.errors import BackendUnavailableError
from deploykit.runtime.gpu import gpu_info, import_tensorrt
from deploykit.serve.cpp_build import missing_headers, missing_tools, torch_cmake_prefix
from deploykit.trt.plan import choose_build_path

OK, MISSING, WARN = "ok", "missing", "warning"


@dataclass
class Check:
    area: str
    name: str
    status: str  # ok | missing | warning
    detail: str
    fix: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _package(area: str, name: str, dist: str, fix: str, needed_for: str) -> Check:
    version = _version(dist)
    if version is None:
        return Check(area, name, MISSING, f"not installed ({needed_for})", fix)
    return Check(area, name, OK, version)


def _torch() -> tuple[Check, Check]:
    """(torch itself, CUDA through torch)."""
    try:
        import torch
    except ImportError:
        return (Check("core", "torch", MISSING, "not installed", "pip install torch"),
                Check("gpu", "CUDA (torch)", MISSING, "no torch", "pip install torch (a CUDA build)"))
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        cuda = Check("gpu", "CUDA (torch)", OK, f"{torch.cuda.device_count()} GPU(s); 0: {props.name}, compute "
                                               f"capability {props.major}.{props.minor}, CUDA {torch.version.cuda}")
    else:
        cuda = Check("gpu", "CUDA (torch)", MISSING, "no CUDA GPU visible to torch"
                     + (" (CPU-only torch build)" if torch.version.cuda is None else ""),
                     "a machine with an NVIDIA GPU and a CUDA build of torch")
    return Check("core", "torch", OK, torch.__version__), cuda


def _onnxruntime() -> list[Check]:
    checks = []
    cpu, gpu = _version("onnxruntime"), _version("onnxruntime-gpu")
    if cpu and gpu:
        checks.append(Check("onnxruntime", "packages", WARN, f"onnxruntime {cpu} and onnxruntime-gpu {gpu} are both "
                            "installed; they share one module and only one provider set shows up",
                            "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"))
    try:
        import onnxruntime as ort
    except ImportError:
        return [*checks, Check("onnxruntime", "onnxruntime", MISSING, "not installed", "pip install onnxruntime")]
    providers = ort.get_available_providers()
    checks.append(Check("onnxruntime", "onnxruntime", OK, f"{ort.__version__}; providers: {', '.join(providers)}"))
    for provider, backend in (("CUDAExecutionProvider", "ort-cuda"), ("TensorrtExecutionProvider", "ort-tensorrt")):
        if provider in providers:
            checks.append(Check("onnxruntime", backend, OK, provider))
        else:
            checks.append(Check("onnxruntime", backend, MISSING, f"no {provider}",
                                "pip install 'deploykit[gpu]' on a GPU machine (onnxruntime-gpu alone)"))
    return checks


def _tensorrt() -> list[Check]:
    try:
        trt = import_tensorrt()
    except BackendUnavailableError as exc:
        return [Check("tensorrt", "tensorrt", MISSING, "not importable", str(exc).split(": ", 1)[-1])]
    path = choose_build_path(trt.__version__, "fp16")
    checks = [Check("tensorrt", "tensorrt", OK, f"{trt.__version__}; FP16 builds take the {path.name} path")]
    try:
        gpu = gpu_info(0)
    except BackendUnavailableError as exc:
        checks.append(Check("tensorrt", "deploykit build", MISSING, str(exc), "a machine with an NVIDIA GPU"))
    else:
        checks.append(Check("tensorrt", "deploykit build", OK, f"ready on {gpu.name} (sm {gpu.compute_capability})"))
    return checks


def _cpp() -> list[Check]:
    checks = []
    missing = missing_tools() + missing_headers()
    if missing:
        checks.append(Check("c++", "toolchain", MISSING, "; ".join(m.split(" (")[0] for m in missing),
                            "; ".join(m.split(" (", 1)[1].rstrip(")") for m in missing if " (" in m)))
    else:
        checks.append(Check("c++", "toolchain", OK, f"cmake {shutil.which('cmake')}, nlohmann-json, stb"))
    prefix = torch_cmake_prefix()
    checks.append(Check("c++", "aoti_run (libtorch)", OK, prefix) if prefix else
                  Check("c++", "aoti_run (libtorch)", MISSING, "torch's CMake files not found", "pip install torch"))
    return checks


def run_checks() -> list[Check]:
    """Every check, in display order."""
    torch_check, cuda_check = _torch()
    checks = [Check("core", "deploykit", OK, f"{__version__} (Python {platform.python_version()})"), torch_check]
    for dist, needed in (("onnx", "export"), ("onnxscript", "the dynamo exporter"), ("onnxslim", "simplify"),
                         ("onnxconverter-common", "FP16 artifacts")):
        checks.append(_package("core", dist, dist, f"pip install {dist}", needed))
    checks += _onnxruntime()
    checks.append(cuda_check)
    checks.append(_package("gpu", "cuda-python", "cuda-python", "pip install cuda-python",
                           "TensorRT device memory without a CUDA torch"))
    checks += _tensorrt()
    checks += _cpp()
    checks.append(_package("triton", "tritonclient", "tritonclient", "pip install 'deploykit[triton]'",
                           "deploykit triton-client"))
    return checks
