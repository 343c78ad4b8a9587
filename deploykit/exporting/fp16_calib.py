"""Calibration inputs for the automatic FP16 policy (``--fp16-policy auto``): crops of real photos.

A calibration set is a list of :class:`Feed` (named FP32 inputs for one image) plus *growth* feeds: nested crops
of one photo at two or three sizes, from which ``deploykit.exporting.fp16_policy`` fits how each node's values
grow with H·W. Crops are taken from the top half of each photo (``calibration_boxes``); the bottom half is left
for held-out checks (``held_out_boxes``), so one photo can serve both without overlap. UDVD's extra inputs are
the constant degradation maps of ``deploykit.zoo.degradation`` (isotropic blur sigma 1.6, noise sigma 15).
Without any photo a seeded synthetic image (smooth gradients, edges, texture, mild noise) stands in; the
manifest says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploykit.errors import InputError
from deploykit.imaging.images import image_files, read_image
from deploykit.zoo.degradation import degradation_maps
from deploykit.zoo.spec import ModelSpec

CALIB_SIDE = 96  # the calibration crop side (input pixels)
UDVD_BLUR, UDVD_NOISE = "1.6", 15.0

Box = tuple[int, int, int, int]  # (top, left, height, width)


@dataclass
class Feed:
    name: str  # e.g. "noisy_real.png[40:136,49:145]"
    inputs: dict[str, np.ndarray]

    @property
    def hw(self) -> tuple[int, int]:
        first = next(iter(self.inputs.values()))
        return int(first.shape[2]), int(first.shape[3])


def photo(path: str | Path, spec: ModelSpec) -> np.ndarray:
    """[1, C, H, W] float32 in the model's value range (gray models get the luma)."""
    arr = read_image(path).nchw()
    if spec.in_channels == 1 and arr.shape[1] == 3:
        arr = (0.299 * arr[:, :1] + 0.587 * arr[:, 1:2] + 0.114 * arr[:, 2:3]).astype(np.float32)
    low, high = spec.value_range
    return (low + arr[:, : spec.in_channels] * (high - low)).astype(np.float32)


def synthetic_photo(spec: ModelSpec, height: int = 400, width: int = 496, seed: int = 0) -> np.ndarray:
    """A deterministic stand-in photo: gradients, a disc, stripes, blocks and mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 0.3 + 0.4 * (x / width) * (1 - y / height)
    disc = ((x - width * 0.6) ** 2 + (y - height * 0.4) ** 2 < (min(height, width) * 0.2) ** 2) * 0.3
    stripes = 0.1 * np.sin(x / 3.0) * (y > height / 2)
    blocks = 0.15 * (((x // 24) + (y // 24)) % 2) * (x < width / 3)
    chans = [np.clip(base + disc * (c - 1) * 0.5 + stripes + blocks + rng.normal(0, 0.02, (height, width)), 0, 1)
             for c in range(3)]
    arr = np.stack(chans)[None].astype(np.float32)
    if spec.in_channels == 1:
        arr = arr.mean(axis=1, keepdims=True)
    low, high = spec.value_range
    return (low + arr * (high - low)).astype(np.float32)


def _fit(side: int, spec: ModelSpec) -> int:
    return max(spec.min_size, (side // spec.multiple_of) * spec.multiple_of)


def calibration_boxes(height: int, width: int, side: int) -> list[Box]:
    """Two crops in the top half of a photo (left and right)."""
    top = max(0, min(height // 10, height // 2 - side))
    return [(top, max(0, width // 10), side, side), (top, max(0, min(width - side, width // 2 + width // 10)), side, side)]


def held_out_boxes(height: int, width: int, side: int) -> list[Box]:
    """Three crops in the bottom half of a photo, disjoint from :func:`calibration_boxes`."""
    top = max(height // 2, height - side - height // 20)
    step = max(1, (width - side) // 2)
    return [(top, min(k * step, width - side), side, side) for k in range(3)]


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    t, left, h, w = box
    return np.ascontiguousarray(image[:, :, t:t + h, left:left + w])


def feed_for(spec: ModelSpec, image: np.ndarray, name: str) -> Feed:
    """Named inputs for one image: the image, plus UDVD's degradation maps at its size."""
    inputs = {spec.inputs[0].name: image}
    extra = [t.name for t in spec.inputs[1:]]
    if extra:
        maps = degradation_maps(UDVD_BLUR, UDVD_NOISE, height=image.shape[2], width=image.shape[3])
        for t in spec.inputs[1:]:
            if t.name not in maps:
                raise InputError(f"{spec.name}: no calibration map for extra input '{t.name}'")
            inputs[t.name] = maps[t.name]
    return Feed(name, inputs)


def calibration_set(spec: ModelSpec, calib: list[str | Path] | None, side: int = CALIB_SIDE
                    ) -> tuple[list[Feed], list[Feed], str]:
    """(calibration feeds, growth feeds at three nested sizes, a description of the source)."""
    side = _fit(side, spec)
    if calib:
        sources = [(f.name, photo(f, spec)) for f in image_files(list(calib), "--calib")]
        what = "crops of " + ", ".join(n for n, _ in sources)
    else:
        sources = [("synthetic", synthetic_photo(spec))]
        what = "a seeded synthetic image (no --calib given)"
    feeds = []
    for name, image in sources:
        h, w = image.shape[2:]
        if min(h, w) < side:
            raise InputError(f"--calib {name} is {w}x{h}: smaller than the {side}x{side} calibration crop")
        for box in calibration_boxes(h, w, side):
            feeds.append(feed_for(spec, crop(image, box), f"{name}[{box[0]}:{box[0] + side},{box[1]}:{box[1] + side}]"))
    growth = growth_feeds(spec, sources[0][1], sources[0][0], calibration_boxes(*sources[0][1].shape[2:], side)[0])
    return feeds, growth, f"{len(feeds)} crops of {side}x{side} from {what}"


def growth_feeds(spec: ModelSpec, image: np.ndarray, name: str, box: Box) -> list[Feed]:
    """Nested crops sharing one centre at about 1/2, 3/4 and 1x the calibration side."""
    t, left, side, _ = box
    cy, cx = t + side // 2, left + side // 2
    out = []
    for s in sorted({_fit(side // 2, spec), _fit(side * 3 // 4, spec), side}):
        top, lft = max(0, cy - s // 2), max(0, cx - s // 2)
        out.append(feed_for(spec, crop(image, (top, lft, s, s)), f"{name}[{s}x{s} nested]"))
    return out
