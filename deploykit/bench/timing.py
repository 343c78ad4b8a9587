"""The clock of ``deploykit bench``: the timing loop around ``run()`` and the statistics of its samples.

Nothing here builds, opens or judges anything, so what is timed is only ever the call it is given.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

DEFAULT_SECONDS = 3.0
MAX_ITERS = 10_000


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
