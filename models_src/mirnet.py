"""MIRNet (v1, Zamir et al., ECCV 2020), re-implemented from the official ``swz30/MIRNet`` code.

Module, parameter and buffer names mirror ``networks/MIRNet_model.py`` and ``utils/antialias.py`` so
that the released checkpoints (``ckpt['state_dict']``, possibly with a ``module.`` prefix that the caller
strips) load with ``strict=True``, and the forward ops and their order match the official code.

Two kinds of sharing from the official code are reproduced because they show up in the state_dict:

* Inside each :class:`MSRB`, a stream's DAU list holds ONE :class:`DAU` instance repeated ``width``
  times, so ``blocks.j.0.*`` and ``blocks.j.1.*`` are the same tensors (the DAU is applied twice).
* The official DAU takes ``act=nn.PReLU()`` as a default argument, evaluated once, so every DAU uses the
  same PReLU scalar. Here :class:`MIRNet` creates one PReLU and hands it to all its DAUs, which gives the
  same parameter count and keys; unlike the official default argument it is not shared across separate
  model instances.

Input height and width must be multiples of 4: otherwise the down/up pyramid yields mismatched sizes and
``torch.cat`` inside :class:`SKFF` raises a ``RuntimeError`` (official behaviour, no explicit check).
All sizes are read from tensors at run time so the model exports to ONNX with dynamic N/H/W.
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "MIRNet",
    "RRG",
    "MSRB",
    "DAU",
    "SKFF",
    "Downsample",
    "ResidualDownSample",
    "ResidualUpSample",
    "DownSample",
    "UpSample",
]


def conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = False, padding: int = 1, stride: int = 1):
    """'Same' conv helper; like the official one it ignores ``padding`` and uses ``kernel_size // 2``."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias, stride=stride)


class Downsample(nn.Module):
    """Anti-aliased (blur-pool) downsampling from Adobe's antialiased-cnns, as used by MIRNet.

    Pad (reflect by default, which is what MIRNet uses), then a fixed depthwise binomial filter applied with ``F.conv2d(groups=C)`` at the given
    stride. The filter is a persistent buffer named ``filt`` of shape [C, 1, k, k] because the official
    checkpoints contain it.
    """

    _TAPS = {
        1: [1.0],
        2: [1.0, 1.0],
        3: [1.0, 2.0, 1.0],
        4: [1.0, 3.0, 3.0, 1.0],
        5: [1.0, 4.0, 6.0, 4.0, 1.0],
        6: [1.0, 5.0, 10.0, 10.0, 5.0, 1.0],
        7: [1.0, 6.0, 15.0, 20.0, 15.0, 6.0, 1.0],
    }

    def __init__(
        self, pad_type: str = "reflect", filt_size: int = 3, stride: int = 2, channels: Optional[int] = None,
        pad_off: int = 0,
    ):
        super().__init__()
        pad_layers = {"refl": nn.ReflectionPad2d, "reflect": nn.ReflectionPad2d, "repl": nn.ReplicationPad2d,
                      "replicate": nn.ReplicationPad2d, "zero": nn.ZeroPad2d}
        if pad_type not in pad_layers:
            raise ValueError(f"unknown pad type {pad_type!r}")
        self.filt_size = filt_size
        self.pad_off = pad_off
        lo, hi = (filt_size - 1) // 2, int(math.ceil((filt_size - 1) / 2))
        self.pad_sizes = [p + pad_off for p in (lo, hi, lo, hi)]
        self.stride = stride
        self.channels = channels

        a = torch.tensor(self._TAPS[filt_size], dtype=torch.float32)
        filt = a[:, None] * a[None, :]
        filt = filt / filt.sum()
        self.register_buffer("filt", filt[None, None, :, :].repeat(channels, 1, 1, 1))
        self.pad = pad_layers[pad_type](self.pad_sizes)  # MIRNet uses the default, reflect

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        if self.filt_size == 1:
            src = inp if self.pad_off == 0 else self.pad(inp)
            return src[:, :, :: self.stride, :: self.stride]
        return F.conv2d(self.pad(inp), self.filt, stride=self.stride, groups=inp.shape[1])


