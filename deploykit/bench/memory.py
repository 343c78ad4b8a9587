"""The memory guard's arithmetic: estimate = factor x traced activation bytes + fixed + extra, against the memory
that is free, with the largest tile that would fit, and the per-(model, backend, precision) calibration of the
factor from measured peaks at two small sizes (``memory_probe``: a fresh process). Decides *whether* a case may
run, never runs one itself.

Calibration: peak RSS growth measured at PROBE_SIZES is fitted as ``fixed + ratio x traced bytes`` (a straight line
through the two points). The traced bytes are linear in pixels for the convolutional nets (so is the measured
peak: MIRNet-v2 eager 1.11 / 3.88 GB at 512 / 1024 px) and grow like (H*W)^2 for PANet's attention, whose exact
trace is kept. The estimate is the fit itself (what the case is expected to take, recorded beside what it took);
the guard lets a case run when PROBE_MARGIN x estimate fits. A small case (under CALIBRATE_FROM_PIXELS per call)
whose coarse upper bound (HOST_FACTORS x trace) is below CALIBRATE_ABOVE of the usable memory is not worth a probe
and keeps the bound (margin 1: it is a bound already).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from deploykit.bench.flops import MemoryTrace
from deploykit.util.system import available_memory, host_reserve
from deploykit.zoo.spec import ModelSpec

HOST_FACTORS = {"torch": 2.0, "torch-compile": 2.0, "ort": 10.0}  # coarse upper bounds x traced bytes (uncalibrated)
PROBED_BACKENDS = ("torch", "torch-compile", "ort")  # calibrated per (model, backend, precision) when it matters
CALIBRATE_ABOVE = 0.25  # calibrate when the coarse bound exceeds this share of the usable memory ...
CALIBRATE_FROM_PIXELS = 512 * 512  # ... or the call is this large: the coarse bound is ~2x off there
PROBE_SIZES = (128, 256)  # 64/128 read MIRNet-v2 eager at 1.8x traced bytes, 128/256 at 1.25x as 512^2 does
PROBE_WARM = 16  # the warm-up run's side: thread pools, kernel caches, the first arena region
PROBE_REPEATS = 2  # a runner's second run at a new shape may take more than its first (ORT's memory pattern)
PROBE_MARGIN = 1.1  # the guard's headroom over a calibrated estimate (the fit's error at 512^2, docs/benchmarks.md)
GPU_FACTOR = 1.5
FIXED_OVERHEAD = 256 * 2**20
GPU_RESERVE = 512 * 2**20
TILE_CANDIDATES = (1024, 768, 512, 384, 256, 192, 128, 96, 64, 48, 32)


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
    margin: float = 1.0  # fits when margin x estimate is under the usable memory

    def reason(self, case_wxh: str) -> str:
        gib = 2**30
        usable = max(0, self.available_bytes - self.reserve_bytes)
        hint = (f"; run it tiled, e.g. --tile {self.tile_hint} --overlap 32" if self.tile_hint
                else "; run it tiled with a small --tile (e.g. --tile 256 --overlap 32), or free memory")
        where = "MemAvailable" if self.pool == "host" else "free GPU memory"
        headroom = f", x {self.margin:g} headroom" if self.margin != 1.0 else ""
        return (f"skipped by the memory guard: {case_wxh} needs about {self.estimate_bytes / gib:.1f} GiB "
                f"({self.factor:.3g} x {self.trace_peak_bytes / gib:.2f} GiB traced activations + "
                f"{self.fixed_bytes / gib:.2f} GiB{headroom}) but only "
                f"{usable / gib:.1f} GiB is usable ({where} {self.available_bytes / gib:.1f} GiB minus "
                f"{self.reserve_bytes / gib:.1f} GiB reserve){hint}")

    def to_dict(self) -> dict:
        return asdict(self)


def suggest_tile(usable: int, spec: ModelSpec, *, factor: float, batch: int = 1,
                 trace_at: Callable[[int], int] | None = None, bytes_per_pixel: float | None = None,
                 fixed: int = FIXED_OVERHEAD, margin: float = 1.0) -> int | None:
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
        if margin * (factor * peak + fixed) <= usable:
            return tile
    return None


def check_memory(trace_peak_bytes: int, *, pool: str = "host", spec: ModelSpec, batch: int = 1,
                 extra_bytes: int = 0, available: int | None = None, reserve: int | None = None,
                 factor: float | None = None, trace_at: Callable[[int], int] | None = None,
                 bytes_per_pixel: float | None = None, fixed: int = FIXED_OVERHEAD,
                 margin: float = 1.0) -> MemoryGuard:
    """Estimate = factor x traced activation peak + fixed overhead + ``extra_bytes``; fits when ``margin`` x
    estimate is under available - reserve. When it does not fit, the largest tile that would is suggested
    (``tile_hint``)."""
    if factor is None:
        factor = HOST_FACTORS["torch"] if pool == "host" else GPU_FACTOR
    if available is None:
        available = available_memory() if pool == "host" else int(torch.cuda.mem_get_info()[0])
    if reserve is None:
        reserve = host_reserve() if pool == "host" else GPU_RESERVE
    estimate = int(factor * trace_peak_bytes + fixed + extra_bytes)
    usable = available - reserve
    fits = margin * estimate <= usable
    tile = None
    if not fits and (trace_at is not None or bytes_per_pixel):
        tile = suggest_tile(int(usable / margin) - extra_bytes, spec, factor=factor, batch=batch, trace_at=trace_at,
                            bytes_per_pixel=bytes_per_pixel, fixed=fixed)
    return MemoryGuard(pool, estimate, int(available), int(reserve), int(trace_peak_bytes), factor, fits, tile,
                       int(fixed), margin)


def calibrate_factor(peaks: Sequence[int], traces: Sequence[int], floor: float) -> dict:
    """Measured-vs-traced bytes from a two-size probe -> the straight line (factor, fixed) through both points.

    ratio = marginal growth of peak RSS per traced byte between the two sizes (works for attention models whose
    memory is quadratic in pixels too), at least ``floor``; fixed = what the larger probe needed beyond ratio x its
    trace (never negative). No margin here: the estimate is a prediction; the guard adds PROBE_MARGIN."""
    (p1, p2), (t1, t2) = peaks, traces
    ratio = (p2 - p1) / (t2 - t1) if t2 > t1 and p2 > p1 else (p2 / t2 if t2 else floor)
    factor = max(floor, ratio)
    return {"ratio": ratio, "factor": factor, "fixed_bytes": int(max(0.0, p2 - factor * t2)), "peaks": list(peaks),
            "traces": list(traces), "margin": PROBE_MARGIN, "floor": floor}


CAL_FLOOR = 0.5  # the smallest factor a calibration may give (x traced bytes)


def probe_sizes(spec: ModelSpec) -> list[int]:
    """PROBE_SIZES rounded up to the model's shape contract, within its own tile limit (PANet: 96)."""
    limit = getattr(spec, "tile", None)
    small, large = (min(s, limit) if limit else s for s in PROBE_SIZES)
    if small >= large:
        small = large // 2
    return [spec.valid_size(small), spec.valid_size(large)]


