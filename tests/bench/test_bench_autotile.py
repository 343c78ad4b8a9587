"""deploykit.bench.autotile: overlap from the receptive radius, and the tiling's PSNR check at a size that fits."""

from __future__ import annotations

from types import SimpleNamespace

from deploykit.bench import memory
from deploykit.bench.autotile import auto_overlap, check_grid, check_side, tiling_check
from deploykit.bench.sources import Target
from deploykit.bench.state import ModelState
from deploykit.zoo.registry import get_spec


def test_overlap_is_four_radii_capped_at_a_quarter_tile():
    assert auto_overlap(35, 1024, 4) == 140 and auto_overlap(230, 1024, 8) == 256 and auto_overlap(5, 96, 8) == 24


class _QuadraticState:
    """A model whose traced activations grow with pixels squared (global attention, like PANet's)."""

    def __init__(self, spec):
        self.spec, self.tiling_checks = spec, {}

    def trace(self, hw, batch, dtype="fp32"):
        pixels = hw[0] * hw[1]
        return SimpleNamespace(peak_bytes=4 * pixels * pixels)


def test_the_check_runs_at_the_largest_side_whose_whole_frame_fits(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 17 * 2**30)
    monkeypatch.setattr(memory, "host_reserve", lambda total=None: 2**30)
    state = _QuadraticState(get_spec("panet:dn"))
    # 2 x 4 x (side^2)^2 + 256 MiB <= 16 GiB: 160^2 (5.2 GiB) fits, 192^2 (10.9) fits, 224^2 (20.1) does not
    assert check_side(state) == 192
    monkeypatch.setattr(memory, "available_memory", lambda: 2**30 + 2**20)
    assert check_side(state) is None
    skipped = tiling_check(state, 2048, 96, 24)
    assert skipped["psnr_db"] is None and "no whole frame of 64^2 or more fits" in skipped["skipped"]


def test_the_check_grid_keeps_a_real_tile_smaller_than_the_side_and_scales_a_larger_one():
    spec = get_spec("mirnetv2")
    assert check_grid(spec, 112, 2048, 96, 24) == (96, 24)
    assert check_grid(spec, 256, 2048, 1024, 256) == (128, 32)  # the 2048 grid scaled by 1/8


def test_a_model_too_large_at_256_is_checked_smaller_with_its_real_tile(monkeypatch):
    state = ModelState(Target(get_spec("srresnet:x2")), "cpu")
    calls = []
    real_trace = state.trace

    def trace(hw, batch, dtype="fp32"):
        calls.append(hw)
        result = real_trace(hw, batch, dtype)
        return SimpleNamespace(peak_bytes=result.peak_bytes * (10**6 if hw[0] > 96 else 1))  # only 96^2 fits

    monkeypatch.setattr(state, "trace", trace)
    check = tiling_check(state, 2048, 64, 16)
    assert (check["size"], check["tile"], check["overlap"]) == (96, 64, 16)
    assert check["psnr_db"] > 40 and check["tiles"] == 4
    assert calls[0] == (256, 256)  # tried first, refused by the bound
