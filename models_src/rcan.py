"""RCAN in the BasicSR layout (``basicsr/archs/rcan_arch.py``), for ``RCAN_BIX4-official.pth`` and friends.

The default ``num_block=20`` is the published RCAN (10 groups × 20 RCAB, 64 feat, squeeze 16), as in
BasicSR's test/train YAMLs and the original test scripts; BasicSR's class default of 16 matches no release.

Input and output are RGB in 0..1; mean shift and ×255 happen inside, the mean is a non-persistent buffer
(not in the state_dict, as in BasicSR). No clamp inside the model.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .common import Upsample, make_layer

__all__ = ["ChannelAttention", "RCAB", "ResidualGroup", "RCAN"]


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: GAP → 1x1 C→C/r → ReLU → 1x1 C/r→C → sigmoid, scaling the input.

    The pool sits at ``attention.0``, so the convs are ``attention.1`` / ``attention.3``.
    """

    def __init__(self, num_feat: int, squeeze_factor: int = 16) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(num_feat, num_feat // squeeze_factor, 1, padding=0),
            nn.ReLU(inplace=True),
            nn.Conv2d(num_feat // squeeze_factor, num_feat, 1, padding=0),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class RCAB(nn.Module):
    """Residual channel attention block: conv → ReLU → conv → CA, scaled by ``res_scale``, plus input."""

    def __init__(self, num_feat: int, squeeze_factor: int = 16, res_scale: float = 1) -> None:
        super().__init__()
        self.res_scale = res_scale
        self.rcab = nn.Sequential(
            nn.Conv2d(num_feat, num_feat, 3, 1, 1),
            nn.ReLU(True),
            nn.Conv2d(num_feat, num_feat, 3, 1, 1),
            ChannelAttention(num_feat, squeeze_factor),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rcab(x) * self.res_scale + x


class ResidualGroup(nn.Module):
    """``num_block`` RCABs followed by a 3x3 conv, with a group-level residual."""

    def __init__(self, num_feat: int, num_block: int, squeeze_factor: int = 16, res_scale: float = 1) -> None:
        super().__init__()
        self.residual_group = make_layer(RCAB, num_block, num_feat=num_feat, squeeze_factor=squeeze_factor,
                                         res_scale=res_scale)
        self.conv = nn.Conv2d(num_feat, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.residual_group(x)) + x


class RCAN(nn.Module):
    """Residual Channel Attention Network (BasicSR layout). Defaults = published RCAN BI x4."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_group: int = 10,
                 num_block: int = 20, squeeze_factor: int = 16, upscale: int = 4, res_scale: float = 1,
                 img_range: float = 255., rgb_mean: Sequence[float] = (0.4488, 0.4371, 0.4040)) -> None:
        super().__init__()
        self.img_range = img_range
        self.register_buffer("mean", torch.tensor(rgb_mean, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)

        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = make_layer(ResidualGroup, num_group, num_feat=num_feat, num_block=num_block,
                               squeeze_factor=squeeze_factor, res_scale=res_scale)
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.upsample = Upsample(upscale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(device=x.device, dtype=x.dtype)
        x = (x - mean) * self.img_range
        x = self.conv_first(x)
        res = self.conv_after_body(self.body(x))
        res = res + x
        x = self.conv_last(self.upsample(res))
        return x / self.img_range + mean
