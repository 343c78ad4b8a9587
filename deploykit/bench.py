"""``deploykit bench``: latency x resolution x backend x precision, with parity, FLOPs and a memory guard.

Building, running and judging never mix (the Polygraphy split): :func:`plan_cases` decides *what* runs, the memory
guard decides *whether* it may run, :func:`time_runs` measures, and parity is judged against the PyTorch FP32
reference at the same resolution (run once per model and resolution, reused by every backend).

What each figure means (also written into every JSON file, ``methods``):

* **Latency** (ms): ``time.perf_counter_ns`` around one ``Backend.run(feed)`` call on host numpy arrays, after
  ``--warmup`` runs; the first call is timed separately (``first_run_ms``: lazy initialisation, compilation).
  On a CUDA device the device is synchronised before the clock starts and before it stops, and the figure
  includes the host->device copy of the inputs and the device->host copy of the outputs (like trtexec's
  "Latency" with ``--includeDataTransfers``); PyTorch on CUDA also reports GPU compute alone, timed with CUDA
  events on device-resident tensors. ORT on CPU: ``InferenceSession.run`` on host arrays; PyTorch on CPU: the
  module call under ``inference_mode`` (numpy<->tensor wrapping shares memory, FP16 adds the casts).
  Statistics: min, median, mean, p90, p95, p99 (nearest-rank percentiles), max, stdev over the timed runs.
* **MPix/s**: input megapixels x batch / median latency. **FLOPs per image**: see :mod:`deploykit.flops`
  (counted at 64x64 on the meta device and scaled linearly by pixel count). **TFLOP/s**: FLOPs x batch / median.
* **Memory**: peak resident set size of this process over the case's runs (``VmHWM`` after resetting it through
  ``/proc/self/clear_refs``) minus the RSS just before the first run; on CUDA also the allocator peak (PyTorch)
  or the engine's device memory (TensorRT).
* **Memory guard**: before a case runs, its working memory is estimated from the peak live activation bytes of
  one PyTorch eager forward at that size, traced on the meta device (no arithmetic; exact for PyTorch's tensors,
  also for attention whose memory grows with (H*W)^2): ``estimate = factor x trace + fixed + 2 x output``.
  PyTorch: ``factor`` 2, ``fixed`` 256 MiB (measured peak RSS growth minus 256 MiB was 0.3-1.1x the trace on the
  zoo at 256-512 px: oneDNN work buffers, allocator slack). ONNX Runtime plans memory its own way (1-5.8x the
  trace at 256 px, growing with size: 3.3x at 768 px for MIRNet-v2, 4.3x at 1024 px for VapSR), so its factor is
  calibrated per model: a fresh session runs twice at 48x48 and at 96x96, and the marginal growth of peak RSS per
  traced byte, times 2.5, is the factor (at least 4.5). The case is skipped (never an OOM or a swap
  storm: this machine has no swap) when the estimate exceeds ``MemAvailable`` (/proc/meminfo, capped by a cgroup
  limit) minus a reserve of max(1 GiB, 10% of RAM); the skip states the estimate and the largest ``--tile`` whose
  estimate fits. On CUDA the same trace in the run's dtype x 1.5 is checked against free device memory.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import datetime as _dt
import gc
import math
import os
import platform
import re
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from deploykit.errors import BackendUnavailableError, DeployKitError, ShapeContractError
from deploykit.zoo import ModelSpec, get_spec

SCHEMA = "deploykit.bench"
SCHEMA_VERSION = 1
BACKENDS = ("torch", "torch-compile", "ort", "ort-cuda", "trt")
PRECISIONS = ("fp32", "fp16")
INSTALL_HINT = "pip install 'deploykit[gpu]'"
DEFAULT_SECONDS = 3.0
MAX_ITERS = 10_000
DEFAULT_RES = "256,512,1024,2048"
HOST_FACTORS = {"torch": 2.0, "torch-compile": 2.0, "ort": 4.5}  # x traced activation bytes (floors for probed)
PROBED_BACKENDS = ("ort",)  # memory plan unlike PyTorch's: factor measured per model by a small probe run
PROBE_SIZES = (48, 96)
PROBE_MARGIN = 2.5  # ORT's bytes per traced byte grow with size (arena growth) up to ~2x the 48/96 probe's
GPU_FACTOR = 1.5
FIXED_OVERHEAD = 256 * 2**20
GPU_RESERVE = 512 * 2**20
PARITY_SEED = 1
Size = tuple[int, int]  # (height, width)

LATENCY_NOTE = {
    "torch:cpu": "PyTorch eager module call under inference_mode on host tensors (numpy views, no copies)",
    "torch-compile:cpu": "torch.compile'd module call (inductor) on host tensors; compilation is in first_run_ms",
    "ort:cpu": "InferenceSession.run on host numpy arrays (ONNX Runtime CPU EP)",
    "cuda": "host numpy in -> H2D copy -> compute -> D2H copy -> host numpy out; device synchronised at both ends",
}
METHODS = {
    "latency": "time.perf_counter_ns around one Backend.run(feed) per iteration, after warm-up; the first call is "
               "reported separately as first_run_ms. CUDA: synchronised before start and stop, H2D and D2H copies "
               "included (gpu_compute_ms: CUDA events around the device-resident forward, PyTorch only)",
    "percentiles": "nearest rank: the ceil(p/100 * n)-th smallest sample",
    "megapixels_per_s": "input megapixels x batch / median latency",
    "flops": "torch.utils.flop_counter.FlopCounterMode (conv/matmul FLOPs = 2 x MACs; element-wise ops not "
             "counted) at 64x64 on the meta device, scaled linearly by pixel count (fully convolutional nets; "
             "checked at a second size). A model whose count is not linear (global attention: PANet) is counted "
             "at each size instead; flops_method in each record says which",
    "tflops": "flops_per_image x batch / median latency",
    "memory": "host: peak RSS (VmHWM, reset via /proc/self/clear_refs) over the case's runs minus RSS before the "
              "first run; CUDA: torch.cuda.max_memory_allocated (PyTorch) or the engine's device memory (TensorRT)",
    "memory_guard": "estimate = factor x peak live activation bytes of one PyTorch eager forward at the size "
                    "(meta-device trace) + fixed + 2 x the output. PyTorch: factor 2, fixed 256 MiB; ONNX Runtime: "
                    f"factor = max({HOST_FACTORS['ort']:g}, {PROBE_MARGIN:g} x measured/traced marginal bytes of a "
                    "fresh session run twice at "
                    f"{PROBE_SIZES[0]}^2 and {PROBE_SIZES[1]}^2), fixed likewise (memory.calibration). Skipped when "
                    "above MemAvailable (cgroup-capped) minus max(1 GiB, 10% of RAM), with the largest --tile that "
                    f"fits. GPU: {GPU_FACTOR:g} x the trace in the run's dtype + 256 MiB against free device memory "
                    "- 512 MiB",
    "parity": "against the PyTorch FP32 run at the same resolution and input (seeded uniform image, seed 1), "
              "reused by every backend; FP32 passes at max abs <= 1e-4, FP16 at PSNR >= the model's floor",
}


class BenchError(DeployKitError):
    """A benchmark request that cannot be run as given (sizes, backends, nothing to benchmark)."""


# --- parsing -------------------------------------------------------------------------------------------------

def parse_resolution(text: str) -> Size:
    """'2048' -> (2048, 2048); '1920x1080' is WIDTH x HEIGHT -> (1080, 1920) as (height, width)."""
    raw = str(text).strip().lower().replace("×", "x")
    match = re.fullmatch(r"(\d+)(?:x(\d+))?", raw)
    if not match:
        raise BenchError(f"cannot read the resolution '{text}': use N (an NxN input) or WIDTHxHEIGHT, "
                         "e.g. --res 512 or --res 1920x1080")
    width = int(match.group(1))
    height = int(match.group(2)) if match.group(2) else width
    if width <= 0 or height <= 0:
        raise BenchError(f"resolution '{text}' must be positive")
    return height, width


def parse_resolutions(items: str | Iterable[str]) -> list[Size]:
    """'--res 256,512 --res 1920x1080' -> [(256, 256), (512, 512), (1080, 1920)], in order, duplicates dropped."""
    parts = [p for item in ([items] if isinstance(items, str) else items) for p in str(item).split(",")]
    sizes = list(dict.fromkeys(parse_resolution(p) for p in parts if p.strip()))
    if not sizes:
        raise BenchError("--res needs at least one size, e.g. --res 256,512,1024,2048 or --res 1920x1080")
    return sizes


def parse_choices(items: str | Iterable[str] | None, allowed: Sequence[str], what: str,
                  default: Sequence[str]) -> list[str]:
    """Comma-separated / repeated option values, validated against ``allowed`` (order kept, duplicates dropped)."""
    if items is None:
        return list(default)
    parts = [p.strip().lower() for item in ([items] if isinstance(items, str) else items) for p in str(item).split(",")]
    parts = [p for p in parts if p]
    bad = [p for p in parts if p not in allowed]
    if bad:
        raise BenchError(f"unknown {what} {', '.join(repr(b) for b in bad)}; use {', '.join(allowed)}")
    return list(dict.fromkeys(parts)) or list(default)


def fmt_wxh(hw: Sequence[int]) -> str:
    return f"{hw[1]}x{hw[0]}"


# --- statistics ------------------------------------------------------------------------------------------------

def percentile(sorted_samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted samples (p in (0, 100])."""
    if not sorted_samples:
        return math.nan
    rank = max(1, math.ceil(p / 100.0 * len(sorted_samples)))
    return float(sorted_samples[min(rank, len(sorted_samples)) - 1])


