"""PANet (Mei et al., "Pyramid Attention Networks for Image Restoration"): PANET and PA-EDSR.

Reference re-implementation of ``SHI-Labs/Pyramid-Attention-Networks`` (commit a267cf8, 2020):
``{DN_RGB,CAR,Demosaic}/code/model/panet.py`` (class ``PANET``), ``SR/code/model/paedsr.py`` (``PAEDSR``),
``*/code/model/attention.py`` (``PyramidAttention``) and the EDSR-PyTorch blocks of ``*/code/model/common.py``.

=================  ===========  =======  =====  =========  ========  =========================  ==============
variant            class        blocks   feat   res_scale  n_colors  attention                  parameters
=================  ===========  =======  =====  =========  ========  =========================  ==============
colour denoising   PANET        80       64     1          3         PA(64, reduction 2)        5,957,279
JPEG CAR (Y)       PANET        80       64     1          1         PA(64, reduction 2)        5,954,973
demosaicing        PANET        80       64     1          3         PA(64, reduction 2)        5,957,279
SR x2 / x3 / x4    PAEDSR       32       256    0.1        3         PA(256, reduction 8, 0.1)  40,811,870 /
                                                                                                43,762,270 /
                                                                                                43,172,190
=================  ===========  =======  =====  =========  ========  =========================  ==============

``rgb_range`` is 1 for every release, so inputs and outputs are 0..1. Parameters are counted as distinct
``nn.Parameter`` objects (the frozen MeanShift convs included, shared modules once).

Official quirks kept on purpose, because released checkpoints (flat state_dicts, saved from the bare model) must
load with ``strict=True`` and give the official numbers:

* ``sub_mean`` / ``add_mean`` (frozen 1x1 convs, 3 channels even for the 1-channel CAR model) exist in PANET
  although its forward never calls them (the two lines are commented out upstream): PANET has no mean shift.
  PA-EDSR does use them (``rgb_range=1``).
* ``PyramidAttention`` registers a persistent buffer ``escape_NaN = [1e-4]`` (the floor of the key norms).
* PA-EDSR keeps the attention module as the attribute ``msa`` *and* inside ``body`` (index 16): one module, two
  key sets in the state_dict (``msa.*`` and ``body.16.*``).
* PANET builds its ResBlocks as ``ResBlock(conv, n_feats, kernel_size, nn.PReLU(), res_scale=...)``: the PReLU
  lands in the ``bias`` slot (so the convs get a bias) and every block falls back to the default ``act``, a
  single ``nn.PReLU()`` evaluated once when the upstream ``ResBlock`` was defined. All 80 blocks therefore share
  one PReLU scalar, stored 80 times as ``body.{i}.body.1.weight``. Upstream the sharing is even process-wide
  (a default argument); here each PANET instance owns one shared PReLU, which is what a checkpoint can express.
* PA-EDSR's ``Upsampler`` calls ``conv(n_feats, 4 * n_feats, 3, bias)`` against a ``default_conv`` whose 4th
  positional parameter is ``stride``: PyTorch 1.1 took ``stride=True`` as 1, torch 2.x rejects it. Stride 1 here.
* The bicubic pyramid uses ``F.interpolate(scale_factor=s)``. The authors ran PyTorch 1.1, which computed the
  output size as ``floor(in * s)`` (float64) and then sampled with the in/out ratio; PyTorch >= 1.6 samples with
  ``s`` itself unless ``recompute_scale_factor=True``. This file passes ``recompute_scale_factor=True`` to keep the
  authors' behaviour. The float64 product makes some sizes one smaller than the exact rational floor (for the 0.7
  level: 90 -> 62, 170 -> 118, ...); ``deploykit.export.forms_panet`` reproduces that in exported graphs.

The attention's memory and time grow with (H*W)^2 (the score tensor holds about 3.3 (H*W)^2 floats), which is
why the official test scripts always run the recursive ``forward_chop`` (``deploykit.imaging.chop``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MeanShift", "default_conv", "BasicBlock", "ResBlock", "Upsampler", "PyramidAttention", "PANET",
           "PAEDSR", "same_padding", "extract_image_patches"]

RGB_MEAN = (0.4488, 0.4371, 0.4040)
RGB_STD = (1.0, 1.0, 1.0)


# --- EDSR-PyTorch blocks (``model/common.py`` of the PANet trees) ---------------------------------------------

def default_conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 stride: int = 1) -> nn.Conv2d:
    """3x3 (or kxk) 'same' convolution with bias, as EDSR-PyTorch's ``default_conv``."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias)


