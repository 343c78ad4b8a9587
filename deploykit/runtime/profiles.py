"""Optimisation profiles: the batch and H x W ranges an engine (TensorRT, ORT's TensorRT EP) is built for.

A profile is plain data shared by the runners that bind inputs to it and by ``deploykit.trt`` that plans builds.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploykit.util.sizes import Size, fmt_wxh
from deploykit.zoo.spec import ModelSpec


@dataclass(frozen=True)
class Profile:
    """One optimisation profile: batch 1/1/max_batch and the same H, W for every image-shaped input."""

    min_hw: Size
    opt_hw: Size
    max_hw: Size
    max_batch: int = 1

    @property
    def static(self) -> bool:
        return self.min_hw == self.opt_hw == self.max_hw and self.max_batch == 1

    def shapes(self, spec: ModelSpec) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """Per input: (min, opt, max) NCHW; UDVD's kernel and noise maps share the image's H and W."""
        return {t.name: ((1, t.channels, *self.min_hw), (1, t.channels, *self.opt_hw),
                         (self.max_batch, t.channels, *self.max_hw)) for t in spec.inputs}

    def tag(self) -> str:
        """File-name fragment (sizes W x H): 'b1_512x512' or 'b4_min256x256_opt512x512_max1024x1024'."""
        if self.min_hw == self.opt_hw == self.max_hw:
            return f"b{self.max_batch}_{fmt_wxh(self.max_hw)}"
        return f"b{self.max_batch}_min{fmt_wxh(self.min_hw)}_opt{fmt_wxh(self.opt_hw)}_max{fmt_wxh(self.max_hw)}"

    def to_dict(self, spec: ModelSpec | None = None) -> dict:
        data = {"batch": [1, 1, self.max_batch], "min_hw": list(self.min_hw), "opt_hw": list(self.opt_hw),
                "max_hw": list(self.max_hw), "layout": "NCHW", "hw_order": "[height, width]"}
        if spec is not None:
            data["inputs"] = {name: {"min": list(a), "opt": list(b), "max": list(c)}
                              for name, (a, b, c) in self.shapes(spec).items()}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Profile":
        return cls(tuple(data["min_hw"]), tuple(data["opt_hw"]), tuple(data["max_hw"]), int(data["batch"][2]))

    def contains(self, batch: int, height: int, width: int) -> bool:
        return (1 <= batch <= self.max_batch and self.min_hw[0] <= height <= self.max_hw[0]
                and self.min_hw[1] <= width <= self.max_hw[1])


def engine_parity_shapes(profile: Profile) -> list[tuple[int, int, int]]:
    """Parity inside the profile: batch 1 at the minimum size, and batch min(2, max) at the optimum size."""
    shapes = [(1, *profile.min_hw), (min(2, profile.max_batch), *profile.opt_hw)]
    return list(dict.fromkeys(shapes))
