"""Restoring one picture: the shape contract's padding, whole or tiled (``--tile auto`` sizes tiles from a memory
measurement), the model's extra inputs (UDVD's degradation maps), the output cropped back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deploykit.errors import InputError
from deploykit.imaging.chop import chop_settings, forward_chop
from deploykit.imaging.tiling import (
    FALLBACK_BYTES_PER_PIXEL,
    Contract,
    MemoryEstimate,
    auto_tile,
    check_tile,
    fits_whole,
    measure_memory,
    padded_size,
    plan_tiles,
    run_tiled,
)
from deploykit.runtime.base import Backend
from deploykit.util.system import available_memory
from deploykit.zoo.degradation import Blur
from deploykit.zoo.sample_inputs import random_inputs
from deploykit.zoo.spec import ModelSpec

DEFAULT_OVERLAP = 32


@dataclass
class Settings:
    """Everything about how one image is run, resolved from the options."""

    tile: int | str | None = "auto"  # int, "auto" or None (whole image)
    overlap: int = DEFAULT_OVERLAP
    batch: int = 1
    blur: Blur | None = None
    noise_level: float | None = None


class Restorer:
    """A backend plus the spec's contract: ``restore(feed) -> output`` with padding/tiling and auto tile size."""

    def __init__(self, spec: ModelSpec, runner: Backend, image_output: str, settings: Settings):
        self.spec, self.runner, self.image_output, self.settings = spec, runner, image_output, settings
        self.contract = Contract.of(spec)
        self.memory: MemoryEstimate | None = None
        if isinstance(settings.tile, int):
            check_tile(settings.tile, settings.overlap, self.contract)

    def _run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.runner.run(feed)[self.image_output]

    def _run_at(self, height: int, width: int) -> None:

        self.runner.run(random_inputs(self.spec, (1, height, width)))

    def measure(self) -> MemoryEstimate:
        if self.memory is None:
            if self.runner.device != "cpu":
                raise InputError(f"--tile auto sizes tiles from host memory; on {self.runner.name} give --tile T")
            key = (self.spec.name, self.runner.name, str(getattr(self.runner, "path", "")),
                   getattr(self.runner, "precision", ""))
            if key not in _MEASURED:
                _MEASURED[key] = measure_memory(self._run_at, self.contract)
            self.memory = _MEASURED[key]
        return self.memory

    def tile_for(self, height: int, width: int) -> int | None:
        tile = self.settings.tile
        if tile != "auto":
            return tile
        profile = getattr(self.runner, "profile", None)  # a TensorRT engine: its profile is what fits
        if profile is not None and hasattr(profile, "max_hw"):
            max_h, max_w = profile.max_hw
            ph, pw = padded_size(height, width, self.contract)
            if ph <= max_h and pw <= max_w:
                return None
            return self.contract.round_down(min(max_h, max_w))
        bound = MemoryEstimate(FALLBACK_BYTES_PER_PIXEL, 0, "upper bound")
        if self.memory is None and fits_whole(height, width, self.contract, bound,
                                              out_channels=self.spec.out_channels):
            return None  # fits whole even at the conservative bound: no need to measure
        est = self.measure()
        return auto_tile(height, width, self.contract, est, available=available_memory(),
                         batch=self.settings.batch, out_channels=self.spec.out_channels, overlap=self.settings.overlap)

    def restore(self, feed: dict[str, np.ndarray], on_start=None, on_tile=None) -> tuple[np.ndarray, str, int]:
        """(output [1, C, sH, sW], plan description, tile count) for one image feed."""
        image = feed[self.spec.inputs[0].name]
        h, w = image.shape[2:]
        chop = chop_settings(self.spec)
        if chop is not None and self.settings.tile == "auto":
            # PANet: the published protocol is the official recursive chop, not blended tiles (docs/panet.md)
            out = forward_chop(lambda x: self._run({**feed, self.spec.inputs[0].name: x}), image, scale=chop.scale,
                               shave=chop.shave, min_size=chop.min_size)
            if on_start:
                on_start(1)
            return out, f"official chop (shave {chop.shave}, min size {chop.min_size})", 1
        tile = self.tile_for(h, w)
        overlap = self.settings.overlap if tile is not None else 0
        plan = plan_tiles(h, w, self.contract, tile, overlap)
        if on_start:
            on_start(plan.count)
        out = run_tiled(self._run, feed, self.contract, tile=tile, overlap=overlap, batch=self.settings.batch,
                        image_input=self.spec.inputs[0].name, on_tile=on_tile)
        return out, plan.describe(), plan.count


def parse_tile(tile: int | str | None) -> int | str | None:
    """``"auto"``, ``None`` / ``"none"`` / ``0`` (whole image) or a positive int."""
    if tile is None or tile == "auto":
        return tile
    if isinstance(tile, str):
        if tile.strip().lower() in ("none", "0", "off", "whole"):
            return None
        if tile.strip().lower() == "auto":
            return "auto"
        try:
            tile = int(tile)
        except ValueError as exc:
            raise InputError(f"bad --tile '{tile}': use a size in pixels, 'auto' or 'none'") from exc
    if tile == 0:
        return None
    if tile < 0:
        raise InputError(f"bad --tile {tile}: must be positive")
    return int(tile)


# The first measurement of a (model, backend, artifact, precision) in this process, reused by later Restorers:
# measuring again costs seconds, and after large runs the allocator reuses freed memory, so the RSS growth it
# measures would understate what a run needs.
_MEASURED: dict[tuple, MemoryEstimate] = {}
