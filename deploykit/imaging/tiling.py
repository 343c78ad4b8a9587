"""Shape-contract padding, overlapping tiles with smooth blending, in-place assembly, ``--tile auto`` sizing.

Padding (what the official demos do): the image is reflect-padded on the right and bottom to the model's
``multiple_of`` (and ``min_size``; a square-only model gets a square), run, and the output is cropped back to
``scale x`` the original size. The padding is never materialised: a tile (or the whole image) is read from the
*virtually* padded image through reflected indices, so padding and tiling agree exactly.

Tiling: tiles of one size (a multiple of ``multiple_of``, at most ``tile``) are spread evenly over each axis so
neighbours overlap by at least ``overlap`` input pixels; tile starts are multiples of ``multiple_of`` so pooling
grids of down-sampling models line up with the untiled run. Each tile output is blended with separable weights:
across an overlap of ``ov`` output pixels the weight is 0 over the first quarter (the band next to the tile's
inner edge, where a conv net sees zero padding instead of the neighbour), a raised-cosine ramp over the middle
half, 1 over the last quarter; the two neighbours' ramps sum to 1 exactly, and the weights are normalised per
axis so that every output pixel's weights sum to 1. Consequences:

- no seams: the transition is a smooth cross-fade across half the overlap;
- a purely local model (receptive radius ``r`` input pixels) gives the untiled result up to float rounding when
  ``overlap // 4 >= r`` (the zero-weight band hides every pixel that saw a tile edge);
- models with global operators (MIRNet's context softmax and SKFF pooling, MPRNet's channel attention) cannot be
  equal; ``benchmarks/tiling_psnr.md`` measures how close they get.

Assembly: tiles run in batches of ``batch`` and are accumulated in place into a float32 canvas of the *output*
size (the weights are pre-normalised, so no weight canvas is needed). Working memory is the canvas plus one batch
of tiles and its activations, whatever the image size.

``--tile auto``: :func:`measure_memory` runs the model at two small sizes and takes the growth of the process's
peak resident memory (``VmHWM`` in ``/proc/self/status``, reset between runs via ``/proc/self/clear_refs``) per
input pixel; :func:`auto_tile` then picks the largest tile whose batch fits ``fraction`` of the available memory
(``MemAvailable`` in ``/proc/meminfo``, capped by a cgroup limit) after the output canvas, or no tiling when the
whole padded image fits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from deploykit.errors import InputError, ShapeContractError
from deploykit.util.system import available_memory, peak_rss_measurable, probe_peak_rss

RunFn = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class Contract:
    """What a model needs from an input size, and how much bigger its output is."""

    multiple_of: int = 1
    min_size: int = 1
    square: bool = False
    scale: int = 1

    @classmethod
    def of(cls, spec) -> "Contract":
        """From a ModelSpec (or anything with the same attributes), or pass a Contract through."""
        if isinstance(spec, Contract):
            return spec
        return cls(spec.multiple_of, spec.min_size, spec.square, spec.scale)

    def round_up(self, n: int) -> int:
        return -(-max(n, self.min_size) // self.multiple_of) * self.multiple_of

    def round_down(self, n: int) -> int:
        return n // self.multiple_of * self.multiple_of


def padded_size(height: int, width: int, contract) -> tuple[int, int]:
    """The smallest (H, W) >= (height, width) that meets the contract (right/bottom padding only)."""
    c = Contract.of(contract)
    h, w = c.round_up(height), c.round_up(width)
    if c.square:
        h = w = max(h, w)
    return h, w


def reflect_index(count: int, length: int, start: int = 0) -> np.ndarray:
    """Indices ``start .. start+count-1`` folded into ``[0, length)`` by reflection without edge repeat.

    The same mapping as ``numpy.pad(mode="reflect")`` and ``torch`` reflect padding, extended periodically so a
    pad larger than the image (a tiny image and a large ``min_size``) still works.
    """
    idx = np.arange(start, start + count)
    if length == 1:
        return np.zeros_like(idx)
    period = 2 * (length - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= length, period - idx, idx)


def take_region(x: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Rows y0:y1, columns x0:x1 of ``x`` [N, C, H, W] reflect-padded right/bottom as far as needed.

    A map with H = W = 1 (a per-image constant such as UDVD's kernel code) is broadcast to the region.
    """
    n, c, h, w = x.shape
    if h == 1 and w == 1:
        return np.ascontiguousarray(np.broadcast_to(x, (n, c, y1 - y0, x1 - x0)))
    rows = slice(y0, y1) if y1 <= h else reflect_index(y1 - y0, h, y0)  # slices where no reflection is needed
    cols = slice(x0, x1) if x1 <= w else reflect_index(x1 - x0, w, x0)
    return np.ascontiguousarray(x[:, :, rows][:, :, :, cols])