def latency_stats(samples_ms: Sequence[float]) -> dict:
    """min / median / mean / p90 / p95 / p99 / max / stdev (population) / count of samples in ms."""
    data = sorted(float(s) for s in samples_ms)
    if not data:
        return {"count": 0}
    n = len(data)
    mean = sum(data) / n
    median = data[n // 2] if n % 2 else 0.5 * (data[n // 2 - 1] + data[n // 2])
    return {"count": n, "min": data[0], "median": median, "mean": mean, "p90": percentile(data, 90),
            "p95": percentile(data, 95), "p99": percentile(data, 99), "max": data[-1],
            "stdev": math.sqrt(sum((x - mean) ** 2 for x in data) / n)}


# --- machine: memory, load, device ----------------------------------------------------------------------------

def meminfo() -> dict[str, int]:
    """/proc/meminfo fields in bytes (empty off Linux)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


def available_memory() -> int:
    """Bytes this process may still take: MemAvailable capped by a cgroup limit (shared with deploykit.tiling)."""
    try:
        from deploykit.tiling import available_memory as _available

        return int(_available())
    except ImportError:
        info = meminfo()
        return int(info.get("MemAvailable", 4 << 30))


def host_reserve(total: int | None = None) -> int:
    """Memory the guard leaves free for the OS and the other processes on the machine."""
    total = total if total is not None else meminfo().get("MemTotal", 16 << 30)
    return max(1 << 30, int(0.10 * total))


def loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "unknown"


def cpu_slug() -> str:
    """Results folder name of this CPU machine (``benchmarks/results/<slug>/``), e.g. ``cpu-amd-epyc-2cpu``."""
    return f"cpu-{_slug(cpu_model())}-{cpu_count()}cpu"


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def device_info(threads: dict | None = None) -> dict:
    """The machine: CPU model and cores, RAM, GPU name and compute capability when CUDA is visible, and a slug."""
    info = {"cpu": cpu_model(), "cpu_cores_visible": cpu_count(), "cpu_cores_total": os.cpu_count(),
            "ram_bytes": meminfo().get("MemTotal"), "platform": platform.platform(), "gpu": None,
            "threads": threads or {}}
    gpu = None
    try:
        from deploykit.trt_build import gpu_info

        g = gpu_info(0)
        gpu = {"name": g.name, "compute_capability": g.compute_capability}
        with contextlib.suppress(Exception):
            import torch

            if torch.cuda.is_available():
                gpu["memory_bytes"] = int(torch.cuda.get_device_properties(0).total_memory)
                gpu["cuda"] = torch.version.cuda
    except Exception:  # noqa: BLE001 (no GPU: a CPU machine)
        gpu = None
    info["gpu"] = gpu
    if gpu:
        info["slug"] = "gpu-" + _slug(gpu["name"])
        info["name"] = f"{gpu['name']} (sm {gpu['compute_capability']}) + {info['cpu']}"
    else:
        info["slug"] = cpu_slug()
        info["name"] = f"{info['cpu']} ({info['cpu_cores_visible']} CPUs visible)"
    return info


def library_versions() -> dict[str, str | None]:
    from importlib import metadata

    from deploykit.manifest import tool_versions

    versions = dict(tool_versions())
    for name in ("onnxruntime-gpu", "tensorrt", "matplotlib", "rich", "typer"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    with contextlib.suppress(Exception):
        import onnxruntime

        versions["onnxruntime_providers"] = ",".join(onnxruntime.get_available_providers())
    return versions


# --- host memory measurement ---------------------------------------------------------------------------------

def _status_bytes(field_name: str) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    return None


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc malloc_trim), so RSS means 'in use'."""
    gc.collect()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class RssMeter:
    """Peak RSS over a block: VmHWM after a reset through /proc/self/clear_refs, or a 5 ms sampling thread."""

    def __init__(self):
        self.before = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.method = "VmHWM"

    def start(self) -> RssMeter:
        release_memory()
        self.before = _status_bytes("VmRSS") or 0
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.method = "sampled VmRSS (5 ms)"
            self.peak = self.before
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _status_bytes("VmRSS") or 0)

    def stop(self) -> dict:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        else:
            self.peak = _status_bytes("VmHWM") or self.before
        return {"rss_before_bytes": self.before, "rss_peak_bytes": self.peak,
                "rss_peak_delta_bytes": max(0, self.peak - self.before), "rss_method": self.method}


# --- models and artifacts ----------------------------------------------------------------------------------------

@dataclass
class Target:
    """A model to benchmark: its spec and, when it was exported, the export directory and manifest."""

    spec: ModelSpec
    export_dir: Path | None = None
    manifest: dict | None = None

    @property
    def name(self) -> str:
        return self.spec.name


def discover_exports(root: str | Path) -> list[Target]:
    """Every export under ``root/<family>/<variant>/manifest.json`` (sorted by family, variant)."""
    from deploykit.manifest import read_manifest

    targets = []
    for path in sorted(Path(root).glob("*/*/manifest.json")):
        try:
            manifest = read_manifest(path)
            targets.append(Target(get_spec(manifest["model"]["name"]), path.parent, manifest))
        except DeployKitError:
            continue
    return targets