def heap_factor(heap_peaks: Sequence[int], traces: Sequence[int], heaps: Sequence[int], ratio: float,
                fixed: float) -> float:
    """How much more the heap-resident tensors take under glibc's default allocator than their bytes: the default
    regime's excess over the line (``ratio`` x traced + ``fixed``, measured with the threshold fixed), per
    heap-resident traced byte, summed over the probe sizes; 1 when nothing was on the heap, at most HEAP_FACTOR_MAX."""
    excess = sum(max(0.0, p - fixed - ratio * t) for p, t in zip(heap_peaks, traces))
    resident = sum(ratio * h for h in heaps)
    return min(HEAP_FACTOR_MAX, 1.0 + excess / resident) if resident > 0 else 1.0


HEAP_FACTOR_MAX = 4.0


def probe_calibration(measure: Callable[[list[int], int, int], dict], spec: ModelSpec,
                      trace_at: Callable[[int], MemoryTrace], floor: float, repeats: int = PROBE_REPEATS) -> dict:
    """``measure(sizes, warm, repeats)`` -> ``{"peaks": [...], "heap_peaks": [...], ...}``
    (``memory_probe.run_probe``: a fresh process) at the probe sizes; the guard's line fitted against the traced
    bytes there (``trace_at(T)``) and the heap factor from the default-allocator peaks."""
    sizes = probe_sizes(spec)
    start = time.perf_counter()
    measured = measure(sizes, spec.valid_size(PROBE_WARM), repeats)
    traces = [trace_at(s) for s in sizes]
    result = calibrate_factor(measured["peaks"], [t.peak_bytes for t in traces], floor)
    heap_peaks = measured.get("heap_peaks", measured["peaks"])
    result["heap_factor"] = round(heap_factor(heap_peaks, result["traces"], [t.heap_peak_bytes for t in traces],
                                              result["factor"], result["fixed_bytes"]), 3)
    result["heap_traces"] = [t.heap_peak_bytes for t in traces]
    result.update(sizes=sizes, seconds=round(time.perf_counter() - start, 2),
                  **{k: v for k, v in measured.items() if k != "peaks"})
    return result
