"""deploykit.bench.timing: nearest-rank statistics and the timing loop (a fake clock: no timing asserts)."""

from __future__ import annotations

import itertools
import math

from deploykit.bench.timing import DEFAULT_SECONDS, latency_stats, percentile, time_runs


def test_latency_stats_known_samples():
    stats = latency_stats([float(v) for v in range(100, 0, -1)])  # 1..100 in reverse order
    assert stats["count"] == 100
    assert stats["min"] == 1 and stats["max"] == 100
    assert stats["median"] == 50.5 and stats["mean"] == 50.5
    assert stats["p90"] == 90 and stats["p95"] == 95 and stats["p99"] == 99  # nearest rank
    assert math.isclose(stats["stdev"], math.sqrt((100**2 - 1) / 12))  # population stdev of 1..100


def test_latency_stats_small_and_odd():
    stats = latency_stats([5.0, 1.0, 3.0])
    assert (stats["min"], stats["median"], stats["p90"], stats["p99"], stats["max"]) == (1, 3, 5, 5, 5)
    assert latency_stats([7.0])["p99"] == 7.0
    assert latency_stats([])["count"] == 0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert math.isnan(percentile([], 50))


def test_time_runs_counts_warmup_and_iterations():
    calls = []
    timing = time_runs(lambda: calls.append(1) or {"n": len(calls)}, warmup=2, iters=3, seconds=None)
    assert len(calls) == 1 + 1 + 3  # first run (= warm-up 1), one more warm-up, three timed runs
    assert len(timing.samples_ms) == 3 and timing.output == {"n": 1}
    calls.clear()
    timing = time_runs(lambda: calls.append(1), warmup=0, iters=2, seconds=None)
    assert len(calls) == 2 and len(timing.samples_ms) == 2  # without warm-up the first run is a sample


def _second_clock():
    """A perf_counter_ns stand-in that advances one second per reading."""
    ticks = itertools.count()
    return lambda: next(ticks) * 10**9


def test_time_runs_stops_at_the_time_budget():
    timing = time_runs(lambda: {}, warmup=1, iters=None, seconds=4.5, clock=_second_clock())
    assert timing.first_run_ms == 1000.0  # one clock tick around the first call
    assert timing.samples_ms == [1000.0, 1000.0]  # the budget is checked before each timed run
    timing = time_runs(lambda: {}, warmup=1, iters=2, seconds=100.0, clock=_second_clock())
    assert len(timing.samples_ms) == 2  # iters ends it first


def test_time_runs_syncs_around_every_timed_call_and_defaults_to_seconds():
    events = []
    timing = time_runs(lambda: events.append("run"), warmup=1, iters=None, seconds=None,
                       sync=lambda: events.append("sync"), clock=_second_clock())
    assert DEFAULT_SECONDS == 3.0
    assert len(timing.samples_ms) == 1  # the check before the second timed run reads 3 s after the loop started
    timed = events[events.index("run") + 3:]  # after: sync before + first run + sync after + sync before the loop
    assert timed == ["sync", "run", "sync"] * len(timing.samples_ms)