class SKFF(nn.Module):
    """Selective kernel feature fusion over ``height`` inputs (PReLU in the squeeze, unlike v2's LReLU)."""

    def __init__(self, in_channels: int, height: int = 3, reduction: int = 8, bias: bool = False):
        super().__init__()
        self.height = height
        d = max(int(in_channels / reduction), 4)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(nn.Conv2d(in_channels, d, 1, padding=0, bias=bias), nn.PReLU())
        self.fcs = nn.ModuleList(
            [nn.Conv2d(d, in_channels, kernel_size=1, stride=1, bias=bias) for _ in range(height)]
        )
        self.softmax = nn.Softmax(dim=1)

    def forward(self, inp_feats: List[torch.Tensor]) -> torch.Tensor:
        n, c = inp_feats[0].shape[0], inp_feats[0].shape[1]
        feats = torch.cat(inp_feats, dim=1)
        feats = feats.view(n, self.height, c, feats.shape[2], feats.shape[3])

        feats_u = torch.sum(feats, dim=1)
        feats_z = self.conv_du(self.avg_pool(feats_u))

        attn = torch.cat([fc(feats_z) for fc in self.fcs], dim=1)
        attn = self.softmax(attn.view(n, self.height, c, 1, 1))
        return torch.sum(feats * attn, dim=1)


class BasicConv(nn.Module):
    """Conv with optional BN/ReLU; only the bare conv (``spatial.conv``) is used by MIRNet."""

    def __init__(
        self, in_planes, out_planes, kernel_size, stride=1, padding=0, dilation=1, groups=1, relu=True, bn=False, bias=False
    ):
        super().__init__()
        self.out_channels = out_planes
        self.conv = nn.Conv2d(
            in_planes, out_planes, kernel_size=kernel_size, stride=stride, padding=padding,
            dilation=dilation, groups=groups, bias=bias,
        )
        self.bn = nn.BatchNorm2d(out_planes, eps=1e-5, momentum=0.01, affine=True) if bn else None
        self.relu = nn.ReLU() if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.relu is not None:
            x = self.relu(x)
        return x