def resolve_models(names: Sequence[str] | None, exports_root: str | Path = "exports") -> list[Target]:
    """Named models (their export under ``exports_root`` is used when it exists), or every export there."""
    from deploykit.manifest import read_manifest

    if not names:
        targets = discover_exports(exports_root)
        if not targets:
            raise BenchError(f"nothing to benchmark: no exports under {exports_root}/. Export a model first "
                             "(deploykit export vapsr:s_x4) or name models: deploykit bench vapsr:s_x4 --res 256,512")
        return targets
    targets = []
    for name in dict.fromkeys(names):
        spec = get_spec(name)
        export_dir = Path(exports_root) / spec.family / spec.variant
        manifest = None
        if (export_dir / "manifest.json").exists():
            with contextlib.suppress(DeployKitError):
                manifest = read_manifest(export_dir)
        targets.append(Target(spec, export_dir if manifest else None, manifest))
    return targets


def default_cache_dir() -> Path:
    root = os.environ.get("DEPLOYKIT_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME")
                                                             or os.path.expanduser("~/.cache"), "deploykit")
    return Path(root) / "bench-exports"


def _artifact(manifest: dict | None, precision: str) -> dict | None:
    for artifact in (manifest or {}).get("artifacts", []):
        if artifact.get("kind", "onnx") == "onnx" and artifact.get("precision") == precision:
            return artifact
    return None


def _random_init_seed0(manifest: dict) -> bool:
    weights = manifest.get("weights", {})
    return weights.get("source") == "random-init" and int(weights.get("seed", -1)) == 0


def onnx_for(target: Target, precision: str, cache_dir: Path, *, want_fp16: bool,
             notify: Callable[[str], None]) -> tuple[Path, Path, dict, str]:
    """(onnx path, export dir, manifest, source) for ORT: the export under exports/, else the cache, else a fresh
    export into the cache (said through ``notify``)."""
    from deploykit.manifest import read_manifest

    if target.manifest is not None:
        artifact = _artifact(target.manifest, precision)
        if artifact is not None:
            return target.export_dir / artifact["file"], target.export_dir, target.manifest, "exports"
        if not _random_init_seed0(target.manifest):  # a random-init export of our own would not match its weights
            raise BenchError(f"{target.export_dir} has no {precision} ONNX and was exported from other weights than "
                             f"a seed-0 random init; re-export it with its weights (deploykit export {target.name} "
                             "--weights FILE, which writes FP32 and FP16)")
    cached = cache_dir / target.spec.family / target.spec.variant
    if (cached / "manifest.json").exists():
        with contextlib.suppress(DeployKitError):
            manifest = read_manifest(cached)
            artifact = _artifact(manifest, precision)
            if artifact is not None and _random_init_seed0(manifest) and (cached / artifact["file"]).exists():
                return cached / artifact["file"], cached, manifest, f"cache {cached}"
    from deploykit.export_pipeline import export

    where = f" (no {precision} artifact under exports/)" if target.manifest is not None else " (not under exports/)"
    notify(f"exporting {target.name} on the fly into {cache_dir}{where}: random init, seed 0, "
           f"{'FP32 + FP16' if want_fp16 else 'FP32 only'}")
    start = time.perf_counter()
    result = export(target.name, out=cache_dir, fp16=want_fp16 or precision == "fp16")
    notify(f"exported {target.name} in {time.perf_counter() - start:.0f} s -> {result.out_dir}")
    artifact = _artifact(result.manifest, precision)
    if artifact is None:
        raise BenchError(f"the export of {target.name} has no {precision} artifact")
    return result.out_dir / artifact["file"], result.out_dir, result.manifest, f"exported now into {cache_dir}"


# --- backends ----------------------------------------------------------------------------------------------------

def _torch_device() -> str:
    return "cuda" if cuda_available() else "cpu"


def backend_unavailable_reason(kind: str) -> str | None:
    """None when ``kind`` can run on this machine, else the one-line reason (with the install hint)."""
    if kind == "torch":
        return None
    if kind == "torch-compile":
        try:
            import torch

            if not hasattr(torch, "compile"):
                return "this torch has no torch.compile"
        except ImportError:
            return "torch is not installed"
        if _torch_device() == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++", "cc")):
            return "torch.compile on CPU needs a C++ compiler (install g++)"
        return None
    if kind == "ort":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime)"
        return None
    if kind == "ort-cuda":
        try:
            import onnxruntime as ort
        except ImportError:
            return f"onnxruntime is not installed; install the GPU build with {INSTALL_HINT}"
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return f"ONNX Runtime has no CUDA execution provider here; install it with {INSTALL_HINT} (NVIDIA GPU)"
        return None
    if kind == "trt":
        try:
            from deploykit.trt_build import tensorrt_unavailable_reason

            reason = tensorrt_unavailable_reason(0)
        except ImportError:
            reason = "deploykit has no TensorRT support in this install"
        if reason:
            return reason if INSTALL_HINT in reason else f"{reason}; install it with {INSTALL_HINT}"
        import importlib.util

        if importlib.util.find_spec("deploykit.backends.tensorrt") is None:
            return f"the TensorRT backend is not available in this install ({INSTALL_HINT})"
        return None
    return f"unknown backend '{kind}'"


def resolve_backends(requested: Sequence[str] | None) -> tuple[list[str], dict[str, str]]:
    """'auto' = every backend that runs here: torch and ort everywhere, plus ort-cuda and trt with a CUDA GPU and
    their packages (torch-compile only when named: compilation takes minutes per shape).

    Returns (backends to run, {backend: why it is unavailable}); unavailable backends are reported, never run.
    """
    names = parse_choices(requested, ("auto", *BACKENDS), "backend", ("auto",))
    wanted: list[str] = []
    for name in names:
        wanted += ["torch", "ort", "ort-cuda", "trt"] if name == "auto" else [name]
    run, unavailable = [], {}
    for name in dict.fromkeys(wanted):
        reason = backend_unavailable_reason(name)
        if reason is None:
            run.append(name)
        else:
            unavailable[name] = reason
    return run, unavailable


def torch_compile_backend(module, input_names, output_names, *, device: str, precision: str):
    """A TorchBackend over a ``torch.compile``'d copy of ``module`` (compiled lazily by the first run)."""
    import torch

    from deploykit.backends import TorchBackend

    backend = TorchBackend(copy.deepcopy(module), input_names, output_names, device=device, precision=precision,
                           name="torch-compile")
    backend.module = torch.compile(backend.module, dynamic=False)
    return backend


# --- plan ------------------------------------------------------------------------------------------------------------

@dataclass
class Case:
    target: Target
    backend: str
    precision: str
    hw: Size
    batch: int

    @property
    def key(self) -> tuple:
        return (self.target.name, self.hw, self.backend, self.precision)


def plan_cases(targets: Sequence[Target], sizes: Sequence[Size], backends: Sequence[str],
               precisions: Sequence[str], batch: int = 1) -> list[Case]:
    """Per model, per resolution: the PyTorch FP32 case first (it is the parity reference), then the rest."""
    cases = []
    for target in targets:
        for hw in sizes:
            group = [Case(target, b, p, hw, batch) for b in backends for p in precisions]
            group.sort(key=lambda c: not (c.backend == "torch" and c.precision == "fp32"))
            cases += group
    return cases


# --- memory guard ----------------------------------------------------------------------------------------------------

