"""UDVD (Xu et al., "Unified Dynamic Convolutional Network for Variational Degradations", arXiv 2004.06965).

There is no official code or released weights. This file follows the public reference re-implementation summarised
in ``shared/reference/udvd.md`` (x2 super-resolution, sizes fixed), including its parameter names and the tap order
of :class:`PixelConv`, so that any weights trained with that reference load strictly and give the same numbers.

Parameter count (all convs have bias)::

    head                    19*128*9+128                                   =    22,016
    body (15 ResBlocks)     15 * 2 * (128*128*9+128)                       = 4,427,520
    UpDyConv                image_conv 448+2,320+4,640 = 7,408
                            feat_kernel 160*100*9+100 = 144,100
                            feat_residual (160*64*9+64) + (16*3*9+3) = 92,659  =   244,167
    ComDyConv1, ComDyConv2  image_conv 7,408; feat_conv 32*128+128 = 4,224
                            feat_kernel 160*25*9+25 = 36,025
                            feat_residual (160*16*9+16) + 435 = 23,491
                            = 71,148 each                                   =   142,296
    total                                                                   = 4,835,999
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PixelConv", "ResBlock", "UpDyConv", "ComDyConv", "UDVD"]


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=True)


class PixelConv(nn.Module):
    """Per-pixel dynamic convolution with optional sub-pixel (pixel-shuffle) upsampling.

    ``forward(feature [N,C,H,W], kernel [N,Kc,H,W]) -> [N,C,sH,sW]``. In depthwise mode (the one UDVD uses)
    ``Kc = k*k*s*s`` with odd ``k``, and before the pixel shuffle::

        pre[n, c*s^2 + j, y, x] = sum_{a,b} P[n, c, y+a, x+b] * kernel[n, (b*k + a)*s^2 + j, y, x]

    where ``P`` is ``feature`` zero-padded by ``(k-1)/2``. The tap index ``b*k + a`` is column-offset-major because
    the reference unfolds H then W and swaps the two window axes; this implementation does exactly that (6-D
    ``unfold`` view, 5-D batched matmul), since it is the numerical reference. Export-friendly rewrites live
    elsewhere.

    Non-depthwise mode (``depthwise=False``: one kernel per output channel applied to a single input channel)
    only has agreeing matmul shapes in the reference when ``C == 1``, where it equals depthwise mode; ``C > 1``
    raises ``ValueError`` rather than inventing semantics.
    """

    def __init__(self, scale: int = 1, depthwise: bool = True):
        super().__init__()
        if int(scale) != scale or scale < 1:
            raise ValueError(f"PixelConv scale must be a positive integer, got {scale!r}")
        self.scale = int(scale)
        self.depthwise = bool(depthwise)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, depthwise={self.depthwise}"

    def kernel_size_for(self, kernel_channels: int, feature_channels: int) -> int:
        """Spatial size ``k`` implied by the kernel channel count; raises ``ValueError`` if it is not valid."""
        s2 = self.scale * self.scale
        # In non-depthwise mode the reference divides by C as well (out channels per tap); C is 1 when valid.
        per_tap_out = s2 if self.depthwise else s2 * feature_channels
        taps, rem = divmod(kernel_channels, per_tap_out)
        k = math.isqrt(taps) if taps > 0 else 0
        if rem != 0 or taps == 0 or k * k != taps or k % 2 == 0:
            raise ValueError(
                f"PixelConv(scale={self.scale}, depthwise={self.depthwise}) needs kernel channels = k*k*{per_tap_out} "
                f"with odd integer k (e.g. {9 * per_tap_out} for k=3, {25 * per_tap_out} for k=5); "
                f"got {kernel_channels}"
            )
        return k

    def forward(self, feature: Tensor, kernel: Tensor) -> Tensor:
        if feature.dim() != 4 or kernel.dim() != 4:
            raise ValueError(f"PixelConv expects 4-D feature and kernel, got {tuple(feature.shape)} and "
                             f"{tuple(kernel.shape)}")
        n, c, h, w = feature.shape
        nk, kc, hk, wk = kernel.shape
        if (n, h, w) != (nk, hk, wk):
            raise ValueError(f"PixelConv feature {tuple(feature.shape)} and kernel {tuple(kernel.shape)} must share "
                             f"batch and spatial size")
        if not self.depthwise and c != 1:
            raise ValueError(
                f"PixelConv non-depthwise mode supports only C == 1 (got C = {c}): in the reference implementation "
                f"the matmul shapes do not agree for C > 1. UDVD uses depthwise mode (depthwise=True)."
            )
        k = self.kernel_size_for(kc, c)
        s2 = self.scale * self.scale
        # Reference: in_k = C, out_k = 1 (depthwise); in_k = 1, out_k = C (non-depthwise, C == 1 here).
        in_k, out_k = (c, 1) if self.depthwise else (1, c)
        pad = (k - 1) // 2

        # Windows: [N,C,H,W,k(a: row),k(b: col)] -> [N,H,W,C,k(b),k(a)] -> [N,H,W,in_k,k*k], tap = b*k + a.
        windows = F.pad(feature, [pad, pad, pad, pad]).unfold(2, k, 1).unfold(3, k, 1)
        windows = windows.permute(0, 2, 3, 1, 5, 4).reshape(n, h, w, in_k, k * k)

        # Kernels: channel (tap*s^2*out_k + j) -> [N,H,W,k*k, s^2*out_k].
        weights = kernel.permute(0, 2, 3, 1).reshape(n, h, w, k * k, s2 * out_k)

        # [N,H,W,in_k,s^2*out_k] -> [N,in_k,s^2*out_k,H,W] -> channel c*s^2 + j.
        out = torch.matmul(windows, weights)
        out = out.permute(0, 3, 4, 1, 2).reshape(n, -1, h, w)
        if self.scale > 1:
            out = F.pixel_shuffle(out, self.scale)
        return out


class ResBlock(nn.Module):
    """EDSR-style residual block without BN: ``x + res_scale * conv(relu(conv(x)))``."""

    def __init__(self, channels: int = 128, res_scale: float = 0.1):
        super().__init__()
        self.conv = nn.Sequential(_conv3x3(channels, channels), nn.ReLU(inplace=True), _conv3x3(channels, channels))
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) * self.res_scale + x


def _image_conv() -> nn.Sequential:
    """Shallow image encoder shared in shape by all dynamic-conv modules: 3 -> 16 -> 16 -> 32."""
    return nn.Sequential(_conv3x3(3, 16), nn.ReLU(inplace=True), _conv3x3(16, 16), nn.ReLU(inplace=True),
                         _conv3x3(16, 32))


class UpDyConv(nn.Module):
    """Upsampling dynamic conv: a per-pixel 5x5 kernel per sub-pixel, applied to the LR image, plus a residual."""

    def __init__(self, channels: int = 128, scale: int = 2, dyn_kernel_size: int = 5):
        super().__init__()
        s2 = scale * scale
        self.image_conv = _image_conv()
        self.feat_residual = nn.Sequential(
            _conv3x3(channels + 32, 16 * s2), nn.ReLU(inplace=True), nn.PixelShuffle(scale), _conv3x3(16, 3)
        )
        self.feat_kernel = _conv3x3(channels + 32, dyn_kernel_size * dyn_kernel_size * s2)
        self.pixel_conv = PixelConv(scale=scale, depthwise=True)

    def forward(self, image: Tensor, feat: Tensor) -> Tensor:
        cat = torch.cat([self.image_conv(image), feat], dim=1)
        output = self.pixel_conv(image, self.feat_kernel(cat))
        return output + self.feat_residual(cat)


class ComDyConv(nn.Module):
    """Same-size dynamic conv refining the HR image with LR features brought up by pixel shuffle."""

    def __init__(self, channels: int = 128, scale: int = 2, dyn_kernel_size: int = 5):
        super().__init__()
        self.image_conv = _image_conv()
        self.feat_conv = nn.Sequential(nn.PixelShuffle(scale), nn.Conv2d(channels // (scale * scale), channels, 1))
        self.feat_residual = nn.Sequential(_conv3x3(channels + 32, 16), nn.ReLU(inplace=True), _conv3x3(16, 3))
        self.feat_kernel = _conv3x3(channels + 32, dyn_kernel_size * dyn_kernel_size)
        self.pixel_conv = PixelConv(scale=1, depthwise=True)

    def forward(self, image: Tensor, feat: Tensor) -> Tensor:
        cat = torch.cat([self.image_conv(image), self.feat_conv(feat)], dim=1)
        output = self.pixel_conv(image, self.feat_kernel(cat))
        return output + self.feat_residual(cat)


class UDVD(nn.Module):
    """UDVD x2 SR. ``forward(image [N,3,H,W], kernel [N,15,H,W], noise [N,1,H,W])``.

    Returns ``(output1, output2, output3)``, each ``[N,3,2H,2W]``; ``output3`` is the final image. The defaults
    are the only configuration the reference defines; the arguments exist to document the fixed sizes.
    """

    def __init__(self, in_channels: int = 3, kernel_code_channels: int = 15, noise_channels: int = 1,
                 channels: int = 128, num_blocks: int = 15, res_scale: float = 0.1, scale: int = 2,
                 dyn_kernel_size: int = 5):
        super().__init__()
        if in_channels != 3:
            raise ValueError("UDVD's dynamic-conv modules are defined for 3-channel images")
        self.scale = scale
        self.head = _conv3x3(in_channels + kernel_code_channels + noise_channels, channels)
        self.body = nn.Sequential(*[ResBlock(channels, res_scale) for _ in range(num_blocks)])
        self.UpDyConv = UpDyConv(channels, scale, dyn_kernel_size)
        self.ComDyConv1 = ComDyConv(channels, scale, dyn_kernel_size)
        self.ComDyConv2 = ComDyConv(channels, scale, dyn_kernel_size)

    def forward(self, image: Tensor, kernel: Tensor, noise: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        head = self.head(torch.cat([image, kernel, noise], dim=1))
        body_out = self.body(head) + head
        output1 = self.UpDyConv(image, body_out)
        output2 = self.ComDyConv1(output1, body_out)
        output3 = self.ComDyConv2(output2, body_out)
        return output1, output2, output3
