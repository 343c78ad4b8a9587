"""How the gate cuts one input into runs: the whole image when it fits in memory, else tiles -- the same tiles
through the reference and every candidate, each output pixel compared once.

The tiles come from :func:`deploykit.imaging.tiling.plan_tiles` (contract-aligned starts, reflect padding read
virtually); each tile *owns* the output rows and columns up to the next tile's start, so overlapping tiles never
count a pixel twice and the figures cover exactly the cropped output. ``tile='auto'`` keeps the image whole when
it fits even at the conservative memory bound, else measures the reference's memory the way ``infer --tile auto``
does and picks the largest tile that fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deploykit.errors import InputError
from deploykit.imaging.tiling import (
    FALLBACK_BYTES_PER_PIXEL,
    MemoryEstimate,
    auto_tile,
    fits_whole,
    measure_memory,
    plan_tiles,
    take_region,
)
from deploykit.util.system import available_memory

PREVIEW_SIDE = 384  # output pixels of the longest side of a preview in the HTML report

_MEASURED: dict[tuple, MemoryEstimate] = {}


@dataclass
class Run:
    """One model call: its feed (None for a golden run: loaded when it runs), the output window it owns (y, x, h,
    w in output pixels: the output is cut to h x w), and the golden entry it replays."""

    feed: dict[str, np.ndarray] | None
    window: tuple[int, int, int, int]
    golden: dict | None = None


def preview_step(out_hw: tuple[int, int]) -> int:
    return max(1, -(-max(out_hw) // PREVIEW_SIDE))


def parse_tile(tile) -> int | str | None:
    """'auto', None / 'none' / 0 (always whole) or a positive size."""
    if tile is None or tile == "auto":
        return tile
    text = str(tile).strip().lower()
    if text in ("auto",):
        return "auto"
    if text in ("none", "0", "whole", "off"):
        return None
    try:
        value = int(text)
    except ValueError as exc:
        raise InputError(f"bad --tile '{tile}': use a size in input pixels, 'auto' or 'none'") from exc
    if value < 0:
        raise InputError(f"bad --tile {value}: must be positive")
    return value


def choose_tile(res, contract, tile, reference, feed: dict[str, np.ndarray]) -> int | None:
    """The tile size for one input (None: whole)."""
    tile = parse_tile(tile)
    if tile != "auto":
        return tile
    h, w = res
    batch = next(iter(feed.values())).shape[0]
    bound = MemoryEstimate(FALLBACK_BYTES_PER_PIXEL * batch, 0, "upper bound")
    if fits_whole(h, w, contract, bound):
        return None
    key = id(reference)
    if key not in _MEASURED:  # once per reference runner: its memory per input pixel, as infer measures it

        def run_at(hh: int, ww: int) -> None:
            reference.run({k: take_region(v[:1], 0, hh, 0, ww) for k, v in feed.items()})

        _MEASURED[key] = measure_memory(run_at, contract)
    return auto_tile(h, w, contract, _MEASURED[key], available=available_memory(), batch=batch,
                     overlap=0)


def case_runs(feed: dict[str, np.ndarray], res, contract, tile: int | None) -> tuple[list[Run], str]:
    """(runs, plan description) for one input [N, C, h, w]: one run when whole, else one per tile."""
    h, w = res
    plan = plan_tiles(h, w, contract, tile, overlap=0) if tile else plan_tiles(h, w, contract, None)
    (th, tw), s = plan.tile_shape, contract.scale
    ys, xs = plan.ys.starts, plan.xs.starts
    runs = []
    for iy, ix in plan.positions():
        y0, x0 = ys[iy], xs[ix]
        y_end = min(ys[iy + 1] if iy + 1 < len(ys) else h, h)
        x_end = min(xs[ix + 1] if ix + 1 < len(xs) else w, w)
        part = {k: take_region(v, y0, y0 + th, x0, x0 + tw) for k, v in feed.items()}
        runs.append(Run(part, (y0 * s, x0 * s, (y_end - y0) * s, (x_end - x0) * s)))
    if plan.count == 1:
        padded = plan.padded
        text = "whole" + (f" (padded to {padded[1]}x{padded[0]})" if padded != (h, w) else "")
    else:
        text = f"tiled: {plan.count} tiles {tw}x{th}"
    return runs, text