@dataclass
class MemoryGuard:
    """Outcome of the guard for one case (bytes)."""

    pool: str  # "host" or "cuda"
    estimate_bytes: int
    available_bytes: int
    reserve_bytes: int
    trace_peak_bytes: int
    factor: float
    fits: bool
    tile_hint: int | None = None
    fixed_bytes: int = FIXED_OVERHEAD

    def reason(self, case_wxh: str) -> str:
        gib = 2**30
        usable = max(0, self.available_bytes - self.reserve_bytes)
        hint = (f"; run it tiled, e.g. --tile {self.tile_hint} --overlap 32" if self.tile_hint
                else "; run it tiled with a small --tile (e.g. --tile 256 --overlap 32), or free memory")
        where = "MemAvailable" if self.pool == "host" else "free GPU memory"
        return (f"skipped by the memory guard: {case_wxh} needs about {self.estimate_bytes / gib:.1f} GiB "
                f"({self.factor:.3g} x {self.trace_peak_bytes / gib:.2f} GiB traced activations + "
                f"{self.fixed_bytes / gib:.2f} GiB) but only "
                f"{usable / gib:.1f} GiB is usable ({where} {self.available_bytes / gib:.1f} GiB minus "
                f"{self.reserve_bytes / gib:.1f} GiB reserve){hint}")

    def to_dict(self) -> dict:
        return asdict(self)


TILE_CANDIDATES = (1024, 768, 512, 384, 256, 192, 128, 96, 64, 48, 32)


def suggest_tile(usable: int, spec: ModelSpec, *, factor: float, batch: int = 1,
                 trace_at: Callable[[int], int] | None = None, bytes_per_pixel: float | None = None,
                 fixed: int = FIXED_OVERHEAD) -> int | None:
    """Largest candidate tile (a multiple of the contract, at most the spec's own ``tile`` limit) whose estimate
    fits ``usable``. ``trace_at(T)`` gives the traced peak bytes at T x T (exact, also for attention models whose
    memory grows faster than the pixel count); without it the per-pixel rate is scaled."""
    limit = getattr(spec, "tile", None)
    for tile in TILE_CANDIDATES:
        if tile % spec.multiple_of or tile < spec.min_size or (limit and tile > limit):
            continue
        if trace_at is not None:
            peak = trace_at(tile)
        elif bytes_per_pixel:
            peak = bytes_per_pixel * tile * tile * max(1, batch)
        else:
            return None
        if factor * peak + fixed <= usable:
            return tile
    return None


def check_memory(trace_peak_bytes: int, *, pool: str = "host", spec: ModelSpec, batch: int = 1,
                 extra_bytes: int = 0, available: int | None = None, reserve: int | None = None,
                 factor: float | None = None, trace_at: Callable[[int], int] | None = None,
                 bytes_per_pixel: float | None = None, fixed: int = FIXED_OVERHEAD) -> MemoryGuard:
    """Estimate = factor x traced activation peak + fixed overhead + ``extra_bytes``; fits when under
    available - reserve. When it does not fit, the largest tile that would is suggested (``tile_hint``)."""
    if factor is None:
        factor = HOST_FACTORS["torch"] if pool == "host" else GPU_FACTOR
    if available is None:
        if pool == "host":
            available = available_memory()
        else:
            import torch

            available = int(torch.cuda.mem_get_info()[0])
    if reserve is None:
        reserve = host_reserve() if pool == "host" else GPU_RESERVE
    estimate = int(factor * trace_peak_bytes + fixed + extra_bytes)
    usable = available - reserve
    fits = estimate <= usable
    tile = None
    if not fits and (trace_at is not None or bytes_per_pixel):
        tile = suggest_tile(usable - extra_bytes, spec, factor=factor, batch=batch, trace_at=trace_at,
                            bytes_per_pixel=bytes_per_pixel, fixed=fixed)
    return MemoryGuard(pool, estimate, int(available), int(reserve), int(trace_peak_bytes), factor, fits, tile,
                       int(fixed))


def probe_memory(run_at: Callable[[int], None], sizes: Sequence[int], warm: int, repeats: int = 2) -> list[int]:
    """Peak RSS growth (bytes) over ``repeats`` runs at each size, above the RSS after a warm-up run at ``warm``
    (thread pools, kernel caches, the first arena region). Sizes run in increasing order, the peak reset before
    each. Two runs per size because ONNX Runtime's second run at a new shape takes ~1.6x the first's memory (its
    arena keeps the first run's blocks while the memory pattern planned from it is allocated), then stays flat."""
    run_at(warm)
    release_memory()
    base = _status_bytes("VmRSS") or 0
    peaks = []
    for size in sizes:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
        for _ in range(repeats):
            run_at(size)
        peaks.append(max(0, (_status_bytes("VmHWM") or base) - base))
    return peaks


def calibrate_factor(peaks: Sequence[int], traces: Sequence[int], floor: float) -> dict:
    """Measured-vs-traced bytes from a two-size probe -> (factor, fixed) for the guard, with PROBE_MARGIN.

    ratio = marginal growth of peak RSS per traced byte between the two sizes (works for attention models whose
    memory is quadratic in pixels too); fixed = what the larger probe needed beyond ratio x its trace."""
    (p1, p2), (t1, t2) = peaks, traces
    ratio = (p2 - p1) / (t2 - t1) if t2 > t1 and p2 > p1 else (p2 / t2 if t2 else floor)
    fixed = max(0.0, p2 - ratio * t2)
    return {"ratio": ratio, "factor": max(floor, PROBE_MARGIN * ratio),
            "fixed_bytes": int(max(FIXED_OVERHEAD, PROBE_MARGIN * fixed)), "peaks": list(peaks),
            "traces": list(traces), "margin": PROBE_MARGIN, "floor": floor}


# --- timing --------------------------------------------------------------------------------------------------------------

@dataclass
class Timing:
    first_run_ms: float
    samples_ms: list[float]
    warmup: int
    output: dict | None = None
    gpu_compute_ms: list[float] | None = None


def time_runs(run: Callable[[], dict], *, warmup: int, iters: int | None, seconds: float | None,
              sync: Callable[[], None] | None = None, keep_first_output: bool = True,
              clock: Callable[[], int] = time.perf_counter_ns) -> Timing:
    """Time ``run()``: the first call separately, ``warmup`` warm-up calls in all (the first counts as one),
    then timed calls until ``iters`` samples or ``seconds`` elapsed (whichever comes first, at least one).

    Without ``iters`` and ``seconds``: DEFAULT_SECONDS. With ``warmup == 0`` the first call is also a sample.
    """
    sync = sync or (lambda: None)
    if iters is None and seconds is None:
        seconds = DEFAULT_SECONDS
    sync()
    t0 = clock()
    first = run()
    sync()
    first_ms = (clock() - t0) / 1e6
    output = first if keep_first_output else None
    del first
    samples: list[float] = [] if warmup > 0 else [first_ms]
    for _ in range(max(0, warmup - 1)):
        run()
    sync()
    limit = iters if iters is not None else MAX_ITERS
    start = clock()
    while len(samples) < limit:
        if seconds is not None and samples and (clock() - start) / 1e9 >= seconds:
            break
        sync()
        t0 = clock()
        run()
        sync()
        samples.append((clock() - t0) / 1e6)
    return Timing(first_ms, samples, warmup, output)


# --- records ---------------------------------------------------------------------------------------------------------------

