"""VapSR (VAst-receptive-field Pixel attention SR), reference for the official ``zhoumumu/VapSR`` weights.

Module and parameter names follow the official ``code/vapsr.py`` so that ``params_ema`` of the released
``VapSR_X2/X3/X4.pth`` and ``VapSR-S.pth`` load with ``strict=True``. Constructor defaults are the released
x4 model (48 feat, 64 attention channels, 21 blocks); the official class defaults (64/23) match no release.

Released configurations:

========  ========  ========  =========  ===========  =====
variant   num_feat  d_atten   num_block  conv_groups  scale
========  ========  ========  =========  ===========  =====
x2        48        64        20         1            2
x3        48        64        20         1            3
x4        48        64        21         1            4
S (x4)    32        64        11         2            4
========  ========  ========  =========  ===========  =====

Input and output are RGB in 0..1; the model has no mean shift, no image skip and no clamp.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Attention", "VAB", "pixelshuffle", "pixelshuffle_single", "vapsr"]


class Attention(nn.Module):
    """Large-kernel pixel attention: pointwise → depthwise 5x5 → dilated depthwise 5x5, gating the input.

    The checkpoints list the keys as depthwise, depthwise_dilated, pointwise, but the released forward runs
    pointwise first; that order is the one that reproduces the published quality (checked on real weights).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pointwise = nn.Conv2d(dim, dim, 1)
        self.depthwise = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.depthwise_dilated = nn.Conv2d(dim, dim, 5, stride=1, padding=6, groups=dim, dilation=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.pointwise(x)
        attn = self.depthwise(attn)
        attn = self.depthwise_dilated(attn)
        return x * attn


class VAB(nn.Module):
    """Vast-receptive-field attention block: 1x1 → GELU → attention → 1x1, residual, channel LayerNorm."""

    def __init__(self, d_model: int, d_atten: int) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(d_model, d_atten, 1)
        self.activation = nn.GELU()  # exact (erf) GELU, as released
        self.atten_branch = Attention(d_atten)
        self.proj_2 = nn.Conv2d(d_atten, d_model, 1)
        # LayerNorm over channels only ("pixel norm"), applied in NHWC layout.
        self.pixel_norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.proj_1(x)
        x = self.activation(x)
        x = self.atten_branch(x)
        x = self.proj_2(x)
        x = x + shortcut
        x = x.permute(0, 2, 3, 1)  # N, H, W, C
        x = self.pixel_norm(x)
        return x.permute(0, 3, 1, 2).contiguous()  # N, C, H, W


def pixelshuffle(in_channels: int, out_channels: int, upscale_factor: int = 4) -> nn.Sequential:
    """x4 upsampler: conv feat→64, PS(2), LReLU, conv 16→out·4, PS(2).

    One PixelShuffle instance sits at indices 1 and 4 (it has no parameters), so the convs are at keys
    ``0`` and ``3`` as in the released checkpoints. ``upscale_factor`` is accepted but fixed at 4.
    """
    upconv1 = nn.Conv2d(in_channels, 64, 3, 1, 1)
    pixel_shuffle = nn.PixelShuffle(2)
    upconv2 = nn.Conv2d(16, out_channels * 4, 3, 1, 1)
    lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)
    return nn.Sequential(upconv1, pixel_shuffle, lrelu, upconv2, pixel_shuffle)


def pixelshuffle_single(in_channels: int, out_channels: int, upscale_factor: int = 2) -> nn.Sequential:
    """x2/x3 upsampler: conv feat→56, LReLU, conv 56→out·s², PS(s); convs at keys ``0`` and ``2``."""
    upconv1 = nn.Conv2d(in_channels, 56, 3, 1, 1)
    lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)
    upconv2 = nn.Conv2d(56, out_channels * upscale_factor * upscale_factor, 3, 1, 1)
    pixel_shuffle = nn.PixelShuffle(upscale_factor)
    return nn.Sequential(upconv1, lrelu, upconv2, pixel_shuffle)


class vapsr(nn.Module):  # noqa: N801 - lower-case name kept from the official code / BasicSR registry
    """VapSR network. Defaults = released VapSR x4 (342,220 params)."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, scale: int = 4, num_feat: int = 48,
                 num_block: int = 21, d_atten: int = 64, conv_groups: int = 1) -> None:
        super().__init__()
        self.scale = scale
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[VAB(num_feat, d_atten) for _ in range(num_block)])
        # conv_groups=2 for VapSR-S
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1, groups=conv_groups)
        if scale == 4:
            self.upsampler = pixelshuffle(num_feat, num_out_ch, upscale_factor=scale)
        else:
            self.upsampler = pixelshuffle_single(num_feat, num_out_ch, upscale_factor=scale)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(feat)
        body_out = self.conv_body(self.body(feat))
        feat = feat + body_out
        return self.upsampler(feat)
