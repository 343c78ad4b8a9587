"""Test inputs that respect a model's contract: random images (never zeros) and UDVD's degradation maps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deploykit.zoo.degradation import CODE_DIM, SIGMA_RANGE, Blur, blur_code
from deploykit.zoo.spec import ModelSpec

Shape = tuple[int, int, int]  # (batch, height, width)


def random_inputs(spec: ModelSpec, shape: Shape, seed: int = 0) -> dict[str, np.ndarray]:
    """Named float32 inputs: uniform images in the value range, smooth-ish per-pixel maps for extra inputs."""
    batch, height, width = shape
    rng = np.random.default_rng(seed)
    low, high = spec.value_range
    feed = {}
    for k, tensor in enumerate(spec.inputs):
        dims = (batch, tensor.channels, height, width)
        if k == 0:
            feed[tensor.name] = rng.uniform(low, high, dims).astype(np.float32)
        elif tensor.name == "noise":
            # a noise-level map: one sigma per image (sigma/255 in [0, 50/255]) plus small spatial variation
            level = rng.uniform(0.0, 50.0 / 255.0, (batch, 1, 1, 1))
            feed[tensor.name] = (level + rng.normal(0, 0.01, dims)).astype(np.float32)
        elif tensor.name == "kernel" and tensor.channels == CODE_DIM:
            # the PCA code of a random anisotropic Gaussian blur (what infer feeds UDVD), constant per image as
            # SRMD/UDVD stretch it over the LR grid; N(0, 1) codes would be ~5x larger than any real blur's
            lo, hi = SIGMA_RANGE
            codes = [blur_code(Blur(float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)),
                                    float(rng.uniform(0.0, 180.0)))) for _ in range(batch)]
            code = np.stack(codes).reshape(batch, tensor.channels, 1, 1)
            feed[tensor.name] = np.broadcast_to(code, dims).astype(np.float32).copy()
        else:
            code = rng.normal(0.0, 1.0, (batch, tensor.channels, 1, 1))  # an unknown per-image code
            feed[tensor.name] = np.broadcast_to(code, dims).astype(np.float32).copy()
    return feed


def parity_shapes(spec: ModelSpec, base: int = 32,
                  static_hw: Sequence[int] | None = None) -> tuple[Shape, list[Shape]]:
    """(export example, parity shapes): batch 2 non-square example; parity shapes differ from it in N, H, W.
    An export with a fixed size (``--static``, ``static_hw``) is checked at that size, batch 1 and 2."""
    if static_hw:
        hw = (int(static_hw[0]), int(static_hw[1]))
        return (2, *hw), [(1, *hw), (2, *hw)]
    step = max(spec.multiple_of, 8)
    h = spec.valid_size(base)
    example = (2, h, h + 2 * step)
    checks = [(1, h + step, h + 3 * step), (2, h + 2 * step, h + 2 * step)]
    return example, checks