@dataclass
class BenchRecord:
    """One (model, backend, precision, resolution) result; ``status`` is ok, skipped or error."""

    model: str
    family: str
    variant: str
    backend: str
    precision: str
    batch: int
    input_hw: list[int]
    output_hw: list[int]
    status: str = "ok"
    reason: str | None = None
    runtime: str | None = None
    device: str | None = None
    artifact: dict | None = None
    warmup: int = 0
    iterations: int = 0
    first_run_ms: float | None = None
    latency_ms: dict = field(default_factory=dict)
    latency_includes: str | None = None
    gpu_compute_ms: dict | None = None
    megapixels_per_s: float | None = None
    output_megapixels_per_s: float | None = None
    flops_per_image: int | None = None
    flops_method: str | None = None
    tflops: float | None = None
    memory: dict = field(default_factory=dict)
    parity: dict | None = None
    tile: dict | None = None
    seconds: float | None = None
    loadavg: dict | None = None  # /proc/loadavg (1, 5, 15 min) when the timed runs started and ended

    @property
    def input_wxh(self) -> str:
        return fmt_wxh(self.input_hw)

    @property
    def output_wxh(self) -> str:
        return fmt_wxh(self.output_hw)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["input_wxh"], data["output_wxh"] = self.input_wxh, self.output_wxh
        return _json_safe(data)


