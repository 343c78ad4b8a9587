"""Small building blocks shared by the BasicSR-style SR references (EDSR, RCAN, MSRResNet).

They mirror ``basicsr.archs.arch_util`` in structure and parameter names so that BasicSR checkpoints load
with ``strict=True``; they are re-implemented here so that ``models_src`` does not depend on basicsr.
"""

from __future__ import annotations

import math
from typing import Iterable, Union

import torch
from torch import nn
from torch.nn import init

__all__ = ["default_init_weights", "make_layer", "ResidualBlockNoBN", "Upsample"]


@torch.no_grad()
def default_init_weights(modules: Union[nn.Module, Iterable[nn.Module]], scale: float = 1.0,
                         bias_fill: float = 0.0) -> None:
    """Kaiming-normal init scaled by ``scale`` (BasicSR's choice for residual nets; 0.1 keeps early
    residual branches small). Only conv/linear weights and batch-norm affine terms are touched."""
    if isinstance(modules, nn.Module):
        modules = [modules]
    for module in modules:
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                init.kaiming_normal_(m.weight)
                m.weight.mul_(scale)
                if m.bias is not None:
                    m.bias.fill_(bias_fill)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                init.constant_(m.weight, 1)
                if m.bias is not None:
                    m.bias.fill_(bias_fill)


def make_layer(block: type, num_blocks: int, **kwargs) -> nn.Sequential:
    """Stack ``num_blocks`` fresh instances of ``block`` so keys read ``<name>.<i>.<...>``."""
    return nn.Sequential(*[block(**kwargs) for _ in range(num_blocks)])


class ResidualBlockNoBN(nn.Module):
    """conv3x3 → ReLU → conv3x3, scaled by ``res_scale`` and added to the input (EDSR/MSRResNet block)."""

    def __init__(self, num_feat: int = 64, res_scale: float = 1.0, pytorch_init: bool = False) -> None:
        super().__init__()
        self.res_scale = res_scale
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=True)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        if not pytorch_init:
            default_init_weights([self.conv1, self.conv2], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.relu(self.conv1(x)))
        return x + out * self.res_scale


class Upsample(nn.Sequential):
    """Sub-pixel upsampler: (conv C→4C, PixelShuffle(2)) × log2(scale), or conv C→9C, PixelShuffle(3).

    Being a Sequential, its convs sit at keys ``0``, ``2``, ``4``… exactly as in BasicSR.
    """

    def __init__(self, scale: int, num_feat: int) -> None:
        layers: list[nn.Module] = []
        if scale >= 1 and (scale & (scale - 1)) == 0:
            for _ in range(int(math.log2(scale))):
                layers.append(nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1))
                layers.append(nn.PixelShuffle(2))
        elif scale == 3:
            layers.append(nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1))
            layers.append(nn.PixelShuffle(3))
        else:
            raise ValueError(f"Upsample: scale {scale} is not supported; use a power of 2 or 3.")
        super().__init__(*layers)
