"""deploykit.bench.memory: the guard's estimate, its tile hint, and ONNX Runtime's calibration probe."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from deploykit.bench import memory
from deploykit.bench.memory import (FIXED_OVERHEAD, PROBE_MARGIN, TILE_CANDIDATES, calibrate_factor, check_memory,
                                    probe_calibration, suggest_tile)
from deploykit.bench.memory_probe import MMAP_THRESHOLD, ProbeRequest, fix_mmap_threshold, run_probe
from deploykit.errors import BenchError
from deploykit.util.system import peak_rss_measurable, probe_peak_rss
from deploykit.zoo.registry import get_spec
from tests.conftest import onnx_conv_chain

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


def test_calibrate_factor_is_the_line_through_both_probes():
    cal = calibrate_factor([100 * 2**20, 300 * 2**20], [10 * 2**20, 50 * 2**20], floor=0.5)
    assert cal["ratio"] == pytest.approx(5.0) and cal["factor"] == pytest.approx(5.0)  # no margin in the estimate
    assert cal["fixed_bytes"] == 50 * 2**20  # 300 MiB - 5 x 50 MiB: the line passes through both points
    assert 5.0 * 10 * 2**20 + cal["fixed_bytes"] == pytest.approx(100 * 2**20)
    low = calibrate_factor([10, 20], [10, 20], floor=4.5)
    assert low["factor"] == 4.5 and low["fixed_bytes"] == 0  # the floor holds; fixed is never negative
    flat = calibrate_factor([50, 40], [10, 20], floor=0.5)  # no growth between the sizes: overall ratio
    assert flat["ratio"] == pytest.approx(40 / 20)


def test_the_margin_is_in_the_decision_not_the_estimate():
    spec = get_spec("srresnet:x2")
    at_edge = check_memory(GIB, spec=spec, available=3 * GIB, reserve=GIB, factor=1.9, fixed=0)  # 1.9 of 2 GiB
    assert at_edge.fits and at_edge.estimate_bytes == int(1.9 * GIB)
    guarded = check_memory(GIB, spec=spec, available=3 * GIB, reserve=GIB, factor=1.9, fixed=0,
                           margin=PROBE_MARGIN, trace_at=lambda t: GIB * t * t // 512**2)
    assert guarded.estimate_bytes == at_edge.estimate_bytes and not guarded.fits  # 1.1 x 1.9 GiB > 2 GiB
    assert "x 1.1 headroom" in guarded.reason("512x512")
    tile = guarded.tile_hint
    assert tile is not None and PROBE_MARGIN * 1.9 * GIB * tile**2 / 512**2 <= 2 * GIB


def test_probe_calibration_fits_what_the_probe_process_measured():
    calls = {}

    def fake_measure(sizes, warm, repeats):
        calls.update(sizes=list(sizes), warm=warm, repeats=repeats)
        return {"peaks": [100 * 2**20, 400 * 2**20], "heap_peaks": [150 * 2**20, 500 * 2**20],
                "mmap_threshold": 131072, "process_seconds": 1.0}

    def trace_at(t):  # half of each probe's traced bytes in tensors under 32 MiB
        return SimpleNamespace(peak_bytes=1000 * t * t, heap_peak_bytes=500 * t * t)

    spec = get_spec("mprnet:deraining")  # multiple_of 8: 16 and 128/256 stay as they are
    result = probe_calibration(fake_measure, spec, trace_at, floor=0.5)
    assert calls == {"sizes": [128, 256], "warm": 16, "repeats": 2}
    expected = calibrate_factor([100 * 2**20, 400 * 2**20], [1000 * 128 * 128, 1000 * 256 * 256], 0.5)
    assert result["factor"] == pytest.approx(expected["factor"]) and result["sizes"] == [128, 256]
    assert result["heap_factor"] == pytest.approx(memory.heap_factor(
        [150 * 2**20, 500 * 2**20], expected["traces"], [500 * 128**2, 500 * 256**2], expected["factor"],
        expected["fixed_bytes"]), abs=1e-3)
    assert result["mmap_threshold"] == 131072 and result["seconds"] >= 0


def test_heap_factor_is_the_default_allocators_excess_per_heap_byte():
    # line: 2 x traced + 10; the default allocator measured 20 / 30 above it, over 2 x 10 / 2 x 20 heap bytes
    assert memory.heap_factor([50, 80], [10, 20], [10, 20], 2.0, 10) == pytest.approx(1 + 50 / 60)
    assert memory.heap_factor([30, 50], [10, 20], [10, 20], 2.0, 10) == 1.0  # on the line: no fragmentation
    assert memory.heap_factor([30, 50], [10, 20], [0, 0], 2.0, 10) == 1.0  # nothing on the heap
    assert memory.heap_factor([10**6, 10**6], [10, 20], [10, 20], 2.0, 10) == memory.HEAP_FACTOR_MAX


def test_the_trace_counts_what_lives_on_the_heap():
    """VapSR x4: every tensor under 32 MiB at 256^2 (all of the trace heap-resident), none at 512^2 (48 channels
    x 512^2 x 4 B = 48 MiB each); a trace's effective bytes weight only that share."""
    from deploykit.bench.flops import HEAP_MAX_BLOCK
    from deploykit.bench.sources import Target
    from deploykit.bench.state import ModelState

    state = ModelState(Target(get_spec("vapsr:x4")), "cpu")
    small, large = state.trace((256, 256), 1), state.trace((512, 512), 1)
    assert small.heap_peak_bytes == small.peak_bytes and large.heap_peak_bytes == 0
    assert 48 * 512 * 512 * 4 >= HEAP_MAX_BLOCK > 48 * 256 * 256 * 4
    assert small.effective_bytes(2.0) == 2 * small.peak_bytes and large.effective_bytes(2.0) == large.peak_bytes