def _json_safe(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return _json_safe(float(value))
    return value


@dataclass
class BenchSettings:
    sizes: list[Size]
    backends: list[str]
    precisions: list[str]
    batch: int = 1
    warmup: int = 2
    iters: int | None = None
    seconds: float | None = None
    tile: int | None = None
    overlap: int = 32
    threads: int | None = None
    exports_root: str = "exports"
    cache_dir: str | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["sizes"] = [fmt_wxh(s) for s in self.sizes]
        if self.iters is None and self.seconds is None:
            data["seconds"] = DEFAULT_SECONDS
        return data


@dataclass
class BenchResult:
    settings: BenchSettings
    records: list[BenchRecord]
    device: dict
    versions: dict
    command: list[str]
    unavailable: dict[str, str]
    started: str
    finished: str
    loadavg_before: list[float] | None
    loadavg_after: list[float] | None
    memory_before: dict
    memory_after: dict
    flops: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return _json_safe({
            "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created": self.finished, "started": self.started,
            "command": shlex.join(self.command), "argv": list(self.command), "device": self.device,
            "versions": self.versions, "settings": self.settings.to_dict(),
            "load": {"loadavg_before": self.loadavg_before, "loadavg_after": self.loadavg_after,
                     "note": "1/5/15-minute load averages from /proc/loadavg; other processes share this machine"},
            "host_memory": {"before": self.memory_before, "after": self.memory_after},
            "unavailable_backends": self.unavailable, "methods": METHODS, "flops": self.flops,
            "notes": self.notes, "records": [r.to_dict() for r in self.records],
        })


# --- running ---------------------------------------------------------------------------------------------------------------

Event = Callable[[str, str], None]  # (kind, message): kind in info, export, start, done, skip, error


class _ModelState:
    """Per model: the reference module, FLOP count, a meta copy for memory traces, cached ORT paths."""

    def __init__(self, target: Target, device: str):
        from deploykit.backends import TorchBackend
        from deploykit.flops import count_flops, meta_copy

        self.target, self.spec = target, target.spec
        if target.manifest is not None:
            from deploykit.engines import reference_backend

            self.reference = reference_backend(target.manifest, device=device)
            self.weights = target.manifest.get("weights", {}).get("source", "random-init")
        else:
            from deploykit.factory import build_model
            from deploykit.forms import ImageOutput

            model, spec, _ = build_model(target.spec)
            self.reference = TorchBackend(ImageOutput(model, spec.image_output), [t.name for t in spec.inputs],
                                          [spec.outputs[spec.image_output].name], device=device,
                                          name=f"torch-{device}")
            self.weights = "random-init"
        self.module = self.reference.module
        self.output_name = self.spec.outputs[self.spec.image_output].name
        self.input_names = [t.name for t in self.spec.inputs]
        self.flops = count_flops(self.module, self.spec)
        self.meta = meta_copy(self.module)
        self._exact_flops: dict[Size, int] = {}
        self.onnx: dict[str, tuple] = {}
        self.ref_outputs: dict[tuple, np.ndarray] = {}
        self._traces: dict[tuple, object] = {}
        self.calibrations: dict[tuple, dict] = {}

    def calibrate(self, case: Case, settings: BenchSettings, device: str, notify) -> dict:
        """Per (backend, precision, batch): run a fresh backend at PROBE_SIZES and fit the guard's factor."""
        key = (case.backend, case.precision, case.batch)
        if key in self.calibrations:
            return self.calibrations[key]
        from deploykit.inputs import random_inputs

        sizes = [self.spec.valid_size(s) for s in PROBE_SIZES]
        warm = self.spec.valid_size(16)
        backend, _ = _make_backend(case, self, settings, device, notify)
        start = time.perf_counter()
        try:
            def run_at(size: int) -> None:
                backend.run(random_inputs(self.spec, (case.batch, size, size), seed=PARITY_SEED))

            peaks = probe_memory(run_at, sizes, warm)
        finally:
            backend.close()
            release_memory()
        traces = [self.trace((s, s), case.batch).peak_bytes for s in sizes]
        result = calibrate_factor(peaks, traces, HOST_FACTORS.get(case.backend, 2.0))
        result.update(sizes=sizes, seconds=round(time.perf_counter() - start, 2))
        notify(f"memory probe {self.spec.name} {case.backend}/{case.precision} at {sizes[0]}² and {sizes[1]}²: "
               f"{result['ratio']:.2f} x traced bytes -> guard factor {result['factor']:.2f} "
               f"+ {result['fixed_bytes'] / 2**20:.0f} MiB ({result['seconds']:.0f} s)")
        self.calibrations[key] = result
        return result

    def flops_at(self, hw: Size) -> tuple[int, str]:
        """(FLOPs per image at hw, how): scaled from the base count, or counted at hw when not linear."""
        from deploykit.flops import flops_at

        if self.flops.linear:
            return self.flops.at(*hw), f"scaled linearly from {fmt_wxh(self.flops.base_hw)}"
        if hw not in self._exact_flops:
            self._exact_flops[hw] = flops_at(self.meta, self.spec, *hw)
        return self._exact_flops[hw], (f"counted at this size (not linear in pixels: {self.flops.linearity_error:.0%} "
                                       f"off at {fmt_wxh(self.flops.check_hw)})")

    def trace_at(self, batch: int, dtype: str = "fp32") -> Callable[[int], int]:
        """T -> traced peak bytes at T x T (for tile suggestions)."""
        return lambda tile: self.trace((tile, tile), batch, dtype).peak_bytes

    def trace(self, hw: Size, batch: int, dtype: str = "fp32"):
        import torch

        from deploykit.flops import trace_peak_bytes

        key = (hw, batch, dtype)
        if key not in self._traces:
            self._traces[key] = trace_peak_bytes(self.module, self.spec, *hw, batch=batch,
                                                 dtype=torch.float16 if dtype == "fp16" else torch.float32,
                                                 meta_module=copy.deepcopy(self.meta) if dtype == "fp16" else self.meta)
        return self._traces[key]


def _make_backend(case: Case, state: _ModelState, settings: BenchSettings, device: str, notify) -> tuple:
    """(backend, artifact info) for a case; raises BackendUnavailableError / BenchError / DeployKitError."""
    from deploykit.backends import OrtBackend, TorchBackend

    spec = state.spec
    if case.backend == "torch":
        if case.precision == "fp32":
            return state.reference, None
        return TorchBackend(copy.deepcopy(state.module), state.input_names, [state.output_name], device=device,
                            precision="fp16", name=f"torch-{device}"), None
    if case.backend == "torch-compile":
        return torch_compile_backend(state.module, state.input_names, [state.output_name], device=device,
                                     precision=case.precision), None
    cache_dir = Path(settings.cache_dir) if settings.cache_dir else default_cache_dir()
    key = case.precision
    if key not in state.onnx:
        state.onnx[key] = onnx_for(state.target, case.precision, cache_dir, want_fp16="fp16" in settings.precisions,
                                   notify=notify)
    path, export_dir, manifest, source = state.onnx[key]
    static_hw = (manifest.get("export") or {}).get("static_hw")
    if static_hw and tuple(static_hw) != tuple(case.hw):
        raise ShapeContractError(f"{export_dir} was exported with a fixed size {fmt_wxh(static_hw)}; "
                                 "bench it at that size or re-export without --static")
    artifact = {"file": str(path), "source": source}
    recorded = _artifact(manifest, case.precision)
    if recorded:
        artifact["sha256"] = recorded.get("sha256")
    if case.backend == "ort":
        return OrtBackend(path, device="cpu", precision=case.precision, threads=settings.threads), artifact
    from deploykit.trt_build import Profile

    hw = _work_hw(case.hw, settings, spec)
    tiles_batch = case.batch
    profile = Profile(hw, hw, hw, tiles_batch)
    if case.backend == "ort-cuda":
        try:
            from deploykit.backends.ort_gpu import OrtGpuBackend
        except ImportError:
            return OrtBackend(path, device="cuda", precision=case.precision, threads=settings.threads), artifact
        return OrtGpuBackend.for_export(export_dir, manifest, provider="cuda", precision=case.precision,
                                        profile=profile), artifact
    if case.backend == "trt":
        from deploykit.backends.tensorrt import TensorRTBackend
        from deploykit.manifest import read_manifest
        from deploykit.trt_build import build_engine, gpu_info, import_tensorrt

        trt = import_tensorrt()
        gpu = gpu_info(0)
        manifest = read_manifest(export_dir)
        entry = None
        for e in reversed(manifest.get("engines", [])):
            if (e.get("precision") == case.precision and str(e.get("tensorrt")) == trt.__version__
                    and str(e.get("compute_capability")) == gpu.compute_capability
                    and Profile.from_dict(e["profile"]).contains(tiles_batch, *hw)):
                entry = e
                break
        if entry is None:
            sizes = sorted({_work_hw(c, settings, spec) for c in settings.sizes
                            if all(v % spec.multiple_of == 0 for v in c)} | {hw}, key=lambda s: s[0] * s[1])
            notify(f"building a TensorRT {case.precision} engine for {spec.name} "
                   f"({', '.join(fmt_wxh(s) for s in sizes)}, batch {tiles_batch}) in {export_dir}")
            entry = build_engine(export_dir, precision=case.precision, res=[fmt_wxh(s) for s in sizes],
                                 max_batch=tiles_batch, parity=False)
        artifact = {"file": str(Path(export_dir) / entry["file"]), "source": "engine", "sha256": entry.get("sha256"),
                    "tensorrt": entry.get("tensorrt"), "onnx": str(path)}
        return TensorRTBackend(export_dir, entry), artifact
    raise BenchError(f"unknown backend '{case.backend}'")


def _work_hw(hw: Size, settings: BenchSettings, spec: ModelSpec) -> Size:
    """The shape one backend call sees: the image, or with --tile the tile shape deploykit.tiling picks for it."""
    if not settings.tile:
        return tuple(hw)
    from deploykit.tiling import plan_tiles

    return tuple(plan_tiles(hw[0], hw[1], spec, settings.tile, settings.overlap).tile_shape)


def _case_device(backend) -> str:
    return str(getattr(backend, "device", "cpu"))


def _latency_note(case: Case, backend) -> str:
    device = _case_device(backend)
    if device.startswith("cuda"):
        return LATENCY_NOTE["cuda"]
    return LATENCY_NOTE.get(f"{case.backend}:cpu", "Backend.run on host numpy arrays")


def _run_once_fn(backend, state: _ModelState, feed: dict, settings: BenchSettings, spec: ModelSpec, batch: int):
    """A zero-argument callable running one image (tiled when --tile), returning the image output array."""
    out_name = state.output_name
    if settings.tile:
        from deploykit.tiling import run_tiled

        def run_tiled_once():
            return run_tiled(lambda tiles: backend.run(tiles)[out_name], feed, spec, tile=settings.tile,
                             overlap=settings.overlap, batch=batch)

        return run_tiled_once
    return lambda: backend.run(feed)[out_name]


def _gpu_compute_times(module, feed: dict, names: list[str], precision: str, iters: int) -> list[float]:
    """PyTorch on CUDA only: CUDA-event time of the forward on device-resident tensors (no copies)."""
    import torch

    dtype = torch.float16 if precision == "fp16" else torch.float32
    args = [torch.from_numpy(feed[n]).to("cuda", dtype) for n in names]
    times = []
    with torch.inference_mode():
        module(*args)
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            module(*args)
            end.record()
            end.synchronize()
            times.append(float(start.elapsed_time(end)))
    return times


def run_bench(models: Sequence[str] | None = None, *, res: str | Iterable[str] = DEFAULT_RES,
              backends: Sequence[str] | str | None = None, precisions: Sequence[str] | str | None = None,
              batch: int = 1, warmup: int = 2, iters: int | None = None, seconds: float | None = None,
              tile: int | None = None, overlap: int = 32, threads: int | None = None,
              exports_root: str | Path = "exports", cache_dir: str | Path | None = None,
              on_event: Event | None = None, command: Sequence[str] | None = None) -> BenchResult:
    """Benchmark every (model, backend, precision, resolution); see the module docstring for what is measured."""
    import torch

    event = on_event or (lambda kind, msg: None)
    sizes = parse_resolutions(res)
    default_prec = ("fp32", "fp16") if cuda_available() else ("fp32",)
    precs = parse_choices(precisions, PRECISIONS, "precision", default_prec)
    if batch < 1:
        raise BenchError(f"--batch must be >= 1, not {batch}")
    if warmup < 0:
        raise BenchError(f"--warmup must be >= 0, not {warmup}")
    if iters is not None and iters < 1:
        raise BenchError(f"--iters must be >= 1, not {iters}")
    if seconds is not None and seconds <= 0:
        raise BenchError(f"--seconds must be > 0, not {seconds}")
    if tile is not None and tile < 8:
        raise BenchError(f"--tile must be at least 8 pixels, not {tile}")
    if threads is not None and threads < 1:
        raise BenchError(f"--threads must be >= 1, not {threads}")
    run_list, unavailable = resolve_backends(backends)
    for name, why in unavailable.items():
        event("skip", f"backend {name} unavailable: {why}")
    if not run_list:
        raise BenchError("none of the requested backends is available here: "
                         + "; ".join(f"{k}: {v}" for k, v in unavailable.items()))
    targets = resolve_models(models, exports_root)
    if threads is not None:
        torch.set_num_threads(threads)
    from deploykit.backends.ort import default_threads

    thread_info = {"torch_intra_op": torch.get_num_threads(), "ort_intra_op": threads or default_threads()}
    settings = BenchSettings(sizes, run_list, precs, batch, warmup, iters, seconds, tile, overlap, threads,
                             str(exports_root), str(cache_dir) if cache_dir else None)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    load_before, mem_before = loadavg(), _mem_summary()
    device = _torch_device()
    records: list[BenchRecord] = []
    flops_info: dict = {}
    cases = plan_cases(targets, sizes, run_list, precs, batch)
    event("info", f"{len(cases)} runs planned: {len(targets)} model(s) x {len(sizes)} size(s) x {len(run_list)} "
                  f"backend(s) x {len(precs)} precision(s); torch on {device}, threads {thread_info}")
    state: _ModelState | None = None
    for case in cases:
        skipped = _contract_skip(case, event)
        if skipped is not None:  # decided from the spec alone: no model is built for it
            records.append(skipped)
            continue
        if state is None or state.target is not case.target:
            if state is not None:
                del state
                state = None
                release_memory()
            state = _ModelState(case.target, device)
            flops_info[state.spec.name] = state.flops.to_dict()
        records.append(_run_case(case, state, settings, device, event))
    del state
    release_memory()
    return BenchResult(settings, records, device_info(thread_info), library_versions(),
                       list(command) if command is not None else list(sys.argv), unavailable, started,
                       _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), load_before, loadavg(),
                       mem_before, _mem_summary(), flops_info)