def pad_to_contract(x: np.ndarray, contract) -> np.ndarray:
    """Reflect-pad [N, C, H, W] right/bottom to the contract (a materialised copy; tiling never needs one)."""
    h, w = padded_size(x.shape[2], x.shape[3], contract)
    return take_region(x, 0, h, 0, w)


def crop(y: np.ndarray, height: int, width: int, scale: int = 1) -> np.ndarray:
    """Crop an output back to ``scale`` x the original input size."""
    return y[..., : height * scale, : width * scale]


# --- tile grid and blending weights ------------------------------------------------------------------------

@dataclass(frozen=True)
class AxisTiles:
    """Tile starts along one axis (input pixels of the padded image), the common tile size, the padded length."""

    starts: tuple[int, ...]
    size: int
    length: int

    def overlaps(self) -> list[int]:
        return [a + self.size - b for a, b in zip(self.starts, self.starts[1:])]


def axis_tiles(length: int, tile: int | None, overlap: int, multiple_of: int = 1, min_size: int = 1) -> AxisTiles:
    """Spread equal tiles over ``length`` so neighbours overlap by >= ``overlap``; starts are multiples of
    ``multiple_of``. The size is the smallest multiple of ``multiple_of`` (<= ``tile``) that needs no more tiles
    than ``tile`` itself would, which keeps every overlap close to the one asked for."""
    m = multiple_of
    if tile is None or tile >= length:
        return AxisTiles((0,), length, length)
    if tile % m or tile - overlap < m or overlap < 0:
        raise ShapeContractError(f"tile {tile} with overlap {overlap} does not fit multiple_of {m}")

    def size_for(n: int) -> int:
        need = math.ceil((length + (n - 1) * overlap) / n)
        return max(-(-need // m) * m, -(-min_size // m) * m)

    n = max(2, math.ceil((length - overlap) / (tile - overlap)))
    size = size_for(n)
    while n <= length:
        size = min(size, tile)
        span = length - size
        starts = [int(round(k * span / (n - 1) / m)) * m for k in range(n)]
        steps = [b - a for a, b in zip(starts, starts[1:])]
        if min(steps) > 0 and size - max(steps) >= overlap:
            return AxisTiles(tuple(starts), size, length)
        if size + m <= tile:
            size += m
        else:
            n += 1
            size = size_for(n)
    raise ShapeContractError(f"cannot tile {length} pixels with tile {tile} and overlap {overlap}")


def ramp(overlap: int) -> np.ndarray:
    """Rising weights across an overlap: 0 for a quarter, raised cosine over the middle half, 1 for a quarter.

    ``ramp(n) + ramp(n)[::-1] == 1`` exactly in real arithmetic (the two neighbours cross-fade)."""
    q = overlap // 4
    r = overlap - 2 * q
    middle = 0.5 - 0.5 * np.cos(np.pi * (np.arange(r) + 0.5) / r)
    return np.concatenate([np.zeros(q), middle, np.ones(q)])


def axis_weights(axis: AxisTiles, scale: int = 1, margins: bool = True) -> list[np.ndarray]:
    """Per-tile 1-D blending weights at output resolution, normalised so they sum to 1 at every position."""
    n, size = len(axis.starts), axis.size * scale

    def build(with_margins: bool) -> tuple[list[np.ndarray], np.ndarray]:
        raws, total = [], np.zeros(axis.length * scale)
        for k, start in enumerate(axis.starts):
            w = np.ones(size)
            if k > 0:
                ov = (axis.starts[k - 1] + axis.size - start) * scale
                w[:ov] *= ramp(ov) if with_margins else _plain_ramp(ov)
            if k < n - 1:
                ov = (start + axis.size - axis.starts[k + 1]) * scale
                w[size - ov:] *= (ramp(ov) if with_margins else _plain_ramp(ov))[::-1]
            raws.append(w)
            total[start * scale:start * scale + size] += w
        return raws, total

    raws, total = build(margins)
    if (total <= 0).any():  # overlaps so uneven that a zero band is not covered by a neighbour: no margins
        raws, total = build(False)
    return [(w / total[s * scale:s * scale + size]).astype(np.float32) for w, s in zip(raws, axis.starts)]


def _plain_ramp(overlap: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)


@dataclass(frozen=True)
class TilePlan:
    """How one image is cut: original and padded size, tiles per axis, output scale."""

    height: int
    width: int
    padded: tuple[int, int]
    ys: AxisTiles
    xs: AxisTiles
    scale: int
    overlap: int

    @property
    def count(self) -> int:
        return len(self.ys.starts) * len(self.xs.starts)

    @property
    def tile_shape(self) -> tuple[int, int]:
        return self.ys.size, self.xs.size

    @property
    def tiled(self) -> bool:
        return self.count > 1 or self.tile_shape != self.padded

    def positions(self) -> list[tuple[int, int]]:
        return [(iy, ix) for iy in range(len(self.ys.starts)) for ix in range(len(self.xs.starts))]

    def describe(self) -> str:
        if self.count == 1:
            return "whole image"
        th, tw = self.tile_shape
        return f"{self.count} tiles {tw}x{th} (overlap >= {self.overlap})"


def check_tile(tile: int, overlap: int, contract) -> None:
    """InputError / ShapeContractError for a tile size or overlap the model cannot use."""
    c = Contract.of(contract)
    if tile < c.min_size or tile % c.multiple_of:
        raise ShapeContractError(f"tile {tile} breaks the shape contract: it must be a multiple of {c.multiple_of} "
                                 f"and at least {c.min_size}")
    if overlap < 0 or overlap > tile // 2:
        raise InputError(f"overlap {overlap} must be between 0 and half the tile ({tile // 2})")
    if tile - overlap < c.multiple_of:
        raise InputError(f"tile {tile} minus overlap {overlap} must be at least multiple_of {c.multiple_of}")


def plan_tiles(height: int, width: int, contract, tile: int | None = None, overlap: int = 32) -> TilePlan:
    """Tile plan for one image; ``tile=None`` (or a tile covering the padded image) runs it whole."""
    c = Contract.of(contract)
    ph, pw = padded_size(height, width, c)
    if tile is not None:
        check_tile(tile, overlap, c)
    ys = axis_tiles(ph, tile, overlap, c.multiple_of, c.min_size)
    xs = ys if c.square else axis_tiles(pw, tile, overlap, c.multiple_of, c.min_size)
    return TilePlan(height, width, (ph, pw), ys, xs, c.scale, overlap if tile is not None else 0)


def run_tiled(run: RunFn, feed: dict[str, np.ndarray], contract, *, tile: int | None = None, overlap: int = 32,
              batch: int = 1, image_input: str | None = None,
              on_tile: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Run ``run`` over the (virtually) padded image, tile by tile, and return the cropped output [1, C, sH, sW].

    ``feed`` holds [1, C, H, W] arrays (the image first unless ``image_input`` names it) and optional
    per-image constant maps [1, C, 1, 1]; ``run`` takes a feed of [B, C, th, tw] tiles and returns the image
    output [B, C', s*th, s*tw]. ``on_tile(done, total)`` is called after each batch.
    """
    c = Contract.of(contract)
    h, w = _one_image(feed, image_input).shape[2:]
    plan = plan_tiles(h, w, c, tile, overlap)
    wy, wx = axis_weights(plan.ys, c.scale), axis_weights(plan.xs, c.scale)
    (th, tw), s = plan.tile_shape, c.scale
    canvas = None
    positions = plan.positions()
    done = 0
    for chunk, out in _tile_outputs(run, feed, plan, positions, batch):
        if canvas is None:
            canvas = np.zeros((1, out.shape[1], h * s, w * s), np.float32)
        for b, (iy, ix) in enumerate(chunk):
            oy, ox = plan.ys.starts[iy] * s, plan.xs.starts[ix] * s
            hh, ww = min(th * s, h * s - oy), min(tw * s, w * s - ox)
            if hh <= 0 or ww <= 0:
                continue
            weight = wy[iy][:hh, None] * wx[ix][None, :ww]
            canvas[0, :, oy:oy + hh, ox:ox + ww] += out[b, :, :hh, :ww] * weight
        done += len(chunk)
        if on_tile:
            on_tile(done, len(positions))
    return canvas


def sample_indices(count: int, n: int) -> list[int]:
    """``n`` tile indices spread evenly over ``count`` (first and last included), all of them when n >= count."""
    if n >= count:
        return list(range(count))
    if n <= 1:
        return [0]
    return sorted({round(i * (count - 1) / (n - 1)) for i in range(n)})


def run_tile_sample(run: RunFn, feed: dict[str, np.ndarray], contract, indices: list[int], *,
                    tile: int | None = None, overlap: int = 32, batch: int = 1,
                    image_input: str | None = None) -> np.ndarray:
    """The raw outputs [n, C', s*th, s*tw] of the tiles ``indices`` (row-major) of :func:`run_tiled`'s plan, no
    blending: every tile has the same shape and work, so timing a spread sample of them times the whole run."""
    c = Contract.of(contract)
    h, w = _one_image(feed, image_input).shape[2:]
    plan = plan_tiles(h, w, c, tile, overlap)
    positions = plan.positions()
    chosen = [positions[i] for i in indices]
    return np.concatenate([out for _, out in _tile_outputs(run, feed, plan, chosen, batch)])


def _one_image(feed: dict[str, np.ndarray], image_input: str | None) -> np.ndarray:
    image = feed[image_input or next(iter(feed))]
    if image.ndim != 4 or image.shape[0] != 1:
        raise InputError(f"run_tiled takes one image [1, C, H, W], got {tuple(image.shape)}")
    return image


def _tile_outputs(run: RunFn, feed: dict[str, np.ndarray], plan: TilePlan, positions: list[tuple[int, int]],
                  batch: int):
    """(positions of the batch, its output) for ``positions`` in batches of ``batch``, shapes checked."""
    (th, tw), s = plan.tile_shape, plan.scale
    for first in range(0, len(positions), max(1, batch)):
        chunk = positions[first:first + max(1, batch)]
        tiles = {}
        for key, arr in feed.items():
            parts = [take_region(arr, plan.ys.starts[iy], plan.ys.starts[iy] + th,
                                 plan.xs.starts[ix], plan.xs.starts[ix] + tw) for iy, ix in chunk]
            tiles[key] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        out = np.asarray(run(tiles))
        if out.ndim != 4 or out.shape[0] != len(chunk) or out.shape[2:] != (th * s, tw * s):
            raise ShapeContractError(f"model returned {tuple(out.shape)} for a {len(chunk)}x{th}x{tw} tile batch; "
                                     f"expected [{len(chunk)}, C, {th * s}, {tw * s}] (scale {s})")
        yield chunk, out


# --- memory: --tile auto -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MemoryEstimate:
    """Working memory of one model run: ``fixed_bytes + bytes_per_pixel * N*H*W`` (input pixels)."""

    bytes_per_pixel: float
    fixed_bytes: float
    method: str
    detail: str = ""

    def bytes_for(self, height: int, width: int, batch: int = 1) -> float:
        return self.fixed_bytes + self.bytes_per_pixel * height * width * batch


FALLBACK_BYTES_PER_PIXEL = 64 * 1024  # no /proc, and the no-measurement shortcut: ~3x every zoo model (docs/infer.md)


def measure_memory(run_at: Callable[[int, int], None], contract, sizes: tuple[int, int] = (48, 96),
                   safety: float = 1.5) -> MemoryEstimate:
    """Peak resident memory growth per input pixel, measured by running the model at two small sizes.

    ``run_at(h, w)`` runs the model once on an [1, C, h, w] input. A warm-up run at the smallest size comes first
    (thread pools, kernel caches); then for each size the peak RSS (VmHWM, reset before the run) minus the RSS
    before the first measured run. The slope between the two sizes is activation memory per pixel, the intercept
    is fixed overhead; ``safety`` scales the slope (allocator fragmentation, larger sizes keep more alive).
    Without /proc (not Linux) a conservative constant is returned instead.
    """
    c = Contract.of(contract)
    small, large = (padded_size(s, s, c)[0] for s in sizes)
    if large <= small:
        large = small + 2 * max(c.multiple_of, 8)
    if not peak_rss_measurable():
        return MemoryEstimate(FALLBACK_BYTES_PER_PIXEL, 0, "fallback constant (no /proc/self peak RSS here)")
    start = time.perf_counter()
    peaks = probe_peak_rss(lambda side: run_at(side, side), (small, large), warm=c.round_up(16))
    slope = (peaks[1] - peaks[0]) / (large * large - small * small)
    if slope <= 0:  # allocator reuse hid the growth: fall back to the average over the large run
        slope = peaks[1] / (large * large)
    fixed = max(0.0, peaks[0] - slope * small * small)
    return MemoryEstimate(slope * safety, fixed, "peak RSS slope",
                          f"{small}^2 -> {peaks[0] / 2**20:.0f} MiB, {large}^2 -> {peaks[1] / 2**20:.0f} MiB "
                          f"({time.perf_counter() - start:.1f} s, x{safety:g} safety)")


def _budget(height: int, width: int, c: Contract, estimate: MemoryEstimate, available: int, out_channels: int,
            fraction: float) -> float:
    ph, pw = padded_size(height, width, c)
    canvas = 4.0 * out_channels * ph * pw * c.scale * c.scale
    return available * fraction - canvas - estimate.fixed_bytes


def fits_whole(height: int, width: int, contract, estimate: MemoryEstimate, *, available: int | None = None,
               out_channels: int = 3, fraction: float = 0.6) -> bool:
    """Whether the whole padded image runs in ``fraction`` of available memory (with its output canvas)."""
    c = Contract.of(contract)
    available = available_memory() if available is None else available
    ph, pw = padded_size(height, width, c)
    return _budget(height, width, c, estimate, available, out_channels, fraction) >= estimate.bytes_per_pixel * ph * pw


def auto_tile(height: int, width: int, contract, estimate: MemoryEstimate, *, available: int | None = None,
              batch: int = 1, out_channels: int = 3, overlap: int = 32, fraction: float = 0.6,
              min_tile: int = 64) -> int | None:
    """Largest tile whose batch fits ``fraction`` of available memory after the output canvas; ``None`` when the
    whole padded image fits (no tiling). InputError when not even ``min_tile`` fits."""
    c = Contract.of(contract)
    available = available_memory() if available is None else available
    if fits_whole(height, width, c, estimate, available=available, out_channels=out_channels, fraction=fraction):
        return None
    ph, pw = padded_size(height, width, c)
    budget = _budget(height, width, c, estimate, available, out_channels, fraction)
    side = math.sqrt(max(budget, 0.0) / (estimate.bytes_per_pixel * max(1, batch)))
    tile = c.round_down(int(side))
    floor = max(c.round_up(min_tile), c.round_up(2 * overlap + c.multiple_of))
    if tile < floor:
        raise InputError(f"not enough memory for a {floor}x{floor} tile (about "
                         f"{estimate.bytes_for(floor, floor, batch) / 2**20:.0f} MiB needed, "
                         f"{max(budget, 0) / 2**20:.0f} MiB usable of {available / 2**20:.0f} MiB available); "
                         "give a smaller --tile / --batch-tiles or free memory")
    return min(tile, max(ph, pw))
