"""Automatic tiling for cases whose whole frame does not fit: the largest tile the calibrated estimate allows,
an overlap from the model's receptive field, and a once-per-model measurement of what tiling costs in PSNR.

* **Receptive radius** (:func:`receptive_radius`): one forward on the meta device with a hook on every Conv2d /
  ConvTranspose2d: radius = sum of ``dilation x (kernel - 1) / 2`` of each convolution times the input's
  downsampling at that layer (a 3x3 conv at 1/4 resolution reaches 4 input pixels). This is an upper bound for a
  chain of convolutions (parallel branches are summed too); global operators (pooling, attention over H*W) reach
  the whole image and are not bounded by any overlap: the PSNR check measures their effect.
* **Overlap** = ``min(tile / 4, 4 x radius)``, rounded up to the contract's multiple: the tiler's zero-weight
  margin is a quarter of the overlap, so 4 x radius makes a convolutional model's tiled output equal to the
  whole-frame one (``tests/imaging/test_tiling.py``); at most a quarter of the tile keeps the tile count sane.
* **PSNR check** (:func:`tiling_check`): once per model, PyTorch FP32 at CHECK_SIZE whole vs tiled with the same
  tile grid scaled down to that size (tile and overlap x CHECK_SIZE / image side). A model whose whole frame does
  not fit at CHECK_SIZE (PANet's attention: 56 GB at 256^2) is checked at the largest side below it that fits
  (PyTorch's coarse bound: 2 x the traced activations), with its real tile and overlap where that tile is
  smaller than the side.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch
from torch import nn

from deploykit.bench.memory import check_memory
from deploykit.bench.plan import PARITY_SEED, BenchSettings
from deploykit.imaging.tiling import plan_tiles, run_tiled
from deploykit.runtime.torch_backend import strict_fp32
from deploykit.verify.parity import psnr
from deploykit.zoo.sample_inputs import random_inputs
from deploykit.zoo.spec import ModelSpec

CHECK_SIZE = 256
PROBE_SIDE = 64


def receptive_radius(meta_module: nn.Module, spec: ModelSpec, side: int = PROBE_SIDE) -> int:
    """Upper bound of the convolutional receptive radius in input pixels (see the module docstring)."""
    side = spec.valid_size(side)
    total = 0.0
    handles = []

    def hook(module, inputs, _out):
        x = inputs[0]
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            return
        nonlocal total
        scale = side / max(1, x.shape[-1])  # > 1 below full resolution, < 1 above it (upsamplers)
        k, d = module.kernel_size[-1], module.dilation[-1]
        total += d * (k - 1) / 2 * scale

    for m in meta_module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            handles.append(m.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            meta_module(*[torch.empty(1, t.channels, side, side, device="meta") for t in spec.inputs])
    finally:
        for h in handles:
            h.remove()
    return math.ceil(total)


def auto_overlap(radius: int, tile: int, multiple_of: int) -> int:
    """min(tile / 4, 4 x radius), rounded up to ``multiple_of`` and never above tile / 4 after rounding."""
    cap = (tile // 4) // multiple_of * multiple_of
    want = -(-4 * radius // multiple_of) * multiple_of
    return max(0, min(cap, want))


def tiled_settings(settings: BenchSettings, tile: int, overlap: int) -> BenchSettings:
    """The run's settings for one automatically tiled case."""
    return dataclasses.replace(settings, tile=tile, overlap=overlap)


CHECK_SIDES = (256, 224, 192, 160, 128, 112, 96, 64)


def check_side(state, size: int = CHECK_SIZE) -> int | None:
    """The largest side <= ``size`` whose whole PyTorch FP32 frame fits (coarse bound on the meta trace), None
    when not even the smallest does."""
    spec = state.spec
    for side in sorted({spec.valid_size(s) for s in CHECK_SIDES if s <= size} | {spec.valid_size(size)},
                       reverse=True):
        if check_memory(state.trace((side, side), 1).peak_bytes, spec=spec).fits:
            return side
    return None


def check_grid(spec: ModelSpec, size: int, image_side: int, tile: int, overlap: int) -> tuple[int, int]:
    """(tile, overlap) of the check at ``size``: the real ones when the tile is smaller than ``size`` (the grid
    then has real tiles), else the grid scaled by size / image_side."""
    if tile < size:
        return tile, overlap
    k = size / image_side
    small_tile = max(spec.valid_size(max(spec.min_size, round(tile * k))), spec.multiple_of * 2)
    return small_tile, min(small_tile // 4, max(0, round(overlap * k / spec.multiple_of) * spec.multiple_of))


def tiling_check(state, image_side: int, tile: int, overlap: int, size: int = CHECK_SIZE) -> dict:
    """PSNR of the tiled vs whole-frame PyTorch FP32 output at ``size`` (or the largest side below it whose whole
    frame fits) with the tile grid of :func:`check_grid`; once per model and full-size grid (the side that fits
    depends on the memory free when it runs, the answer should not)."""
    spec = state.spec
    key = (image_side, tile, overlap, size)
    if key in state.tiling_checks:
        return state.tiling_checks[key]
    side = check_side(state, size)
    if side is None:
        return {"size": None, "psnr_db": None, "skipped": f"no whole frame of {CHECK_SIDES[-1]}^2 or more fits "
                                                            "for the PyTorch FP32 comparison"}
    size = side
    small_tile, small_overlap = check_grid(spec, size, image_side, tile, overlap)
    feed = random_inputs(spec, (1, size, size), seed=PARITY_SEED)
    out_name = state.output_name
    start = time.perf_counter()
    with strict_fp32():
        whole = state.reference.run(feed)[out_name]
        tiled = run_tiled(lambda tiles: state.reference.run(tiles)[out_name], feed, spec, tile=small_tile,
                          overlap=small_overlap)
    plan = plan_tiles(size, size, spec, small_tile, small_overlap)
    result = {"size": size, "tile": small_tile, "overlap": small_overlap, "tiles": plan.count,
              "psnr_db": psnr(whole, tiled), "max_abs": float(abs(whole - tiled).max()),
              "seconds": round(time.perf_counter() - start, 2),
              "method": f"PyTorch FP32 {size}x{size}: whole frame vs {plan.describe()}, the auto-tile grid scaled "
                        f"by {size}/{image_side}; seeded uniform input (seed {PARITY_SEED})"}
    state.tiling_checks[key] = result
    return result
