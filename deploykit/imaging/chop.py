"""The official recursive ``forward_chop`` of EDSR-PyTorch-style code trees (PANet, EDSR, RCAN), as a function.

PANet's published numbers come from ``Model.forward_chop`` (``*/code/model/__init__.py`` of
SHI-Labs/Pyramid-Attention-Networks), because its attention is quadratic in H*W and only sees inside a patch:

* split the image into 4 overlapping quadrants of ``(h//2 + shave) x (w//2 + shave)`` (top-left, top-right,
  bottom-left, bottom-right); for SR, ``h_size += h_size % scale`` (the official rounding, kept as written);
* if a quadrant's area is below ``min_size`` run the model on it, else chop the quadrant the same way (recursion);
* paste the four outputs back, each contributing only its own quarter (``h//2``, ``w//2`` split; the shave is
  discarded). Note the split always happens at least once: an image that fits is still cut into 4 quadrants.

Official settings: shave 10; ``min_size`` 6800 for colour denoising (DN_RGB), 6400 for CAR, demosaicing and SR;
the restoration trees force scale 1. ``ModelSpec.chop`` records them; :func:`chop_for` reads them.

Deviation (only where the official code breaks): when a quadrant would be larger than the image
(``h//2 + shave > h``, i.e. a side below ~20 px) the official slicing wraps around with a negative start and the
paste raises a shape error; here the image is run whole instead. ``whole_if_fits=True`` additionally runs any
image whose area is below ``min_size`` whole (not the official behaviour; attention then sees the whole image).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

Array = torch.Tensor | np.ndarray
Model = Callable[[Array], Array]


@dataclass(frozen=True)
class ChopSettings:
    scale: int = 1
    shave: int = 10
    min_size: int = 6400


def _quadrant_size(h: int, w: int, scale: int, shave: int) -> tuple[int, int, int, int]:
    h_half, w_half = h // 2, w // 2
    h_size, w_size = h_half + shave, w_half + shave
    h_size += h_size % scale
    w_size += w_size % scale
    return h_half, w_half, h_size, w_size


def _cat(parts: list[Array]) -> Array:
    return torch.cat(parts, dim=0) if isinstance(parts[0], torch.Tensor) else np.concatenate(parts, axis=0)


def _split(batch: Array, size: int) -> list[Array]:
    if isinstance(batch, torch.Tensor):
        return list(batch.split(size, dim=0))
    return [batch[i:i + size] for i in range(0, batch.shape[0], size)]


def _empty_like(ref: Array, shape: tuple[int, ...]) -> Array:
    return ref.new_empty(shape) if isinstance(ref, torch.Tensor) else np.empty(shape, dtype=ref.dtype)


def forward_chop(model: Model, x: Array, *, scale: int = 1, shave: int = 10, min_size: int = 6400,
                 patches_per_call: int = 1, whole_if_fits: bool = False) -> Array:
    """Run ``model`` on ``x`` [N, C, H, W] by the official recursive 4-way chop; returns [N, C', H*s, W*s].

    ``x`` and the model's output are torch tensors or numpy arrays (any backend's runner fits).
    ``patches_per_call`` (1, 2 or 4) batches quadrants into one call, as the official ``n_GPUs`` does; results
    are the same because the models treat samples independently.
    """
    if patches_per_call not in (1, 2, 4):
        raise ValueError("patches_per_call must be 1, 2 or 4")
    b, _, h, w = x.shape
    if whole_if_fits and h * w < min_size:
        return model(x)
    h_half, w_half, h_size, w_size = _quadrant_size(h, w, scale, shave)
    if h_size > h or w_size > w:  # official code fails here (negative slice start); run whole
        return model(x)
    patches = [
        x[:, :, 0:h_size, 0:w_size],
        x[:, :, 0:h_size, (w - w_size):w],
        x[:, :, (h - h_size):h, 0:w_size],
        x[:, :, (h - h_size):h, (w - w_size):w],
    ]
    if w_size * h_size < min_size:
        outs: list[torch.Tensor] = []
        for i in range(0, 4, patches_per_call):
            group = patches[i:i + patches_per_call]
            outs.extend(_split(model(_cat(group)), b))
    else:
        outs = [forward_chop(model, p, scale=scale, shave=shave, min_size=min_size,
                             patches_per_call=patches_per_call) for p in patches]

    h, w, h_half, w_half = scale * h, scale * w, scale * h_half, scale * w_half
    h_size, w_size = scale * h_size, scale * w_size
    out = _empty_like(outs[0], (b, outs[0].shape[1], h, w))
    out[:, :, 0:h_half, 0:w_half] = outs[0][:, :, 0:h_half, 0:w_half]
    out[:, :, 0:h_half, w_half:w] = outs[1][:, :, 0:h_half, (w_size - w + w_half):w_size]
    out[:, :, h_half:h, 0:w_half] = outs[2][:, :, (h_size - h + h_half):h_size, 0:w_half]
    out[:, :, h_half:h, w_half:w] = outs[3][:, :, (h_size - h + h_half):h_size, (w_size - w + w_half):w_size]
    return out


def leaf_shapes(height: int, width: int, *, scale: int = 1, shave: int = 10, min_size: int = 6400,
                whole_if_fits: bool = False) -> list[tuple[int, int]]:
    """The (H, W) of every model call :func:`forward_chop` makes for one image, in call order (no tensors).

    Useful to size a TensorRT optimisation profile or a benchmark: with the official settings every call is
    below ``min_size`` pixels (about 80x80 at most) whatever the image size.
    """
    if whole_if_fits and height * width < min_size:
        return [(height, width)]
    _, _, h_size, w_size = _quadrant_size(height, width, scale, shave)
    if h_size > height or w_size > width:
        return [(height, width)]
    if h_size * w_size < min_size:
        return [(h_size, w_size)] * 4
    return leaf_shapes(h_size, w_size, scale=scale, shave=shave, min_size=min_size) * 4


def chop_settings(spec) -> ChopSettings | None:
    """The official chop of a zoo spec (``ModelSpec.chop``), or None when the model does not use one."""
    chop = getattr(spec, "chop", None)
    if not chop:
        return None
    return ChopSettings(scale=spec.scale, shave=chop.get("shave", 10), min_size=chop.get("min_size", 6400))


def chop_for(spec, model: Model, **overrides) -> Model:
    """``model`` wrapped in the spec's official chop (unchanged if the spec has none): what infer/bench run."""
    settings = chop_settings(spec)
    if settings is None:
        return model
    kwargs = {"scale": settings.scale, "shave": settings.shave, "min_size": settings.min_size, **overrides}

    def run(x: torch.Tensor) -> torch.Tensor:
        return forward_chop(model, x, **kwargs)

    return run
