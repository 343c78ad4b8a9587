"""MIRNet-v2 (Zamir et al., TPAMI 2022), re-implemented from the official ``swz30/MIRNetv2`` code.

Module and parameter names mirror ``basicsr/models/archs/mirnet_v2_arch.py`` so that the released
``{'params': state_dict}`` checkpoints load with ``strict=True``. Forward ops and their order match the
official code, which is what makes outputs identical given the same weights.

Input height and width must be multiples of 4: the two-level down/up pyramid otherwise produces
mismatched sizes and ``torch.cat`` inside :class:`SKFF` raises a ``RuntimeError`` (as in the official code;
no explicit check is added so the traced graph stays the same).

All sizes are read from the tensors at run time, so the model exports to ONNX with dynamic N/H/W.
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch
import torch.nn as nn

__all__ = ["MIRNet_v2", "MRB", "RRG", "RCB", "SKFF", "ContextBlock", "Down", "Up", "DownSample", "UpSample"]


class SKFF(nn.Module):
    """Selective kernel feature fusion over ``height`` same-shaped inputs.

    Attention weights come from a squeeze (global average pool + 1x1 conv + LeakyReLU) and one
    1x1 conv per branch; a softmax over the branch dimension mixes the inputs.
    """

    def __init__(self, in_channels: int, height: int = 3, reduction: int = 8, bias: bool = False):
        super().__init__()
        self.height = height
        d = max(int(in_channels / reduction), 4)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(nn.Conv2d(in_channels, d, 1, padding=0, bias=bias), nn.LeakyReLU(0.2))
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


class ContextBlock(nn.Module):
    """GCNet-style global context: softmax over all H*W positions pools a [N, C, 1, 1] context vector."""

    def __init__(self, n_feat: int, bias: bool = False):
        super().__init__()
        self.conv_mask = nn.Conv2d(n_feat, 1, kernel_size=1, bias=bias)
        self.softmax = nn.Softmax(dim=2)
        self.channel_add_conv = nn.Sequential(
            nn.Conv2d(n_feat, n_feat, kernel_size=1, bias=bias),
            nn.LeakyReLU(0.2),
            nn.Conv2d(n_feat, n_feat, kernel_size=1, bias=bias),
        )

    def modeling(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        input_x = x.view(n, c, h * w).unsqueeze(1)  # [N, 1, C, HW]
        mask = self.conv_mask(x).view(n, 1, h * w)  # [N, 1, HW]
        mask = self.softmax(mask).unsqueeze(3)  # [N, 1, HW, 1]
        context = torch.matmul(input_x, mask)  # [N, 1, C, 1]
        return context.view(n, c, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.channel_add_conv(self.modeling(x))


class RCB(nn.Module):
    """Residual context block: grouped conv-LReLU-conv, global context, LReLU, identity skip.

    ``act`` is one LeakyReLU instance used both inside ``body`` and after the context block, as in the
    official code (it has no parameters, so this only matters for module identity).
    """

    def __init__(self, n_feat: int, kernel_size: int = 3, reduction: int = 8, bias: bool = False, groups: int = 1):
        super().__init__()
        act = nn.LeakyReLU(0.2)
        self.body = nn.Sequential(
            nn.Conv2d(n_feat, n_feat, kernel_size=3, stride=1, padding=1, bias=bias, groups=groups),
            act,
            nn.Conv2d(n_feat, n_feat, kernel_size=3, stride=1, padding=1, bias=bias, groups=groups),
        )
        self.act = act
        self.gcnet = ContextBlock(n_feat, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.body(x)
        res = self.act(self.gcnet(res))
        return res + x


class Down(nn.Module):
    """AvgPool(2, ceil_mode) then 1x1 conv raising channels to ``int(C * chan_factor)``."""

    def __init__(self, in_channels: int, chan_factor: float, bias: bool = False):
        super().__init__()
        self.bot = nn.Sequential(
            nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False),
            nn.Conv2d(in_channels, int(in_channels * chan_factor), 1, stride=1, padding=0, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bot(x)


class DownSample(nn.Module):
    """``log2(scale_factor)`` chained :class:`Down` steps (always bias-free, as in the official code)."""

    def __init__(self, in_channels: int, scale_factor: int, chan_factor: float = 2, kernel_size: int = 3):
        super().__init__()
        self.scale_factor = int(math.log2(scale_factor))
        layers = []
        for _ in range(self.scale_factor):
            layers.append(Down(in_channels, chan_factor))
            in_channels = int(in_channels * chan_factor)
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Up(nn.Module):
    """1x1 conv lowering channels to ``int(C // chan_factor)``, then bilinear x2.

    The official code passes ``align_corners=bias``; :class:`UpSample` never forwards ``bias`` so it is
    always ``False`` in the network, but the coupling is kept for fidelity.
    """

    def __init__(self, in_channels: int, chan_factor: float, bias: bool = False):
        super().__init__()
        self.bot = nn.Sequential(
            nn.Conv2d(in_channels, int(in_channels // chan_factor), 1, stride=1, padding=0, bias=bias),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bot(x)


class UpSample(nn.Module):
    """``log2(scale_factor)`` chained :class:`Up` steps (always bias-free)."""

    def __init__(self, in_channels: int, scale_factor: int, chan_factor: float = 2, kernel_size: int = 3):
        super().__init__()
        self.scale_factor = int(math.log2(scale_factor))
        layers = []
        for _ in range(self.scale_factor):
            layers.append(Up(in_channels, chan_factor))
            in_channels = int(in_channels // chan_factor)
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class MRB(nn.Module):
    """Multi-scale residual block: three streams (full, 1/2, 1/4 resolution) fused twice.

    Each RCB (``dau_*``) and each SKFF is applied twice with the same weights; the up-samplers are
    separate per round (``*_1`` and ``*_2``). ``height``/``width`` are stored but unused, as upstream.
    """

    def __init__(self, n_feat: int, height: int, width: int, chan_factor: float, bias: bool, groups: int):
        super().__init__()
        self.n_feat, self.height, self.width = n_feat, height, width

        self.dau_top = RCB(int(n_feat * chan_factor**0), bias=bias, groups=groups)
        self.dau_mid = RCB(int(n_feat * chan_factor**1), bias=bias, groups=groups)
        self.dau_bot = RCB(int(n_feat * chan_factor**2), bias=bias, groups=groups)

        self.down2 = DownSample(int((chan_factor**0) * n_feat), 2, chan_factor)
        self.down4 = nn.Sequential(
            DownSample(int((chan_factor**0) * n_feat), 2, chan_factor),
            DownSample(int((chan_factor**1) * n_feat), 2, chan_factor),
        )

        self.up21_1 = UpSample(int((chan_factor**1) * n_feat), 2, chan_factor)
        self.up21_2 = UpSample(int((chan_factor**1) * n_feat), 2, chan_factor)
        self.up32_1 = UpSample(int((chan_factor**2) * n_feat), 2, chan_factor)
        self.up32_2 = UpSample(int((chan_factor**2) * n_feat), 2, chan_factor)

        self.conv_out = nn.Conv2d(n_feat, n_feat, kernel_size=1, padding=0, bias=bias)

        # Two-input SKFFs; bias is not forwarded here in the official code.
        self.skff_top = SKFF(int(n_feat * chan_factor**0), 2)
        self.skff_mid = SKFF(int(n_feat * chan_factor**1), 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_top = x
        x_mid = self.down2(x_top)
        x_bot = self.down4(x_top)

        x_top = self.dau_top(x_top)
        x_mid = self.dau_mid(x_mid)
        x_bot = self.dau_bot(x_bot)

        x_mid = self.skff_mid([x_mid, self.up32_1(x_bot)])
        x_top = self.skff_top([x_top, self.up21_1(x_mid)])

        x_top = self.dau_top(x_top)
        x_mid = self.dau_mid(x_mid)
        x_bot = self.dau_bot(x_bot)

        x_mid = self.skff_mid([x_mid, self.up32_2(x_bot)])
        x_top = self.skff_top([x_top, self.up21_2(x_mid)])

        return self.conv_out(x_top) + x


class RRG(nn.Module):
    """Recursive residual group: ``n_MRB`` MRBs, a 3x3 conv, and a long skip."""

    def __init__(
        self, n_feat: int, n_MRB: int, height: int, width: int, chan_factor: float, bias: bool = False, groups: int = 1
    ):
        super().__init__()
        layers: List[nn.Module] = [MRB(n_feat, height, width, chan_factor, bias, groups) for _ in range(n_MRB)]
        layers.append(nn.Conv2d(n_feat, n_feat, kernel_size=3, stride=1, padding=1, bias=bias))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class MIRNet_v2(nn.Module):
    """MIRNet-v2 with the official constructor signature.

    As in the official class, ``n_RRG``, ``height``, ``width`` and ``scale`` do not change the network:
    exactly four RRGs are built with RCB conv groups 1, 2, 4, 4, and there is no upsampler (the "SR"
    checkpoints are same-size RealSR models).

    ``task='defocus_deblurring'`` (used with ``inp_channels=6``, [L, R] dual-pixel views) adds the
    shallow ``conv_in`` features to the deep features before ``conv_out`` and drops the input-image
    residual; otherwise the output is ``conv_out(deep) + input``.
    """

    def __init__(
        self,
        inp_channels: int = 3,
        out_channels: int = 3,
        n_feat: int = 80,
        chan_factor: float = 1.5,
        n_RRG: int = 4,
        n_MRB: int = 2,
        height: int = 3,
        width: int = 2,
        scale: int = 1,
        bias: bool = False,
        task: Optional[str] = None,
    ):
        super().__init__()
        self.task = task

        self.conv_in = nn.Conv2d(inp_channels, n_feat, kernel_size=3, padding=1, bias=bias)
        self.body = nn.Sequential(
            *[RRG(n_feat, n_MRB, height, width, chan_factor, bias, groups=g) for g in (1, 2, 4, 4)]
        )
        self.conv_out = nn.Conv2d(n_feat, out_channels, kernel_size=3, padding=1, bias=bias)

    def forward(self, inp_img: torch.Tensor) -> torch.Tensor:
        shallow_feats = self.conv_in(inp_img)
        deep_feats = self.body(shallow_feats)
        if self.task == "defocus_deblurring":
            return self.conv_out(deep_feats + shallow_feats)
        return self.conv_out(deep_feats) + inp_img
