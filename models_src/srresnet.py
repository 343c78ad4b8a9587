"""MSRResNet (BasicSR's modified SRResNet, ``basicsr/archs/srresnet_arch.py``).

Released/test configs (``test_MSRResNet_x{2,3,4}.yml``) use 64 feat, 16 blocks, upscale 2/3/4 — the
constructor defaults with the matching ``upscale``. Input/output RGB 0..1, no mean shift, no clamp; the
network predicts a residual over a bilinear upsampling of the input.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .common import ResidualBlockNoBN, default_init_weights, make_layer

__all__ = ["MSRResNet"]


class MSRResNet(nn.Module):
    """SRResNet without BN: conv + LReLU, 16 residual blocks, sub-pixel upsampling, bilinear skip."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 16,
                 upscale: int = 4) -> None:
        super().__init__()
        if upscale not in (2, 3, 4):
            raise ValueError(f"MSRResNet: upscale {upscale} is not supported; use 2, 3 or 4.")
        self.upscale = upscale

        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = make_layer(ResidualBlockNoBN, num_block, num_feat=num_feat)

        if upscale in (2, 3):
            self.upconv1 = nn.Conv2d(num_feat, num_feat * upscale * upscale, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(upscale)
        else:
            self.upconv1 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
            self.upconv2 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(2)

        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)

        # BasicSR's training init (scaled Kaiming); irrelevant once a checkpoint is loaded.
        default_init_weights([self.conv_first, self.upconv1, self.conv_hr, self.conv_last], 0.1)
        if upscale == 4:
            default_init_weights(self.upconv2, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.lrelu(self.conv_first(x))
        out = self.body(feat)
        out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))
        if self.upscale == 4:
            out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.conv_last(self.lrelu(self.conv_hr(out)))
        base = F.interpolate(x, scale_factor=self.upscale, mode="bilinear", align_corners=False)
        return out + base