def _mem_summary() -> dict:
    info = meminfo()
    return {k: info.get(k) for k in ("MemTotal", "MemAvailable", "SwapTotal", "SwapFree")}


def _new_record(case: Case, warmup: int) -> BenchRecord:
    spec = case.target.spec
    h, w = case.hw
    return BenchRecord(spec.name, spec.family, spec.variant, case.backend, case.precision, case.batch,
                       [h, w], list(spec.output_size(h, w)), warmup=warmup)


def _contract_skip(case: Case, event: Event) -> BenchRecord | None:
    """A skipped record when the size breaks the model's shape contract (multiple_of, min size, square)."""
    try:
        case.target.spec.check_size(*case.hw)
    except ShapeContractError as exc:
        record = _new_record(case, 0)
        record.status, record.reason = "skipped", str(exc)
        event("skip", f"{case.target.name} {case.backend}/{case.precision} {fmt_wxh(case.hw)}: {exc}")
        return record
    return None


@dataclass
class _Work:
    """What one case runs: the shape of one backend call, images per timed run, calls batched, output bytes held."""

    hw: Size
    images: int
    run_batch: int
    held_bytes: int


def _plan_work(case: Case, state: _ModelState, settings: BenchSettings, record: BenchRecord) -> _Work:
    """Tiling plan (with --tile) and FLOPs per image, written into the record."""
    spec, (h, w) = state.spec, case.hw
    work = _Work((h, w), case.batch, case.batch, 0)
    if settings.tile:
        from deploykit.tiling import plan_tiles

        plan = plan_tiles(h, w, spec, settings.tile, settings.overlap)
        work.hw, work.images = tuple(plan.tile_shape), 1
        record.batch = 1
        record.tile = {"tile": settings.tile, "overlap": settings.overlap, "tiles": plan.count,
                       "tile_hw": list(plan.tile_shape), "tiles_per_run": case.batch,
                       "tile_runs": math.ceil(plan.count / case.batch), "plan": plan.describe()}
        tile_flops, record.flops_method = state.flops_at(work.hw)
        record.flops_per_image = tile_flops * plan.count
        record.flops_method += f"; {plan.count} tiles incl. overlap"
    else:
        record.flops_per_image, record.flops_method = state.flops_at((h, w))
    out_h, out_w = record.output_hw
    work.held_bytes = 4 * spec.out_channels * out_h * out_w * work.images  # output kept for parity / tile canvas
    return work


def _memory_guard(case: Case, state: _ModelState, settings: BenchSettings, device: str, work: _Work,
                  record: BenchRecord, event: Event, label: str) -> MemoryGuard | None:
    """The guard's verdict for the case (host memory; plus device memory for CUDA backends).

    Returns None when the case already ended (its probe failed or the backend is unavailable)."""
    spec, (h, w) = state.spec, case.hw
    trace = state.trace(work.hw, work.run_batch, "fp32")
    guard = check_memory(trace.peak_bytes, pool="host", spec=spec, batch=work.run_batch,
                         extra_bytes=2 * work.held_bytes,
                         factor=HOST_FACTORS.get(case.backend, max(HOST_FACTORS.values())),
                         trace_at=state.trace_at(work.run_batch))
    record.memory = {"estimate_bytes": guard.estimate_bytes, "available_bytes": guard.available_bytes,
                     "reserve_bytes": guard.reserve_bytes, "trace_peak_bytes": trace.peak_bytes,
                     "guard_factor": guard.factor}
    on_gpu = case.backend in ("ort-cuda", "trt") or (device == "cuda" and case.backend.startswith("torch"))
    if on_gpu:
        gtrace = state.trace(work.hw, work.run_batch, case.precision)
        gpu_guard = check_memory(gtrace.peak_bytes, pool="cuda", spec=spec, batch=work.run_batch,
                                 trace_at=state.trace_at(work.run_batch, case.precision))
        host_bytes = 2 * work.held_bytes + 4 * sum(t.channels for t in spec.inputs) * h * w * work.images
        guard = check_memory(0, pool="host", spec=spec, extra_bytes=host_bytes)  # host side: I/O copies only
        record.memory.update(estimate_bytes=guard.estimate_bytes, gpu_estimate_bytes=gpu_guard.estimate_bytes,
                             gpu_available_bytes=gpu_guard.available_bytes, gpu_trace_peak_bytes=gtrace.peak_bytes)
        return guard if gpu_guard.fits else gpu_guard
    if guard.fits and case.backend in PROBED_BACKENDS:
        try:
            cal = state.calibrate(case, settings, device, lambda m: event("export", m))
        except BackendUnavailableError as exc:
            record.status, record.reason = "skipped", f"backend unavailable: {exc}"
            event("skip", f"{label}: {record.reason}")
            return None
        except Exception as exc:  # noqa: BLE001 (an export or probe failure ends this case, not the benchmark)
            record.status, record.reason = "error", f"memory probe failed: {_one_line(exc)}"
            event("error", f"{label}: {record.reason}")
            return None
        guard = check_memory(trace.peak_bytes, pool="host", spec=spec, batch=work.run_batch,
                             extra_bytes=2 * work.held_bytes, factor=cal["factor"], fixed=cal["fixed_bytes"],
                             trace_at=state.trace_at(work.run_batch))
        record.memory.update(estimate_bytes=guard.estimate_bytes, available_bytes=guard.available_bytes,
                             guard_factor=guard.factor, calibration=cal)
    return guard


