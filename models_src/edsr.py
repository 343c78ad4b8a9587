"""EDSR in the BasicSR layout (``basicsr/archs/edsr_arch.py``), for BasicSR's converted official weights.

Released configurations (``EDSR_{M,L}x{2,3,4}_..._DIV2K_official``):

* M (baseline): ``num_feat=64, num_block=16, res_scale=1`` (the constructor defaults).
* L: ``num_feat=256, num_block=32, res_scale=0.1``.

Input and output are RGB in 0..1. Internally the DIV2K mean is subtracted and the range scaled to 0..255,
which equals the original EDSR ``MeanShift`` with ``rgb_range=255``. The mean is *not* in the state_dict
(BasicSR keeps it as a plain attribute), so it is a non-persistent buffer here. No clamp inside the model.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .common import ResidualBlockNoBN, Upsample, make_layer

__all__ = ["EDSR"]


class EDSR(nn.Module):
    """Enhanced Deep Residual Network for single-image SR (BasicSR layout). Defaults = EDSR-M x4."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 16,
                 upscale: int = 4, res_scale: float = 1, img_range: float = 255.,
                 rgb_mean: Sequence[float] = (0.4488, 0.4371, 0.4040)) -> None:
        super().__init__()
        self.img_range = img_range
        # Non-persistent: follows .to()/.cuda() but stays out of the checkpoint, like BasicSR's attribute.
        self.register_buffer("mean", torch.tensor(rgb_mean, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)

        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = make_layer(ResidualBlockNoBN, num_block, num_feat=num_feat, res_scale=res_scale,
                               pytorch_init=True)
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
