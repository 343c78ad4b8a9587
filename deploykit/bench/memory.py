"""The memory guard's arithmetic: estimate = factor x traced activation bytes + fixed + extra, against the memory
that is free, with the largest tile that would fit, and the per-(model, backend, precision) calibration of the
factor from measured peaks at two small sizes (``util.system.probe_peak_rss``). Decides *whether* a case may run,
never runs one itself.

Calibration: peak RSS growth measured at PROBE_SIZES is fitted as ``fixed + ratio x traced bytes``. The traced
bytes are linear in pixels for the convolutional nets (so is the measured peak: MIRNet-v2 eager 1.11 / 3.88 GB at
512 / 1024 px) and grow like (H*W)^2 for PANet's attention, whose exact trace is kept. A small case (under
CALIBRATE_FROM_PIXELS per call) whose coarse upper bound (HOST_FACTORS x trace) is below CALIBRATE_ABOVE of the
usable memory is not worth a probe and keeps the bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from deploykit.util.system import available_memory, host_reserve, probe_peak_rss
from deploykit.zoo.spec import ModelSpec

HOST_FACTORS = {"torch": 2.0, "torch-compile": 2.0, "ort": 10.0}  # coarse upper bounds x traced bytes (uncalibrated)
PROBED_BACKENDS = ("torch", "torch-compile", "ort")  # calibrated per (model, backend, precision) when it matters
CALIBRATE_ABOVE = 0.25  # calibrate when the coarse bound exceeds this share of the usable memory ...
CALIBRATE_FROM_PIXELS = 512 * 512  # ... or the call is this large: the coarse bound is ~2x off there
PROBE_SIZES = (128, 256)  # 64/128 read MIRNet-v2 eager at 1.8x traced bytes, 128/256 at 1.25x as 512^2 does
PROBE_WARM = 16  # the warm-up run's side: thread pools, kernel caches, the first arena region
PROBE_REPEATS = 2  # ORT's second run at a new shape can take more than the first (arena), then stays flat
PROBE_MARGIN = 1.1  # on the fitted marginal bytes per traced byte: 128/256 predicted 512^2 within +5..9 % (eager)
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
        available = available_memory() if pool == "host" else int(torch.cuda.mem_get_info()[0])
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


CAL_FLOOR = 0.5  # the smallest factor a calibration may give (x traced bytes)


def probe_sizes(spec: ModelSpec) -> list[int]:
    """PROBE_SIZES rounded up to the model's shape contract, within its own tile limit (PANet: 96)."""
    limit = getattr(spec, "tile", None)
    small, large = (min(s, limit) if limit else s for s in PROBE_SIZES)
    if small >= large:
        small = large // 2
    return [spec.valid_size(small), spec.valid_size(large)]


def probe_calibration(run_at: Callable[[int], None], spec: ModelSpec, trace_at: Callable[[int], int],
                      floor: float) -> dict:
    """Run a fresh backend (``run_at(T)``: one run at T x T) at the probe sizes, PROBE_REPEATS runs each after a
    warm-up run, and fit the guard's factor against the traced bytes there (``trace_at(T)``)."""
    sizes = probe_sizes(spec)
    start = time.perf_counter()
    peaks = probe_peak_rss(run_at, sizes, spec.valid_size(PROBE_WARM), repeats=PROBE_REPEATS)
    result = calibrate_factor(peaks, [trace_at(s) for s in sizes], floor)
    result.update(sizes=sizes, seconds=round(time.perf_counter() - start, 2))
    return result