def test_probe_sizes_stay_within_a_model_tile_limit():
    assert memory.probe_sizes(get_spec("panet:dn")) == [56, 112]  # PANet: tiles of at most 112
    assert memory.probe_sizes(get_spec("srresnet:x4")) == [128, 256]


@pytest.mark.skipif(not peak_rss_measurable(), reason="needs VmHWM and /proc/self/clear_refs")
def test_each_probe_size_is_measured_above_what_the_last_one_left():
    """A run that touches 4 KiB per pixel and keeps the 128^2 block: the 256^2 growth counts only its own bytes."""
    kept = []

    def run_at(size: int) -> None:
        block = np.ones(size * size * 4096, dtype=np.uint8)
        if size == 128:
            kept.append(block)

    peaks = probe_peak_rss(run_at, [128, 256], warm=16)
    assert 0.9 * 4096 * 128**2 <= peaks[0] <= 1.5 * 4096 * 128**2
    assert 0.9 * 4096 * 256**2 <= peaks[1] <= 1.2 * 4096 * 256**2  # not + the kept 64 MiB


def test_a_failed_probe_process_is_one_line_naming_the_model():
    with pytest.raises(BenchError, match=r"memory probe of srresnet:x2 \(tvm\) failed: .*runs torch or ort"):
        run_probe(ProbeRequest("tvm", "srresnet:x2", [32, 64], 16))


@pytest.mark.skipif(not peak_rss_measurable(), reason="needs VmHWM and /proc/self/clear_refs")
def test_each_probe_size_gets_a_runner_of_its_own(tmp_path):
    """ORT with the session's own arena (MPRNet's): the same size probed twice reads the same growth. On one
    session the second would grow by ~nothing (the arena kept the first's chunks), as a 256^2 probe after 128^2
    read MIRNet-v2 at 236 MB where a bench case's fresh session takes 318 MB."""
    onnx_conv_chain(tmp_path / "m.onnx", depth=6, input_name="image")
    measured = run_probe(ProbeRequest("ort", "mprnet:deblurring", [384, 384], 16, repeats=1, threads=1,
                                      onnx=str(tmp_path / "m.onnx")))
    first, second = measured["peaks"]
    tensor = 16 * 384 * 384 * 4
    assert first >= 2 * tensor, measured  # the run really grew the arena by full-size intermediates
    assert abs(second - first) <= 0.25 * first, measured


@pytest.mark.skipif(not peak_rss_measurable() or fix_mmap_threshold is None, reason="needs VmHWM and glibc")
def test_the_probe_process_measures_eager_near_its_traced_bytes():
    """SRResNet x2 eager at 64^2 / 128^2 in a fresh process with the mmap threshold fixed: the marginal bytes per
    traced byte come out near 1 (0.8-1.6), where the benchmark process's grown heap read 1.3-2.5x."""
    from deploykit.bench.sources import Target
    from deploykit.bench.state import ModelState

    state = ModelState(Target(get_spec("srresnet:x2")), "cpu")
    measured = run_probe(ProbeRequest("torch", "srresnet:x2", [64, 128], 16, threads=1))
    assert measured["mmap_threshold"] == MMAP_THRESHOLD
    cal = calibrate_factor(measured["peaks"], [state.trace((s, s), 1).peak_bytes for s in (64, 128)], 0.1)
    assert 0.8 <= cal["ratio"] <= 1.6, cal


_HEAP_SCRIPT = """
import sys
import numpy as np
from deploykit.bench.memory_probe import fix_mmap_threshold
from deploykit.util.system import status_bytes
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold() is not None
big = np.ones(24 * 2**20, dtype=np.uint8); del big  # freeing a mapped 24 MiB raises glibc's dynamic threshold
before = status_bytes("VmRSS")
block = np.ones(8 * 2**20, dtype=np.uint8); del block  # 8 MiB: on the heap under the raised threshold
print(status_bytes("VmRSS") - before)
"""


@pytest.mark.skipif(fix_mmap_threshold is None or not peak_rss_measurable(), reason="needs glibc and /proc")
@pytest.mark.parametrize("mode", ["fixed", "dynamic"])
def test_a_fixed_mmap_threshold_returns_freed_tensors_at_once(mode):
    """Why the probe fixes the threshold: under glibc's dynamic one, an 8 MiB block freed after a larger one stays
    resident (heap); fixed at 128 KiB it is unmapped on free, as full-size tensors of large frames are."""
    import subprocess
    import sys

    kept = int(subprocess.run([sys.executable, "-c", _HEAP_SCRIPT, mode], capture_output=True, text=True,
                              check=True).stdout.split()[-1])
    if mode == "fixed":
        assert kept < 2**20
    else:
        assert kept >= 7 * 2**20
