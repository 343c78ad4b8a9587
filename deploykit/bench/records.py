"""What a benchmark writes: one record per case, the result (schema ``deploykit.bench`` v1), what each figure
means (``METHODS``), and the machine and library versions it ran with. Plain data, JSON-safe.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import shlex
from dataclasses import asdict, dataclass, field
from importlib import metadata

import numpy as np
import torch

from deploykit.artifacts.manifest import tool_versions
from deploykit.bench.memory import GPU_FACTOR, HOST_FACTORS, PROBE_MARGIN, PROBE_SIZES
from deploykit.bench.plan import BenchSettings, Event
from deploykit.runtime.gpu import gpu_info, ort_providers
from deploykit.util.sizes import fmt_wxh
from deploykit.util.system import (
    cpu_count,
    cpu_identity,
    cpu_identity_text,
    cpu_model,
    cpu_slug,
    meminfo,
)
from deploykit.util.text import slug

SCHEMA = "deploykit.bench"
SCHEMA_VERSION = 1

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
    "peak_fraction": "tflops / the same run's GEMM probe (torch.mm 2048^3 at the run's threads, best of 5, measured "
                     "right before the cases and again after; CPU: FP32; CUDA: FP32 with TF32 off, and FP16). Above "
                     "1.0 the record is wrong (threads, clock or FLOP count): suspect true, never published",
    "threads": "read back from the runner after it was opened: torch.get_num_threads()/get_num_interop_threads(); "
               "ONNX Runtime: session.get_session_options().intra_op_num_threads / inter_op_num_threads",
    "cpu_peak_fraction": "FLOPs per process CPU-second over the runs under the clock / the GEMM probe's FLOPs per "
                         "CPU-second (CPU only): the kernel efficiency while the threads had a CPU, comparable "
                         "across runs on a shared machine where the wall-clock fraction is not",
    "roofline": "traffic_bytes_per_image = bytes every non-view ATen op of one eager forward reads and writes "
                "(meta device; a fusing runtime moves less); intensity = flops_per_image / traffic; roof = min("
                "the GEMM probe, intensity x the same run's memory bandwidth probe: torch.add / copy_ on 128 MiB "
                "arrays, STREAM byte counts, best of 5); bound = the lower roof; roofline_fraction = achieved "
                "GFLOP/s / roof",
    "cpu_per_wall": "process CPU time (time.process_time, all threads) / wall time over the warm-up and timed "
                    "runs; a one-thread run shows ~1.0. Above 1.25 x the threads read back: suspect",
    "memory": "host: peak RSS (VmHWM, reset via /proc/self/clear_refs) over the case's runs minus RSS before the "
              "first run; CUDA: torch.cuda.max_memory_allocated (PyTorch) or the engine's device memory (TensorRT)",
    "memory_guard": "estimate = factor x peak live activation bytes of one PyTorch eager forward at the size "
                    "(meta-device trace) + fixed + 2 x the output. Coarse bound: factor "
                    f"{HOST_FACTORS['torch']:g} (PyTorch) / {HOST_FACTORS['ort']:g} (ONNX Runtime) + 256 MiB; "
                    "when that is above a quarter of the usable memory or the call is 512^2 or more, factor, "
                    "fixed and a heap factor are calibrated per (model, backend, precision) from the peak RSS "
                    f"growth at {PROBE_SIZES[0]}^2 and {PROBE_SIZES[1]}^2 in fresh processes, a runner per size "
                    "(line through both points with glibc's mmap threshold fixed; heap factor from glibc's "
                    "default, applied to the traced bytes in tensors under 32 MiB; memory.calibration, "
                    "estimate_method); the case runs "
                    f"when {PROBE_MARGIN:g} x the estimate fits. Usable = MemAvailable (cgroup-capped) minus "
                    "max(1 GiB, 10% of RAM). A whole frame that does not fit runs automatically tiled (tile: the "
                    "largest that fits; overlap min(tile/4, 4 x the receptive radius bound); psnr_check: tiled vs "
                    "whole at 256^2 with the grid scaled), skipped only when no tile fits. GPU: "
                    f"{GPU_FACTOR:g} x the trace in the run's dtype + 256 MiB against free device memory - 512 MiB",
    "tile_sample": "--sample-tiles-over S: a tiled case whose one run needs more than S seconds even at the run's "
                   "FP32 GEMM probe rate (FLOPs / rate) runs only an evenly spread sample of its tiles (first and "
                   "last included, as many as S seconds hold at that rate, at least 8, and only when that skips at "
                   "least half of them); every tile has the same shape and work, so latency, first run and CPU "
                   "seconds are the sample's x tiles / sample (tile.sampled), blending excluded; parity compares "
                   "those tiles with PyTorch FP32 on the same tiles",
    "graph_floor": "ONNX cases: memory.graph_floor_bytes = the liveness peak of the case's ONNX file in its node "
                   "order at the shape of one call (bench.onnx_memory: outputs allocated at their node, freed after "
                   "their last consumer; weights, inputs and kernel workspaces excluded), beside the measured peak "
                   "RSS: how far each runtime is from what the graph needs",
    "segments": "the runs that measured this file: one, or several with --resume (each finished case saved after "
                "it ran; a later run with the same options, machine and library versions measures only the cases "
                "the file lacks). A record's segment is the run that measured it; its peak_fraction is against that "
                "run's own GEMM probe (segments[i].probe). complete: false while a --resume run is under way",
    "parity": "against the PyTorch FP32 run at the same resolution and input (seeded uniform image, seed 1), "
              "reused by every backend; FP32 passes at max abs <= 1e-4, FP16 at PSNR >= the model's floor",
}


def latency_note(backend_kind: str, device: str) -> str:
    """What the latency of a ``backend_kind`` run on ``device`` includes (``latency_includes`` of a record)."""
    if str(device).startswith("cuda"):
        return LATENCY_NOTE["cuda"]
    return LATENCY_NOTE.get(f"{backend_kind}:cpu", "Backend.run on host numpy arrays")


def json_safe(value):
    """``value`` with non-finite floats as None and numpy scalars as Python numbers (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return json_safe(float(value))
    return value


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
    threads: dict | None = None  # read back from the runner: torch intra/inter-op, ORT session intra/inter-op
    cpu_per_wall: float | None = None  # process CPU time / wall time over the timed runs (1 thread: ~1.0)
    peak_gflops: float | None = None  # the same run's GEMM probe rate for this case's device and precision
    peak_fraction: float | None = None  # achieved TFLOP/s / that rate; above 1.0 the record is suspect
    cpu_seconds: float | None = None  # process CPU time over the runs under the clock (first + warm-up + timed)
    clock_runs: int | None = None  # how many runs that was
    cpu_peak_fraction: float | None = None  # FLOPs per CPU-second / the probe's GEMM FLOPs per CPU-second
    suspect: bool = False
    suspect_reasons: list = field(default_factory=list)
    session_options: dict | None = None  # ONNX Runtime: the session settings this case ran with
    traffic_bytes_per_image: int | None = None  # unfused eager traffic (flops.TRAFFIC_METHOD), tiles included
    roofline: dict | None = None  # probe.roofline: intensity, bandwidth, the lower roof and the fraction of it
    segment: int | None = None  # which run of the file measured it (``segments``; several with --resume)

    @property
    def input_wxh(self) -> str:
        return fmt_wxh(self.input_hw)

    @property
    def output_wxh(self) -> str:
        return fmt_wxh(self.output_hw)

    def stop(self, status: str, reason: str, event: Event, label: str) -> None:
        """End the case as ``status`` ('skipped' or 'error') with its one-line reason, said through ``event``."""
        self.status, self.reason = status, reason
        event("skip" if status == "skipped" else "error", f"{label}: {reason}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["input_wxh"], data["output_wxh"] = self.input_wxh, self.output_wxh
        return json_safe(data)


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
    probes: dict = field(default_factory=dict)  # the same-run GEMM probe before and after the cases
    segments: list[dict] = field(default_factory=list)  # earlier runs of a resumed file (bench.resume)
    complete: bool = True  # False in the file a --resume run rewrites after every case

    def to_dict(self) -> dict:
        this_run = {"started": self.started, "created": self.finished, "command": shlex.join(self.command),
                    "probe": self.probes, "load": {"loadavg_before": self.loadavg_before,
                                                   "loadavg_after": self.loadavg_after}}
        return json_safe({
            "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created": self.finished, "started": self.started,
            "command": shlex.join(self.command), "argv": list(self.command), "device": self.device,
            "versions": self.versions, "settings": self.settings.to_dict(),
            "load": {"loadavg_before": self.loadavg_before, "loadavg_after": self.loadavg_after,
                     "note": "1/5/15-minute load averages from /proc/loadavg; other processes share this machine"},
            "host_memory": {"before": self.memory_before, "after": self.memory_after},
            "unavailable_backends": self.unavailable, "methods": METHODS, "flops": self.flops,
            "notes": self.notes, "probe": self.probes, "complete": self.complete,
            "segments": [*self.segments, this_run], "records": [r.to_dict() for r in self.records],
        })


def memory_summary() -> dict:
    """Host memory now: MemTotal, MemAvailable, SwapTotal, SwapFree (bytes) from /proc/meminfo."""
    info = meminfo()
    return {k: info.get(k) for k in ("MemTotal", "MemAvailable", "SwapTotal", "SwapFree")}


def _gpu() -> dict | None:
    """GPU 0's name and compute capability (plus memory and CUDA version through torch), None without one."""
    try:
        g = gpu_info(0)
    except Exception:  # noqa: BLE001 (no GPU: a CPU machine)
        return None
    gpu = {"name": g.name, "compute_capability": g.compute_capability}
    with contextlib.suppress(Exception):
        if torch.cuda.is_available():
            gpu["memory_bytes"] = int(torch.cuda.get_device_properties(0).total_memory)
            gpu["cuda"] = torch.version.cuda
    return gpu


def device_info(threads: dict | None = None) -> dict:
    """The machine: CPU model and cores, RAM, GPU name and compute capability when CUDA is visible, and a slug."""
    ident = cpu_identity()
    info = {"cpu": cpu_model(), "cpu_identity": ident, "cpu_cores_visible": cpu_count(),
            "cpu_cores_total": os.cpu_count(), "ram_bytes": meminfo().get("MemTotal"),
            "platform": platform.platform(), "gpu": _gpu(), "threads": threads or {}}
    gpu = info["gpu"]
    if gpu:
        info["slug"] = "gpu-" + slug(gpu["name"]).lower()
        info["name"] = f"{gpu['name']} (sm {gpu['compute_capability']}) + {info['cpu']}"
    else:
        info["slug"] = cpu_slug()
        info["name"] = cpu_identity_text(ident)
    return info


def library_versions() -> dict[str, str | None]:
    """The manifest's tool versions plus the optional GPU/plot/CLI packages and ONNX Runtime's providers."""
    versions = dict(tool_versions())
    for name in ("onnxruntime-gpu", "tensorrt", "matplotlib", "rich", "typer"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    providers = ort_providers()
    if providers:
        versions["onnxruntime_providers"] = ",".join(providers)
    return versions
