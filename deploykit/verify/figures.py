"""Parity figures of one case accumulated run by run (a whole image, or the same tiles through reference and
candidate): max abs, mean abs, PSNR, NaN/Inf count, the worst region, and a small preview of the difference.

The figures match :func:`deploykit.verify.parity.compare` on a whole image (same PSNR definition and cap); a
tiled case counts every tile's valid output pixels, overlaps included, so memory stays one tile's outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from deploykit.verify.parity import FP32_MAX_ABS, PSNR_CAP_DB

WORST_BLOCK = 32  # output pixels: the side of the window the worst region is picked from


@dataclass(frozen=True)
class Tolerance:
    """What a case must reach: max abs <= ``max_abs`` and/or PSNR >= ``min_psnr_db``; never a NaN/Inf."""

    max_abs: float | None = None
    min_psnr_db: float | None = None

    def describe(self) -> str:
        parts = ([f"max abs <= {self.max_abs:g}"] if self.max_abs is not None else []) + \
                ([f"PSNR >= {self.min_psnr_db:g} dB"] if self.min_psnr_db is not None else [])
        return " and ".join(parts + ["no NaN/Inf"])

    def to_dict(self) -> dict:
        return {"max_abs": self.max_abs, "min_psnr_db": self.min_psnr_db}


def default_tolerances(manifest: dict, spec, *, max_abs: float | None = None,
                       min_psnr_db: float | None = None) -> dict[str, Tolerance]:
    """Per precision: the manifest's ``tolerances`` section when it has one, else the spec's (FP32 max abs 1e-4,
    FP16 the model's PSNR floor); ``max_abs`` / ``min_psnr_db`` given on the command line replace both."""
    recorded = manifest.get("tolerances", {})
    out = {}
    for precision, default in (("fp32", Tolerance(FP32_MAX_ABS, None)),
                               ("fp16", Tolerance(None, spec.fp16.min_psnr_db))):
        r = recorded.get(precision, {})
        tol = Tolerance(r.get("max_abs", default.max_abs), r.get("min_psnr_db", default.min_psnr_db))
        if max_abs is not None or min_psnr_db is not None:
            tol = Tolerance(max_abs, min_psnr_db)
        out[precision] = tol
    return out


@dataclass
class Worst:
    """The output window (y, x, h, w) with the largest mean abs difference, and its crops [C, h, w]."""

    mean_abs: float = -1.0
    box: tuple[int, int, int, int] = (0, 0, 0, 0)
    reference: np.ndarray | None = None
    candidate: np.ndarray | None = None


@dataclass
class Figures:
    """Running sums over runs; ``preview`` holds the max abs difference per ``step`` x ``step`` output block."""

    out_hw: tuple[int, int]
    step: int = 1
    peak: float = 1.0  # the value range's width
    count: int = 0
    sum_abs: float = 0.0
    sum_sq: float = 0.0
    max_abs: float = 0.0
    nonfinite: int = 0
    worst: Worst = field(default_factory=Worst)
    preview: np.ndarray | None = None

    def __post_init__(self):
        h, w = self.out_hw
        self.preview = np.zeros((-(-h // self.step), -(-w // self.step)), np.float32)

    def add(self, reference: np.ndarray, candidate: np.ndarray, y: int = 0, x: int = 0) -> None:
        """Add the outputs [N, C, h, w] of one run placed at output pixel (y, x) (already cut to the image)."""
        if reference.shape != candidate.shape:
            raise ValueError(f"candidate returned {candidate.shape}, the reference {reference.shape}")
        finite = np.isfinite(candidate)
        self.nonfinite += int(candidate.size - np.count_nonzero(finite))
        diff = np.abs(reference.astype(np.float64) - np.where(finite, candidate, 0.0).astype(np.float64))
        diff = np.where(finite, diff, 0.0)
        self.count += diff.size
        self.sum_abs += float(diff.sum())
        self.sum_sq += float(np.square(diff).sum())
        self.max_abs = max(self.max_abs, float(diff.max(initial=0.0)))
        per_pixel = diff.max(axis=(0, 1))  # [h, w]
        self._pool(per_pixel, y, x)
        self._worst(diff.mean(axis=(0, 1)), reference, candidate, y, x)

    def _pool(self, per_pixel: np.ndarray, y: int, x: int) -> None:
        s = self.step
        rows = [i for i in range(per_pixel.shape[0]) if (y + i) % s == 0 or i == 0]
        cols = [j for j in range(per_pixel.shape[1]) if (x + j) % s == 0 or j == 0]
        block = np.maximum.reduceat(np.maximum.reduceat(per_pixel, rows, axis=0), cols, axis=1)
        by, bx = [(y + i) // s for i in rows], [(x + j) // s for j in cols]
        region = self.preview[np.ix_(by, bx)]
        self.preview[np.ix_(by, bx)] = np.maximum(region, block)

    def _worst(self, mean_map: np.ndarray, reference: np.ndarray, candidate: np.ndarray, y: int, x: int) -> None:
        b = WORST_BLOCK
        h, w = mean_map.shape
        bh, bw = min(b, h), min(b, w)
        nh, nw = h // bh, w // bw
        blocks = mean_map[:nh * bh, :nw * bw].reshape(nh, bh, nw, bw).mean(axis=(1, 3))
        iy, ix = np.unravel_index(int(np.argmax(blocks)), blocks.shape)
        if float(blocks[iy, ix]) > self.worst.mean_abs:
            y0, x0 = int(iy) * bh, int(ix) * bw
            self.worst = Worst(float(blocks[iy, ix]), (y + y0, x + x0, bh, bw),
                               reference[0, :, y0:y0 + bh, x0:x0 + bw].copy(),
                               candidate[0, :, y0:y0 + bh, x0:x0 + bw].copy())

    @property
    def mean_abs(self) -> float:
        return self.sum_abs / self.count if self.count else math.inf

    @property
    def psnr_db(self) -> float:
        if not self.count:
            return 0.0
        mse = self.sum_sq / self.count
        if mse == 0.0:
            return PSNR_CAP_DB
        return min(PSNR_CAP_DB, 10.0 * math.log10(self.peak * self.peak / mse))

    def passed(self, tolerance: Tolerance) -> bool:
        if self.nonfinite or not self.count:
            return False
        if tolerance.max_abs is not None and not self.max_abs <= tolerance.max_abs:
            return False
        return tolerance.min_psnr_db is None or self.psnr_db >= tolerance.min_psnr_db


class Sampler:
    """A small preview of a large picture put together piece by piece: every ``step``-th pixel of each piece
    [C, h, w] placed at (y, x) of a ``hw`` picture (what the HTML report shows; one piece's memory at a time)."""

    def __init__(self, hw: tuple[int, int], step: int):
        self.hw, self.step = hw, max(1, step)
        self.canvas: np.ndarray | None = None

    def put(self, piece: np.ndarray, y: int, x: int) -> None:
        s = self.step
        oy, ox = (-y) % s, (-x) % s
        sub = piece[:, oy::s, ox::s]
        if self.canvas is None:
            self.canvas = np.zeros((piece.shape[0], -(-self.hw[0] // s), -(-self.hw[1] // s)), np.float32)
        ty, tx = (y + oy) // s, (x + ox) // s
        h, w = min(sub.shape[1], self.canvas.shape[1] - ty), min(sub.shape[2], self.canvas.shape[2] - tx)
        self.canvas[:, ty:ty + h, tx:tx + w] = sub[:, :h, :w]

    @property
    def image(self) -> np.ndarray | None:
        return self.canvas
