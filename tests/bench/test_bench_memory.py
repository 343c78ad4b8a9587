"""deploykit.bench.memory: the guard's estimate, its tile hint, and ONNX Runtime's calibration probe."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from deploykit.bench import memory
from deploykit.bench.memory import (FIXED_OVERHEAD, PROBE_MARGIN, TILE_CANDIDATES, calibrate_factor, check_memory,
                                    probe_calibration, suggest_tile)
from deploykit.util.system import peak_rss_measurable
from deploykit.zoo.registry import get_spec

GIB = 2**30


def test_memory_guard_skips_with_tile_hint(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 3 * GIB)
    monkeypatch.setattr(memory, "host_reserve", lambda total=None: GIB)
    spec = get_spec("srresnet:x4")
    per_pixel = 9472.0
    fits = check_memory(int(per_pixel * 256 * 256), spec=spec, bytes_per_pixel=per_pixel)
    assert fits.fits and fits.tile_hint is None
    guard = check_memory(int(per_pixel * 2048 * 2048), spec=spec, bytes_per_pixel=per_pixel)
    assert not guard.fits and guard.estimate_bytes > guard.available_bytes
    reason = guard.reason("2048x2048")
    assert "--tile" in reason and "GiB" in reason and "2048x2048" in reason and "MemAvailable" in reason
    assert guard.tile_hint is not None and guard.tile_hint % spec.multiple_of == 0
    assert f"--tile {guard.tile_hint}" in reason
    assert 2 * per_pixel * guard.tile_hint**2 + FIXED_OVERHEAD <= 2 * GIB  # the hinted tile fits what is usable


def test_check_memory_estimate_is_factor_trace_plus_fixed_plus_extra():
    spec = get_spec("srresnet:x2")
    guard = check_memory(GIB, spec=spec, extra_bytes=GIB // 2, available=4 * GIB, reserve=GIB, factor=2.0)
    assert guard.estimate_bytes == 2 * GIB + FIXED_OVERHEAD + GIB // 2
    assert guard.fits and guard.pool == "host" and guard.to_dict()["factor"] == 2.0
    tight = check_memory(GIB, spec=spec, extra_bytes=GIB // 2, available=3 * GIB, reserve=GIB, factor=2.0)
    assert not tight.fits and tight.tile_hint is None  # no trace_at and no per-pixel rate: no hint to give


def test_suggest_tile_keeps_the_contract_and_the_spec_limit():
    spec = SimpleNamespace(multiple_of=8, min_size=8, tile=256)
    per_pixel = 1000

    def trace_at(t):
        return per_pixel * t * t

    usable = int(2 * trace_at(200) + FIXED_OVERHEAD)  # 192 fits, 256 does not
    assert suggest_tile(usable, spec, factor=2.0, trace_at=trace_at) == 192
    big = 10 * GIB
    assert suggest_tile(big, spec, factor=2.0, trace_at=trace_at) == 256  # never above the spec's own tile
    odd = SimpleNamespace(multiple_of=7, min_size=1, tile=None)
    assert suggest_tile(big, odd, factor=2.0, trace_at=trace_at) is None  # no candidate is a multiple of 7
    assert suggest_tile(FIXED_OVERHEAD, spec, factor=2.0, trace_at=trace_at) is None
    assert TILE_CANDIDATES == tuple(sorted(TILE_CANDIDATES, reverse=True))  # largest first


def test_calibrate_factor_uses_the_marginal_growth():
    cal = calibrate_factor([100 * 2**20, 300 * 2**20], [10 * 2**20, 50 * 2**20], floor=4.5)
    assert cal["ratio"] == pytest.approx(5.0)
    assert cal["factor"] == pytest.approx(PROBE_MARGIN * 5.0)
    assert cal["fixed_bytes"] == max(FIXED_OVERHEAD, int(PROBE_MARGIN * 50 * 2**20))
    low = calibrate_factor([10, 20], [10, 20], floor=4.5)
    assert low["factor"] == 4.5 and low["fixed_bytes"] == FIXED_OVERHEAD  # the floors hold
    flat = calibrate_factor([50, 40], [10, 20], floor=4.5)  # no growth between the sizes: overall ratio
    assert flat["ratio"] == pytest.approx(40 / 20)


def test_probe_calibration_is_util_probe_peak_rss_twice_per_size(monkeypatch):
    calls = {}

    def fake_probe(run_at, sizes, warm, repeats=1):
        calls.update(sizes=list(sizes), warm=warm, repeats=repeats)
        return [100 * 2**20, 400 * 2**20]

    monkeypatch.setattr(memory, "probe_peak_rss", fake_probe)
    spec = get_spec("mprnet:deraining")  # multiple_of 8: 16 and 128/256 stay as they are
    result = probe_calibration(lambda size: None, spec, lambda t: 1000 * t * t, floor=0.5)
    assert calls == {"sizes": [128, 256], "warm": 16, "repeats": 2}
    expected = calibrate_factor([100 * 2**20, 400 * 2**20], [1000 * 128 * 128, 1000 * 256 * 256], 0.5)
    assert result["factor"] == pytest.approx(expected["factor"]) and result["sizes"] == [128, 256]
    assert result["seconds"] >= 0


def test_probe_sizes_stay_within_a_model_tile_limit():
    assert memory.probe_sizes(get_spec("panet:dn")) == [56, 112]  # PANet: tiles of at most 112
    assert memory.probe_sizes(get_spec("srresnet:x4")) == [128, 256]


@pytest.mark.skipif(not peak_rss_measurable(), reason="needs VmHWM and /proc/self/clear_refs")
def test_probe_calibration_measures_real_allocations():
    """A run that touches 4 KiB per pixel: the probe's marginal bytes per 'traced' byte come out near 1."""
    def run_at(size: int) -> None:
        block = np.ones(size * size * 4096, dtype=np.uint8)
        assert block[-1] == 1

    result = probe_calibration(run_at, get_spec("srresnet:x2"), lambda t: 4096 * t * t, floor=0.1)
    assert result["peaks"][1] >= 0.9 * 4096 * 128 * 128
    assert 0.8 <= result["ratio"] <= 1.5
