"""Padding to the shape contract, the tile grid, blending weights and tiled == untiled for local models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deploykit.errors import InputError, ShapeContractError
from deploykit.imaging.tiling import (Contract, MemoryEstimate, auto_tile, axis_tiles, axis_weights, crop,
                              pad_to_contract, padded_size, plan_tiles, ramp, reflect_index, run_tile_sample,
                              run_tiled, sample_indices, take_region)


def _image(h, w, c=3, seed=0):
    return np.random.default_rng(seed).random((1, c, h, w), dtype=np.float32)


def test_reflect_padding_matches_numpy_even_beyond_the_image():
    x = _image(5, 7)
    for h, w in [(8, 8), (12, 16), (20, 9), (5, 7)]:
        ref = np.pad(x, ((0, 0), (0, 0), (0, h - 5), (0, w - 7)), mode="reflect")
        assert np.array_equal(take_region(x, 0, h, 0, w), ref)
    assert reflect_index(4, 1).tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("contract,size,expected", [
    (Contract(multiple_of=4, min_size=4), (61, 70), (64, 72)),
    (Contract(multiple_of=8, min_size=8), (3, 17), (8, 24)),
    (Contract(multiple_of=4, square=True), (10, 30), (32, 32)),
    (Contract(), (13, 11), (13, 11)),
])
def test_pad_then_crop_is_identity(contract, size, expected):
    x = _image(*size)
    assert padded_size(*size, contract) == expected
    padded = pad_to_contract(x, contract)
    assert padded.shape[2:] == expected
    assert np.array_equal(crop(padded, *size), x)


def test_axis_tiles_cover_and_overlap():
    rng = np.random.default_rng(1)
    for _ in range(300):
        m = int(rng.choice([1, 4, 8]))
        tile = m * int(rng.integers(max(2, 16 // m), 40))
        overlap = int(rng.integers(0, tile // 2 + 1))
        if tile - overlap < m:
            continue
        length = m * int(rng.integers(1, 200))
        axis = axis_tiles(length, tile, overlap, m)
        assert axis.size <= max(tile, length) and axis.size % m == 0 or axis.size == length
        assert axis.starts[0] == 0 and axis.starts[-1] + axis.size == length
        assert all(s % m == 0 for s in axis.starts)
        assert all(ov >= overlap for ov in axis.overlaps())


def test_ramps_cross_fade_to_one():
    for n in (1, 2, 7, 16, 64, 130):
        r = ramp(n)
        assert len(r) == n and np.allclose(r + r[::-1], 1.0, atol=1e-12)
        assert (np.diff(r) >= 0).all() and r[: n // 4].max(initial=0) == 0


@pytest.mark.parametrize("length,tile,overlap,m,scale", [(400, 128, 16, 1, 1), (496, 128, 64, 4, 1),
                                                         (203, 64, 32, 1, 2), (129, 128, 32, 1, 4)])
def test_blending_weights_sum_to_one(length, tile, overlap, m, scale):
    axis = axis_tiles(length, tile, overlap, m)
    weights = axis_weights(axis, scale)
    total = np.zeros(length * scale)
    for w, s in zip(weights, axis.starts):
        assert (w >= 0).all()
        total[s * scale:(s + axis.size) * scale] += w
    assert np.allclose(total, 1.0, atol=1e-6)


def test_identity_model_has_no_seams():
    """Blending an identity model's tiles gives back the image: weights sum to 1 in 2-D, every tile lands in place."""
    x = _image(150, 203)
    out = run_tiled(lambda f: f["image"], {"image": x}, Contract(), tile=48, overlap=16, batch=4)
    assert out.shape == x.shape and np.abs(out - x).max() <= 1e-6
    flat = np.full((1, 3, 97, 131), 0.37, np.float32)
    out = run_tiled(lambda f: f["image"], {"image": flat}, Contract(), tile=32, overlap=12)
    assert np.abs(out - 0.37).max() <= 1e-6


def test_a_tile_sample_is_spread_and_holds_exactly_those_tiles():
    assert sample_indices(841, 8) == [0, 120, 240, 360, 480, 600, 720, 840]
    assert sample_indices(5, 8) == [0, 1, 2, 3, 4] and sample_indices(9, 1) == [0]
    x = _image(150, 203)
    plan = plan_tiles(150, 203, Contract(scale=2), 48, 16)
    indices = sample_indices(plan.count, 4)
    out = run_tile_sample(lambda f: 2 * f["image"].repeat(2, axis=2).repeat(2, axis=3), {"image": x},
                          Contract(scale=2), indices, tile=48, overlap=16, batch=3)
    (th, tw), positions = plan.tile_shape, plan.positions()
    assert out.shape == (len(indices), 3, 2 * th, 2 * tw)
    for k, i in enumerate(indices):  # row-major tile i, read from the virtually padded image, as run_tiled does
        iy, ix = positions[i]
        y0, x0 = plan.ys.starts[iy], plan.xs.starts[ix]
        assert np.array_equal(out[k, :, ::2, ::2], 2 * take_region(x, y0, y0 + th, x0, x0 + tw)[0])


class _ConvStack(nn.Module):
    """Purely local: four 3x3 convs (receptive radius 4 input pixels), then an optional x2 pixel shuffle."""

    def __init__(self, scale: int = 1):
        super().__init__()
        layers = [nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                  nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 3 * scale * scale, 3, padding=1)]
        if scale > 1:
            layers.append(nn.PixelShuffle(scale))
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x)


