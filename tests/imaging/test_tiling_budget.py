"""Tiling arithmetic pinned to hand-computed values: reflection indices, overlaps, and the --tile auto budget
(working memory = fixed + bytes/pixel x pixels x batch; usable = fraction x available - output canvas - fixed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deploykit.errors import InputError
from deploykit.imaging import tiling
from deploykit.imaging.tiling import (
    AxisTiles,
    Contract,
    MemoryEstimate,
    auto_tile,
    fits_whole,
    reflect_index,
)

MiB = 2 ** 20


def test_reflect_index_small_lengths_and_default_start():
    assert reflect_index(5, 3).tolist() == [0, 1, 2, 1, 0]  # start 0 by default
    assert reflect_index(3, 3, 4).tolist() == [0, 1, 2]
    assert reflect_index(5, 2).tolist() == [0, 1, 0, 1, 0]
    assert reflect_index(4, 1).tolist() == [0, 0, 0, 0]
    assert reflect_index(6, 4, 2).tolist() == np.pad(np.arange(4), (0, 4), mode="reflect")[2:8].tolist()


def test_axis_overlaps_are_pixels_shared_by_neighbours():
    assert AxisTiles((0, 24, 48), 32, 80).overlaps() == [8, 8]
    assert AxisTiles((0, 20), 32, 52).overlaps() == [12]


def test_memory_estimate_bytes():
    est = MemoryEstimate(bytes_per_pixel=10, fixed_bytes=100, method="m")
    assert est.bytes_for(3, 5) == 250 and est.bytes_for(3, 5, 2) == 400 and est.bytes_for(4, 5, 3) == 700


C = Contract(multiple_of=8, scale=2)
EST = MemoryEstimate(bytes_per_pixel=1000, fixed_bytes=2 * MiB, method="test")


def _need_whole(h, w, est=EST, channels=3, scale=2) -> float:
    """Bytes the whole (already contract-sized) image needs: output canvas + fixed + activations."""
    return 4.0 * channels * h * w * scale * scale + est.fixed_bytes + est.bytes_per_pixel * h * w


def test_fits_whole_boundary_is_inclusive():
    need = _need_whole(64, 96)
    assert fits_whole(64, 96, C, EST, available=int(need) * 2, fraction=0.5)
    assert not fits_whole(64, 96, C, EST, available=int(need) * 2 - 2, fraction=0.5)


def test_fits_whole_defaults_are_three_channels_and_sixty_percent():
    need3, need4 = _need_whole(64, 96), _need_whole(64, 96, channels=4)
    available = int(need3 / 0.6) + 16
    assert available * 0.6 < need4  # would not fit with a 4-channel canvas
    assert fits_whole(64, 96, C, EST, available=available)
    assert not fits_whole(64, 96, C, EST, available=int(need3 / 0.6) - 16)
    assert not fits_whole(64, 96, C, EST, available=int(need3 / 1.6) + 16)  # not 160 %


def test_unknown_available_memory_is_read_from_the_system(monkeypatch):
    need = _need_whole(64, 96)
    monkeypatch.setattr(tiling, "available_memory", lambda: int(need / 0.6) + 16)
    assert fits_whole(64, 96, C, EST) and auto_tile(64, 96, C, EST) is None
    monkeypatch.setattr(tiling, "available_memory", lambda: int(need / 0.6) - 16)
    assert not fits_whole(64, 96, C, EST)
    assert auto_tile(64, 96, C, EST, available=10 ** 12) is None  # given: the system's figure is not used
    monkeypatch.setattr(tiling, "available_memory", lambda: 10 ** 12)
    assert fits_whole(64, 96, C, EST, available=int(need / 0.6) - 16) is False


def _expected_tile(h, w, available, batch=1, channels=3, fraction=0.6, est=EST, c=C) -> int:
    canvas = 4.0 * channels * h * w * c.scale ** 2
    side = math.sqrt((available * fraction - canvas - est.fixed_bytes) / (est.bytes_per_pixel * batch))
    return int(side) // c.multiple_of * c.multiple_of


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_auto_tile_is_the_largest_tile_whose_batch_fits(batch):
    h, w = 2000, 1504  # a budget of exactly 300 x 300 pixels per tile of the batch after canvas and fixed
    available = int((4.0 * 3 * h * w * 4 + EST.fixed_bytes + 300 * 300 * 1000 * batch) / 0.6)
    tile = auto_tile(h, w, C, EST, available=available, batch=batch)
    assert tile == _expected_tile(h, w, available, batch) == 296  # 300 rounded down to a multiple of 8
    assert tile == auto_tile(h, w, C, EST, available=available, batch=batch, out_channels=3, overlap=32,
                             fraction=0.6, min_tile=64)
    if batch == 1:
        assert auto_tile(h, w, C, EST, available=available) == 296


def test_auto_tile_floor_and_its_message():
    h, w = 2000, 1504
    canvas = 4.0 * 3 * h * w * 4
    # the floor: max(64, 2 * overlap 32 + multiple_of 8) = 72; a budget for exactly 72 x 72 is enough
    available = int((canvas + EST.fixed_bytes + 72 * 72 * 1000) / 0.6) + 8
    assert auto_tile(h, w, C, EST, available=available) == 72
    short = int((canvas + EST.fixed_bytes + 70 * 70 * 1000) / 0.6)
    budget = short * 0.6 - canvas - EST.fixed_bytes
    with pytest.raises(InputError) as info:
        auto_tile(h, w, C, EST, available=short)
    assert str(info.value) == (
        f"not enough memory for a 72x72 tile (about {EST.bytes_for(72, 72, 1) / MiB:.0f} MiB needed, "
        f"{budget / MiB:.0f} MiB usable of {short / MiB:.0f} MiB available); "
        "give a smaller --tile / --batch-tiles or free memory")
    assert "about 7 MiB needed, 5 MiB usable of 241 MiB available" in str(info.value)
    with pytest.raises(InputError, match=r"for a 104x104 tile \(about 23 MiB needed, "):  # 2*48+8; batch 2
        auto_tile(h, w, C, EST, available=short, overlap=48, batch=2)
    nothing = int(canvas / 0.6)  # the canvas alone eats the budget
    with pytest.raises(InputError, match=r"MiB needed, 0 MiB usable of"):
        auto_tile(h, w, C, EST, available=nothing)