class ChannelPool(nn.Module):
    """Stack channel-wise max and mean into 2 channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)


class spatial_attn_layer(nn.Module):
    """Spatial attention: 5x5 conv over [max, mean] -> sigmoid gate."""

    def __init__(self, kernel_size: int = 5):
        super().__init__()
        self.compress = ChannelPool()
        self.spatial = BasicConv(2, 1, kernel_size, stride=1, padding=(kernel_size - 1) // 2, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.spatial(self.compress(x)))


class ca_layer(nn.Module):
    """Channel attention: GAP -> 1x1 (C -> C/r) -> ReLU -> 1x1 -> sigmoid gate."""

    def __init__(self, channel: int, reduction: int = 8, bias: bool = True):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channel, channel // reduction, 1, padding=0, bias=bias),
            nn.ReLU(inplace=True),
            nn.Conv2d(channel // reduction, channel, 1, padding=0, bias=bias),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(self.avg_pool(x))


class DAU(nn.Module):
    """Dual attention unit: conv-act-conv, then spatial and channel attention fused by a 1x1 conv, + x.

    ``act`` defaults to a fresh PReLU; :class:`MIRNet` passes one shared PReLU to all DAUs to reproduce
    the official default-argument sharing (one scalar, present under every ``...body.1.weight`` key).
    """

    def __init__(
        self, n_feat: int, kernel_size: int = 3, reduction: int = 8, bias: bool = False, bn: bool = False,
        act: Optional[nn.Module] = None, res_scale: float = 1,
    ):
        super().__init__()
        if act is None:
            act = nn.PReLU()
        self.body = nn.Sequential(
            conv(n_feat, n_feat, kernel_size, bias=bias), act, conv(n_feat, n_feat, kernel_size, bias=bias)
        )
        self.SA = spatial_attn_layer()
        self.CA = ca_layer(n_feat, reduction, bias=bias)
        self.conv1x1 = nn.Conv2d(n_feat * 2, n_feat, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.body(x)
        res = torch.cat([self.SA(res), self.CA(res)], dim=1)
        return self.conv1x1(res) + x


class ResidualDownSample(nn.Module):
    """Two-path /2 downsampler (C -> 2C): conv/PReLU/conv/PReLU/blur-pool/1x1 plus blur-pool/1x1."""

    def __init__(self, in_channels: int, bias: bool = False):
        super().__init__()
        self.top = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 1, stride=1, padding=0, bias=bias),
            nn.PReLU(),
            nn.Conv2d(in_channels, in_channels, 3, stride=1, padding=1, bias=bias),
            nn.PReLU(),
            Downsample(channels=in_channels, filt_size=3, stride=2),
            nn.Conv2d(in_channels, in_channels * 2, 1, stride=1, padding=0, bias=bias),
        )
        self.bot = nn.Sequential(
            Downsample(channels=in_channels, filt_size=3, stride=2),
            nn.Conv2d(in_channels, in_channels * 2, 1, stride=1, padding=0, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(x) + self.bot(x)


class DownSample(nn.Module):
    """``log2(scale_factor)`` chained :class:`ResidualDownSample` steps (always bias-free upstream)."""

    def __init__(self, in_channels: int, scale_factor: int, stride: int = 2, kernel_size: int = 3):
        super().__init__()
        self.scale_factor = int(math.log2(scale_factor))
        layers = []
        for _ in range(self.scale_factor):
            layers.append(ResidualDownSample(in_channels))
            in_channels = int(in_channels * stride)
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResidualUpSample(nn.Module):
    """Two-path x2 upsampler (C -> C/2): conv/PReLU/ConvTranspose/PReLU/1x1 plus bilinear/1x1.

    ``align_corners=bias`` is kept from the official code; ``bias`` is never passed in, so it is False.
    """

    def __init__(self, in_channels: int, bias: bool = False):
        super().__init__()
        self.top = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 1, stride=1, padding=0, bias=bias),
            nn.PReLU(),
            nn.ConvTranspose2d(in_channels, in_channels, 3, stride=2, padding=1, output_padding=1, bias=bias),
            nn.PReLU(),
            nn.Conv2d(in_channels, in_channels // 2, 1, stride=1, padding=0, bias=bias),
        )
        self.bot = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=bias),
            nn.Conv2d(in_channels, in_channels // 2, 1, stride=1, padding=0, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(x) + self.bot(x)


class UpSample(nn.Module):
    """``log2(scale_factor)`` chained :class:`ResidualUpSample` steps (always bias-free upstream)."""

    def __init__(self, in_channels: int, scale_factor: int, stride: int = 2, kernel_size: int = 3):
        super().__init__()
        self.scale_factor = int(math.log2(scale_factor))
        layers = []
        for _ in range(self.scale_factor):
            layers.append(ResidualUpSample(in_channels))
            in_channels = int(in_channels // stride)
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class MSRB(nn.Module):
    """Multi-scale residual block: ``height`` streams, a ``width``-column grid of DAUs, SKFF mesh fusion.

    Column 1 runs the streams in sequence (DAU, then down x2 into the next stream). Every later column
    resamples all streams to each target stream, fuses them with that stream's SKFF and applies the
    stream's (single, shared) DAU again. The streams are then brought back to full resolution with
    ``last_up``, fused with ``selective_kernel[0]`` (reused), passed through ``conv_out`` and added to x.

    Resamplers are looked up by ``'{channels}_{factor}'`` keys as upstream; the channel count is taken
    from the constructor instead of ``tensor.size(1)`` (same key, and nothing shape-dependent in Python).
    """

    def __init__(self, n_feat: int, height: int, width: int, stride: int, bias: bool, act: Optional[nn.Module] = None):
        super().__init__()
        self.n_feat, self.height, self.width = n_feat, height, width
        if act is None:
            act = nn.PReLU()
        # One DAU per stream, repeated `width` times: the ModuleList holds the same instance.
        self.blocks = nn.ModuleList(
            [nn.ModuleList([DAU(int(n_feat * stride**i), act=act)] * width) for i in range(height)]
        )

        feats = [int((stride**i) * n_feat) for i in range(height)]
        scales = [2**i for i in range(1, height)]
        self.feats = list(feats)

        self.last_up = nn.ModuleDict()
        for i in range(1, height):
            self.last_up.update({f"{i}": UpSample(int(n_feat * stride**i), 2**i, stride)})

        self.down = nn.ModuleDict()
        self.up = nn.ModuleDict()

        scales.reverse()
        for i, feat in enumerate(feats):
            for scale in scales[i:]:
                self.down.update({f"{feat}_{scale}": DownSample(feat, scale, stride)})
        for i, feat in enumerate(reversed(feats)):
            for scale in scales[i:]:
                self.up.update({f"{feat}_{scale}": UpSample(feat, scale, stride)})

        self.conv_out = nn.Conv2d(n_feat, n_feat, kernel_size=3, padding=1, bias=bias)
        self.selective_kernel = nn.ModuleList([SKFF(n_feat * stride**i, height) for i in range(height)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Column 1: sequential streams.
        blocks_out = []
        inp = x
        for j in range(self.height):
            if j == 0:
                inp = self.blocks[j][0](inp)
            else:
                inp = self.blocks[j][0](self.down[f"{self.feats[j - 1]}_2"](inp))
            blocks_out.append(inp)

        # Remaining columns: mesh fusion then the stream's DAU again.
        for i in range(1, self.width):
            fused = []
            for j in range(self.height):
                tensors = [self.select_up_down(blocks_out[k], j, k) for k in range(self.height)]
                fused.append(self.selective_kernel[j](tensors))
            for j in range(self.height):
                blocks_out[j] = self.blocks[j][i](fused[j])

        out = [self.select_last_up(blocks_out[k], k) for k in range(self.height)]
        out = self.selective_kernel[0](out)
        return self.conv_out(out) + x

    def select_up_down(self, tensor: torch.Tensor, j: int, k: int) -> torch.Tensor:
        """Resample stream ``k`` to the resolution/channels of stream ``j``."""
        if j == k:
            return tensor
        diff = 2 ** abs(j - k)
        if j < k:
            return self.up[f"{self.feats[k]}_{diff}"](tensor)
        return self.down[f"{self.feats[k]}_{diff}"](tensor)

    def select_last_up(self, tensor: torch.Tensor, k: int) -> torch.Tensor:
        return tensor if k == 0 else self.last_up[f"{k}"](tensor)


class RRG(nn.Module):
    """Recursive residual group: ``n_MSRB`` MSRBs, a bias-free 3x3 conv, and a long skip."""

    def __init__(
        self, n_feat: int, n_MSRB: int, height: int, width: int, stride: int, bias: bool = False,
        act: Optional[nn.Module] = None,
    ):
        super().__init__()
        layers: List[nn.Module] = [MSRB(n_feat, height, width, stride, bias, act=act) for _ in range(n_MSRB)]
        layers.append(conv(n_feat, n_feat, kernel_size=3))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class MIRNet(nn.Module):
    """MIRNet v1 with the official constructor signature; output is ``conv_out(body(conv_in(x))) + x``.

    One PReLU is created here and shared by every DAU (see module docstring). ``bias`` only reaches
    ``conv_in``, ``conv_out`` and the MSRB ``conv_out`` layers, as upstream.
    """

    def __init__(
        self, in_channels: int = 3, out_channels: int = 3, n_feat: int = 64, kernel_size: int = 3, stride: int = 2,
        n_RRG: int = 3, n_MSRB: int = 2, height: int = 3, width: int = 2, bias: bool = False,
    ):
        super().__init__()
        dau_act = nn.PReLU()  # shared by all DAUs, as the official default-argument PReLU
        pad = (kernel_size - 1) // 2
        self.conv_in = nn.Conv2d(in_channels, n_feat, kernel_size=kernel_size, padding=pad, bias=bias)
        self.body = nn.Sequential(
            *[RRG(n_feat, n_MSRB, height, width, stride, bias, act=dau_act) for _ in range(n_RRG)]
        )
        self.conv_out = nn.Conv2d(n_feat, out_channels, kernel_size=kernel_size, padding=pad, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        h = self.body(h)
        return self.conv_out(h) + x
