"""What the parity gate feeds: real images fitted to each resolution, or seeded random inputs, as model feeds.

A picture is fitted to a resolution ``(h, w)`` by scaling it (bicubic) until it covers ``h x w`` and cutting the
centre out; the shape contract's padding (reflect right/bottom to ``multiple_of``) is then applied the way
``infer`` applies it, virtually, tile by tile (:mod:`deploykit.imaging.tiling`). The model's extra inputs are the
ones ``infer`` builds (:func:`deploykit.zoo.degradation.extra_inputs`). ``batch`` N stacks the picture with its
flips (original, left-right, up-down, both, ...), so every batch item differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploykit.errors import InputError
from deploykit.imaging.images import read_image, resize_plane, rgb_to_ycbcr
from deploykit.util.sizes import Size, fmt_wxh
from deploykit.zoo.degradation import extra_inputs
from deploykit.zoo.sample_inputs import random_inputs
from deploykit.zoo.spec import ModelSpec


@dataclass
class CaseInput:
    """One (source x resolution): ``feed`` holds unpadded [N, C, h, w] images and [N, C, 1, 1] extra maps."""

    source: str  # file name, or "random (seed S)"
    kind: str  # "image" | "random" | "golden"
    res: Size  # (height, width) of the model input before padding
    feed: dict[str, np.ndarray]
    fit: str  # how the source became this input
    batch: int = 1

    @property
    def key(self) -> str:
        return f"{self.source}@{fmt_wxh(self.res)}"


def fit(rgb: np.ndarray, res: Size) -> tuple[np.ndarray, str]:
    """[C, H, W] -> [C, h, w]: scaled to cover (bicubic) and centre-cropped; the description says what was done."""
    (h, w), (H, W) = res, rgb.shape[1:]
    scale = max(h / H, w / W)
    note = "native size"
    if scale != 1.0:
        sh, sw = max(h, round(H * scale)), max(w, round(W * scale))
        rgb = np.stack([resize_plane(p, sh, sw) for p in rgb])
        note = f"scaled {scale:.3g}x from {W}x{H}"
    y0, x0 = (rgb.shape[1] - h) // 2, (rgb.shape[2] - w) // 2
    if rgb.shape[1:] != (h, w):
        note += f", centre {w}x{h} cut"
    return np.ascontiguousarray(rgb[:, y0:y0 + h, x0:x0 + w], np.float32), note


def _batch(x: np.ndarray, batch: int) -> np.ndarray:
    """[C, h, w] -> [batch, C, h, w]: the picture, then its flips."""
    flips = [x, x[:, :, ::-1], x[:, ::-1, :], x[:, ::-1, ::-1]]
    return np.ascontiguousarray(np.stack([flips[k % 4] for k in range(batch)]), np.float32)


def _channels(spec: ModelSpec, rgb: np.ndarray, path: Path) -> np.ndarray:
    if spec.in_channels == 3:
        return rgb
    if spec.in_channels == 1:  # a Y-channel model gets the picture's luma, as infer feeds it
        return rgb_to_ycbcr(rgb)[:1]
    raise InputError(f"{spec.name} takes {spec.in_channels}-channel input that the gate cannot build from {path}; "
                     "run it without --images (seeded random inputs)")


def image_cases(spec: ModelSpec, paths: list[Path], resolutions: list[Size] | None, batch: int) -> list[CaseInput]:
    """Every (image x resolution); without resolutions each image at its own size."""
    extras = extra_inputs(spec, None, None)
    cases = []
    for path in paths:
        picture = read_image(path)
        rgb = _channels(spec, picture.rgb, path)
        for res in resolutions or [(picture.height, picture.width)]:
            x, note = fit(rgb, res)
            feed = {spec.inputs[0].name: _batch(x, batch)}
            feed.update({k: np.repeat(v, batch, axis=0) for k, v in extras.items()})
            cases.append(CaseInput(path.name, "image", res, feed, note, batch))
    return cases


def random_cases(spec: ModelSpec, resolutions: list[Size], batch: int, seed: int) -> list[CaseInput]:
    """Seeded uniform images (and degradation maps) at each resolution: what the export's own check feeds."""
    cases = []
    for k, res in enumerate(resolutions):
        feed = random_inputs(spec, (batch, *res), seed=seed + k)
        cases.append(CaseInput(f"random (seed {seed + k})", "random", res, feed, "seeded uniform random", batch))
    return cases