class MeanShift(nn.Conv2d):
    """Frozen 1x1 conv adding ``sign * rgb_range * mean / std`` (3 channels; parameters, so in the state_dict)."""

    def __init__(self, rgb_range: float, rgb_mean: Sequence[float] = RGB_MEAN,
                 rgb_std: Sequence[float] = RGB_STD, sign: int = -1) -> None:
        super().__init__(3, 3, kernel_size=1)
        std = torch.tensor(rgb_std, dtype=torch.float32)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1) / std.view(3, 1, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(rgb_mean, dtype=torch.float32) / std)
        for p in self.parameters():
            p.requires_grad = False


class BasicBlock(nn.Sequential):
    """conv (with bias) followed by ``act``: keys ``0.weight``, ``0.bias``, ``1.weight`` (PReLU)."""

    def __init__(self, conv, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 bn: bool = False, act: nn.Module | None = None) -> None:
        layers: list[nn.Module] = [conv(in_channels, out_channels, kernel_size, bias=bias)]
        if bn:
            layers.append(nn.BatchNorm2d(out_channels))
        if act is not None:
            layers.append(act)
        super().__init__(*layers)


class ResBlock(nn.Module):
    """conv -> act -> conv, times ``res_scale``, plus the input (keys ``body.0``, ``body.1`` = act, ``body.2``)."""

    def __init__(self, conv, n_feats: int, kernel_size: int, bias: bool = True, bn: bool = False,
                 act: nn.Module | None = None, res_scale: float = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(2):
            layers.append(conv(n_feats, n_feats, kernel_size, bias=bias))
            if bn:
                layers.append(nn.BatchNorm2d(n_feats))
            if i == 0:
                layers.append(act if act is not None else nn.ReLU(True))
        self.body = nn.Sequential(*layers)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mul(self.res_scale) + x


class Upsampler(nn.Sequential):
    """Sub-pixel upsampler: (conv C->4C, PixelShuffle 2) x log2(scale), or conv C->9C, PixelShuffle 3.

    Convs are stride 1 (upstream passes ``stride=True`` by a positional slip; PyTorch 1.1 read it as 1).
    """

    def __init__(self, conv, scale: int, n_feats: int, bn: bool = False, act=False, bias: bool = True) -> None:
        layers: list[nn.Module] = []
        if (scale & (scale - 1)) == 0:
            for _ in range(int(math.log2(scale))):
                layers.append(conv(n_feats, 4 * n_feats, 3, bias=bias, stride=1))
                layers.append(nn.PixelShuffle(2))
                if bn:
                    layers.append(nn.BatchNorm2d(n_feats))
                if act == "relu":
                    layers.append(nn.ReLU(True))
                elif act == "prelu":
                    layers.append(nn.PReLU(n_feats))
        elif scale == 3:
            layers.append(conv(n_feats, 9 * n_feats, 3, bias=bias, stride=1))
            layers.append(nn.PixelShuffle(3))
            if bn:
                layers.append(nn.BatchNorm2d(n_feats))
            if act == "relu":
                layers.append(nn.ReLU(True))
            elif act == "prelu":
                layers.append(nn.PReLU(n_feats))
        else:
            raise ValueError(f"Upsampler: scale {scale} is not supported (powers of 2 and 3)")
        super().__init__(*layers)


# --- pyramid attention (``model/attention.py`` + ``utils/tools.py``) ------------------------------------------

def same_padding(images: torch.Tensor, ksizes: Sequence[int], strides: Sequence[int],
                 rates: Sequence[int]) -> torch.Tensor:
    """TensorFlow-style 'SAME' zero padding (extra pixel, if any, at the bottom/right)."""
    rows, cols = images.shape[2], images.shape[3]
    out_rows = (rows + strides[0] - 1) // strides[0]
    out_cols = (cols + strides[1] - 1) // strides[1]
    eff_row = (ksizes[0] - 1) * rates[0] + 1
    eff_col = (ksizes[1] - 1) * rates[1] + 1
    pad_rows = max(0, (out_rows - 1) * strides[0] + eff_row - rows)
    pad_cols = max(0, (out_cols - 1) * strides[1] + eff_col - cols)
    top, left = pad_rows // 2, pad_cols // 2
    return F.pad(images, (left, pad_cols - left, top, pad_rows - top))


def extract_image_patches(images: torch.Tensor, ksizes: Sequence[int], strides: Sequence[int],
                          rates: Sequence[int], padding: str = "same") -> torch.Tensor:
    """``[N, C*k*k, L]`` patches (``nn.Unfold`` after 'same' padding), as the official helper."""
    if padding == "same":
        images = same_padding(images, ksizes, strides, rates)
    elif padding != "valid":
        raise ValueError(f"padding must be 'same' or 'valid', not {padding!r}")
    return nn.Unfold(kernel_size=tuple(ksizes), dilation=tuple(rates), padding=0, stride=tuple(strides))(images)


def _reduce_sum(x: torch.Tensor, axis: Sequence[int], keepdim: bool = True) -> torch.Tensor:
    for i in sorted(axis, reverse=True):
        x = torch.sum(x, dim=i, keepdim=keepdim)
    return x


class PyramidAttention(nn.Module):
    """Non-local attention of every query pixel over the 3x3 patches of a 5-level bicubic pyramid of the input.

    Per sample: scores = conv2d(query, L2-normalised key patches) over all levels, softmax(10 * scores) over the
    patches, reconstruction = conv_transpose2d(weights, value patches) / 4; plus ``res_scale * input``.
    """

    def __init__(self, level: int = 5, res_scale: float = 1, channel: int = 64, reduction: int = 2,
                 ksize: int = 3, stride: int = 1, softmax_scale: float = 10, average: bool = True,
                 conv=default_conv) -> None:
        super().__init__()
        self.ksize = ksize
        self.stride = stride
        self.res_scale = res_scale
        self.softmax_scale = softmax_scale
        self.scale = [1 - i / 10 for i in range(level)]
        self.average = average
        self.register_buffer("escape_NaN", torch.tensor([1e-4], dtype=torch.float32))
        self.conv_match_L_base = BasicBlock(conv, channel, channel // reduction, 1, act=nn.PReLU())
        self.conv_match = BasicBlock(conv, channel, channel // reduction, 1, act=nn.PReLU())
        self.conv_assembly = BasicBlock(conv, channel, channel, 1, act=nn.PReLU())

    def _patches(self, feature: torch.Tensor) -> torch.Tensor:
        """``[N, L, C, k, k]`` patches of ``feature``."""
        n, c = feature.shape[0], feature.shape[1]
        k = self.ksize
        patches = extract_image_patches(feature, [k, k], [self.stride, self.stride], [1, 1], "same")
        return patches.view(n, c, k, k, -1).permute(0, 4, 1, 2, 3)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        res = input
        match_base = self.conv_match_L_base(input)
        height, width = input.shape[2], input.shape[3]
        keys, values = [], []
        for s in self.scale:
            ref = input
            if s != 1:
                ref = F.interpolate(input, scale_factor=s, mode="bicubic", recompute_scale_factor=True)
            values.append(self._patches(self.conv_assembly(ref)))
            keys.append(self._patches(self.conv_match(ref)))

        outputs = []
        for idx in range(input.shape[0]):  # the official code loops over the samples
            wi = torch.cat([k[idx] for k in keys], dim=0)  # [L, C/r, k, k]
            norm = torch.max(torch.sqrt(_reduce_sum(wi.pow(2), axis=[1, 2, 3], keepdim=True)), self.escape_NaN)
            xi = same_padding(match_base[idx:idx + 1], [self.ksize, self.ksize], [1, 1], [1, 1])
            yi = F.conv2d(xi, wi / norm, stride=1)  # [1, L, H, W]
            yi = yi.view(1, wi.shape[0], height, width)
            yi = F.softmax(yi * self.softmax_scale, dim=1)
            if not self.average:
                yi = (yi == yi.max(dim=1, keepdim=True)[0]).float()
            raw_wi = torch.cat([v[idx] for v in values], dim=0)  # [L, C, k, k]
            outputs.append(F.conv_transpose2d(yi, raw_wi, stride=self.stride, padding=1) / 4.)
        return torch.cat(outputs, dim=0) + res * self.res_scale


# --- networks -------------------------------------------------------------------------------------------------

class PANET(nn.Module):
    """PANET for denoising / JPEG artifact removal / demosaicing: head, 40 ResBlocks, PA, 40 ResBlocks, conv,
    long skip, tail conv. No mean shift in the forward, no input-image residual. Defaults = colour denoising."""

    def __init__(self, n_resblocks: int = 80, n_feats: int = 64, n_colors: int = 3, rgb_range: float = 1,
                 res_scale: float = 1, conv=default_conv) -> None:
        super().__init__()
        kernel_size = 3
        self.sub_mean = MeanShift(rgb_range, RGB_MEAN, RGB_STD)
        msa = PyramidAttention()
        shared_prelu = nn.PReLU()  # the official default-argument PReLU, shared by every ResBlock

        m_head = [conv(n_colors, n_feats, kernel_size)]
        m_body: list[nn.Module] = [
            ResBlock(conv, n_feats, kernel_size, bias=True, act=shared_prelu, res_scale=res_scale)
            for _ in range(n_resblocks // 2)
        ]
        m_body.append(msa)
        m_body += [
            ResBlock(conv, n_feats, kernel_size, bias=True, act=shared_prelu, res_scale=res_scale)
            for _ in range(n_resblocks // 2)
        ]
        m_body.append(conv(n_feats, n_feats, kernel_size))
        m_tail = [conv(n_feats, n_colors, kernel_size)]

        self.add_mean = MeanShift(rgb_range, RGB_MEAN, RGB_STD, 1)
        self.head = nn.Sequential(*m_head)
        self.body = nn.Sequential(*m_body)
        self.tail = nn.Sequential(*m_tail)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        res = self.body(x) + x
        return self.tail(res)


class PAEDSR(nn.Module):
    """PA-EDSR: EDSR-L (mean shift, head, 16 ResBlocks, PA(256, r=8), 16 ResBlocks, conv, skip, upsampler, conv,
    mean shift back). Defaults = the released x2 model (``scale`` 2/3/4)."""

    def __init__(self, scale: int = 2, n_resblocks: int = 32, n_feats: int = 256, n_colors: int = 3,
                 rgb_range: float = 1, res_scale: float = 0.1, conv=default_conv) -> None:
        super().__init__()
        kernel_size = 3
        act = nn.ReLU(True)
        self.sub_mean = MeanShift(rgb_range, RGB_MEAN, RGB_STD)
        self.msa = PyramidAttention(channel=256, reduction=8, res_scale=res_scale)

        m_head = [conv(n_colors, n_feats, kernel_size)]
        m_body: list[nn.Module] = [
            ResBlock(conv, n_feats, kernel_size, act=act, res_scale=res_scale) for _ in range(n_resblocks // 2)
        ]
        m_body.append(self.msa)
        m_body += [
            ResBlock(conv, n_feats, kernel_size, act=act, res_scale=res_scale) for _ in range(n_resblocks // 2)
        ]
        m_body.append(conv(n_feats, n_feats, kernel_size))
        m_tail = [
            Upsampler(conv, scale, n_feats, act=False),
            nn.Conv2d(n_feats, n_colors, kernel_size, padding=kernel_size // 2),
        ]

        self.add_mean = MeanShift(rgb_range, RGB_MEAN, RGB_STD, 1)
        self.head = nn.Sequential(*m_head)
        self.body = nn.Sequential(*m_body)
        self.tail = nn.Sequential(*m_tail)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.sub_mean(x))
        res = self.body(x) + x
        return self.add_mean(self.tail(res))