def _run_case(case: Case, state: _ModelState, settings: BenchSettings, device: str, event: Event) -> BenchRecord:
    spec = state.spec
    h, w = case.hw
    record = _new_record(case, settings.warmup)
    out_hw = record.output_hw
    label = f"{spec.name} {case.backend}/{case.precision} {fmt_wxh(case.hw)}"
    start_case = time.perf_counter()
    work = _plan_work(case, state, settings, record)
    guard = _memory_guard(case, state, settings, device, work, record, event, label)
    if guard is None or not guard.fits:
        if guard is not None:
            record.status, record.reason = "skipped", guard.reason(fmt_wxh(case.hw))
            event("skip", f"{label}: {record.reason}")
        record.seconds = round(time.perf_counter() - start_case, 3)
        return record
    from deploykit.inputs import random_inputs

    feed = random_inputs(spec, (work.images, h, w), seed=PARITY_SEED)
    backend = None
    try:
        reference_note = _ensure_reference(case, state, feed, settings, work, event, label)
        try:
            backend, record.artifact = _make_backend(case, state, settings, device, lambda m: event("export", m))
        except BackendUnavailableError as exc:
            record.status, record.reason = "skipped", f"backend unavailable: {exc}"
            event("skip", f"{label}: {record.reason}")
            return record
        record.runtime, record.device = getattr(backend, "name", case.backend), _case_device(backend)
        record.latency_includes = _latency_note(case, backend)
        run = _run_once_fn(backend, state, feed, settings, spec, work.run_batch)
        sync = None
        if record.device.startswith("cuda"):
            import torch

            sync = torch.cuda.synchronize
            torch.cuda.reset_peak_memory_stats()
        event("start", f"{label}: est. {guard.estimate_bytes / 2**30:.2f} GiB, "
                       f"{record.flops_per_image / 1e12:.3g} TFLOP/image"
                       + (f", {record.tile['plan']}" if record.tile else ""))
        from deploykit.backends.torch_backend import strict_fp32

        load_start = loadavg()
        meter = RssMeter().start()
        with strict_fp32():  # TF32 off: PyTorch FP32 on CUDA is real FP32
            timing = time_runs(run, warmup=settings.warmup, iters=settings.iters, seconds=settings.seconds, sync=sync)
        record.memory.update(meter.stop())
        record.loadavg = {"start": load_start, "end": loadavg()}
        if record.device.startswith("cuda"):
            _gpu_figures(record, backend, case, state, settings, feed, len(timing.samples_ms))
        _fill_timing(record, timing, record.flops_per_image, work.images, h, w, out_hw)
        record.parity = _parity(case, state, timing.output, spec, label, event, reference_note)
        timing.output = None
    except DeployKitError as exc:
        record.status, record.reason = "error", str(exc)
        event("error", f"{label}: {exc}")
    except MemoryError as exc:
        record.status, record.reason = "error", f"out of memory despite the guard ({exc}); use --tile"
        event("error", f"{label}: {record.reason}")
    except Exception as exc:  # noqa: BLE001 (one failing backend must not end the whole benchmark)
        record.status, record.reason = "error", _one_line(exc)
        event("error", f"{label}: {record.reason}")
    finally:
        if backend is not None and backend is not state.reference:
            with contextlib.suppress(Exception):
                backend.close()
        backend = None
        release_memory()
        record.seconds = round(time.perf_counter() - start_case, 3)
    if record.status == "ok":
        lat = record.latency_ms
        event("done", f"{label}: median {lat['median']:.1f} ms over {lat['count']} runs (first {record.first_run_ms:.0f} ms), "
                      f"{record.megapixels_per_s:.3g} MPix/s, {record.tflops:.3g} TFLOP/s, "
                      f"peak RSS +{record.memory['rss_peak_delta_bytes'] / 2**20:.0f} MiB"
                      + (f", parity {_parity_short(record.parity)}" if record.parity else ""))
    return record


def _gpu_figures(record: BenchRecord, backend, case: Case, state: _ModelState, settings: BenchSettings, feed: dict,
                 runs: int) -> None:
    """CUDA only: allocator peak, TensorRT engine device memory, PyTorch's device-only compute time."""
    import torch

    record.memory["gpu_peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
    engine = getattr(backend, "engine", None)
    for attr in ("device_memory_size_v2", "device_memory_size"):
        if engine is not None and hasattr(engine, attr):
            record.memory["engine_device_memory_bytes"] = int(getattr(engine, attr))
            break
    if case.backend == "torch" and not settings.tile:
        record.gpu_compute_ms = latency_stats(_gpu_compute_times(backend.module, feed, state.input_names,
                                                                 case.precision, max(1, runs)))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, DeployKitError):
        return text
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"


def _fill_timing(record: BenchRecord, timing: Timing, flops: int, images: int, h: int, w: int,
                 out_hw: list[int]) -> None:
    stats = latency_stats(timing.samples_ms)
    record.first_run_ms = timing.first_run_ms
    record.latency_ms = stats
    record.iterations = stats["count"]
    median_s = stats["median"] / 1e3
    if median_s > 0:
        record.megapixels_per_s = images * h * w / 1e6 / median_s
        record.output_megapixels_per_s = images * out_hw[0] * out_hw[1] / 1e6 / median_s
        record.tflops = flops * images / median_s / 1e12


def _ensure_reference(case: Case, state: _ModelState, feed: dict, settings: BenchSettings, work: _Work,
                      event: Event, label: str) -> str | None:
    """Run the PyTorch FP32 reference at this size once (untimed) when no torch/fp32 case produced it.

    Returns why there is no reference (None when there is one)."""
    key = (case.hw, case.batch)
    if (case.backend == "torch" and case.precision == "fp32") or key in state.ref_outputs:
        return None
    device_is_cuda = str(state.reference.device).startswith("cuda")
    trace = state.trace(work.hw, work.run_batch, "fp32")
    guard = check_memory(0 if device_is_cuda else trace.peak_bytes, pool="host", spec=state.spec,
                         batch=work.run_batch, extra_bytes=2 * work.held_bytes, factor=HOST_FACTORS["torch"],
                         trace_at=state.trace_at(work.run_batch))
    if not guard.fits:
        return "the PyTorch FP32 reference " + guard.reason(fmt_wxh(case.hw)).replace("skipped by", "was skipped by")
    start = time.perf_counter()
    from deploykit.backends.torch_backend import strict_fp32

    with strict_fp32():
        output = _run_once_fn(state.reference, state, feed, settings, state.spec, work.run_batch)()
    state.ref_outputs = {key: output}
    event("info", f"{label}: ran the PyTorch FP32 reference for parity ({time.perf_counter() - start:.1f} s, untimed)")
    return None


def _parity(case: Case, state: _ModelState, output: np.ndarray | None, spec: ModelSpec, label: str,
            event: Event, missing_reason: str | None = None) -> dict | None:
    """Compare with the PyTorch FP32 output at this size (this case's own output when it is that reference)."""
    from deploykit.parity import compare

    key = (case.hw, case.batch)
    if output is None:
        return None
    if case.backend == "torch" and case.precision == "fp32":
        state.ref_outputs = {key: output}  # only the current size is kept
        return {"reference": True, "note": "this run is the PyTorch FP32 reference for its resolution"}
    ref = state.ref_outputs.get(key)
    if ref is None:
        return {"checked": False, "reason": missing_reason or "no PyTorch FP32 reference at this size"}
    rec = compare(ref, output, backend=case.backend, precision=case.precision, output=state.output_name,
                  min_psnr_db=spec.fp16.min_psnr_db)
    if not rec.passed:
        event("error", f"{label}: parity FAIL: {rec.summary()}")
    return {"checked": True, "reference": False, "max_abs": rec.max_abs, "mean_abs": rec.mean_abs,
            "psnr_db": rec.psnr_db, "nonfinite": rec.nonfinite, "passed": rec.passed, "tolerance": rec.tolerance,
            "reference_backend": f"torch/fp32 ({state.reference.device})"}


def _parity_short(parity: dict) -> str:
    if parity.get("reference"):
        return "reference"
    if not parity.get("checked", True):
        return "not checked"
    return (f"{'pass' if parity['passed'] else 'FAIL'} (max abs {parity['max_abs']:.1e}, "
            f"PSNR {parity['psnr_db']:.1f} dB, NaN/Inf {parity['nonfinite']})")