def _runner(model):
    def run(feed):
        with torch.inference_mode():
            return model(torch.from_numpy(feed["image"])).numpy()
    return run


@pytest.mark.parametrize("scale", [1, 2])
def test_tiled_equals_untiled_for_a_local_model(scale):
    torch.manual_seed(0)
    run = _runner(_ConvStack(scale).eval())
    x = _image(150, 203)
    contract = Contract(scale=scale)
    whole = run_tiled(run, {"image": x}, contract)
    assert whole.shape == (1, 3, 150 * scale, 203 * scale)
    tiled = run_tiled(run, {"image": x}, contract, tile=64, overlap=16, batch=3)  # overlap // 4 == radius
    assert tiled.shape == whole.shape
    assert np.abs(tiled - whole).max() <= 1e-5  # float rounding of different conv blockings only
    seams = run_tiled(run, {"image": x}, contract, tile=64, overlap=8)  # margin 2 < radius 4: must differ
    assert np.abs(seams - whole).max() > 1e-3


def test_srresnet_x2_tiled_equals_untiled_with_enough_overlap():
    """MSRResNet x2 is purely convolutional: receptive radius 35 LR pixels (conv_first + 32 body convs +
    upconv1 at LR, two HR convs = 1 LR pixel, bilinear skip). overlap 140 -> zero-weight margin 35."""
    from deploykit.zoo.factory import build_model

    model, spec, _ = build_model("srresnet:x2")
    run = _runner(model)
    x = _image(24, 320, seed=3)
    whole = run_tiled(run, {"image": x}, spec)
    tiled = run_tiled(run, {"image": x}, spec, tile=288, overlap=140)
    assert tiled.shape == whole.shape == (1, 3, 48, 640)
    assert np.abs(tiled - whole).max() <= 1e-5


def test_contract_is_honoured_per_tile():
    seen = []

    def run(feed):
        _, _, h, w = feed["image"].shape
        seen.append((h, w))
        assert h % 8 == 0 and w % 8 == 0 and h == w and h >= 16
        return feed["image"]

    x = _image(45, 70)
    contract = Contract(multiple_of=8, min_size=16, square=True)
    for tile in (None, 32):
        out = run_tiled(run, {"image": x}, contract, tile=tile, overlap=8)
        assert np.abs(out - x).max() <= 1e-6  # padding cropped back, tiles in place
    assert (72, 72) in seen and (32, 32) in seen


def test_constant_maps_are_broadcast_to_tiles():
    x = _image(40, 50)
    code = np.arange(15, dtype=np.float32).reshape(1, 15, 1, 1)

    def run(feed):
        assert feed["kernel"].shape == (feed["image"].shape[0], 15) + feed["image"].shape[2:]
        return feed["image"] + feed["kernel"][:, :3]

    out = run_tiled(run, {"image": x, "kernel": code}, Contract(), tile=32, overlap=8, batch=2)
    assert np.abs(out - (x + code[:, :3])).max() <= 1e-5


def test_bad_tiles_are_refused():
    with pytest.raises(ShapeContractError, match="multiple of 8"):
        plan_tiles(100, 100, Contract(multiple_of=8), tile=60, overlap=8)
    with pytest.raises(InputError, match="half the tile"):
        plan_tiles(100, 100, Contract(), tile=64, overlap=40)
    assert plan_tiles(100, 120, Contract(), tile=None).count == 1
    assert plan_tiles(100, 120, Contract(), tile=128, overlap=16).count == 1


def test_auto_tile_arithmetic():
    est = MemoryEstimate(bytes_per_pixel=10_000, fixed_bytes=0, method="test")
    c = Contract(multiple_of=4)
    assert auto_tile(100, 100, c, est, available=10**9) is None  # 100 MB of 600 MB usable: whole image
    tile = auto_tile(2000, 3000, c, est, available=10**9, batch=2)
    usable = 0.6 * 10**9 - 4 * 3 * 2000 * 3000
    assert tile % 4 == 0 and 2 * tile * tile * 10_000 <= usable < 2 * (tile + 8) ** 2 * 10_000
    with pytest.raises(InputError, match="not enough memory"):
        auto_tile(2000, 3000, c, est, available=16 * 10**7)


def test_measure_memory_sees_activation_growth():
    """A fake model that keeps 4000 bytes per pixel alive: the RSS-slope estimate finds about that.

    Run in a fresh interpreter (as the CLI is): in a long test session the allocator serves these blocks from
    memory earlier tests freed, so peak RSS does not grow and the slope would read as the floor.
    """
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from deploykit.imaging.tiling import Contract, measure_memory\n"
        "def run_at(h, w):\n"
        "    block = np.ones(h * w * 500)\n"  # float64: 4000 bytes per pixel, touched
        "    assert block.sum() > 0\n"
        "est = measure_memory(run_at, Contract(), safety=1.0)\n"
        "print(est.method, est.bytes_per_pixel)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    method, bytes_per_pixel = " ".join(out[:-1]), float(out[-1])
    if method.startswith("fallback"):
        pytest.skip("no /proc/self peak RSS on this platform")
    assert 3000 <= bytes_per_pixel <= 6000
