"""MPRNet (Zamir et al., CVPR 2021): multi-stage progressive image restoration.

Reference re-implementation of ``swz30/MPRNet`` (``Deblurring|Denoising|Deraining/MPRNet.py``). The three official
files differ only in constructor defaults, so one class serves all of them:

==========  ======  ===============  =================  ==========================
variant     n_feat  scale_unetfeats  scale_orsnetfeats  distinct parameters
==========  ======  ===============  =================  ==========================
deblurring  96      48               32                 20,127,073 (class default)
denoising   80      48               32                 15,741,025
deraining   40      20               16                 3,637,249
==========  ======  ===============  =================  ==========================

Module and parameter names follow the official file, so released checkpoints (``ckpt['state_dict']``, possibly
with a ``module.`` prefix that the caller strips) load with ``strict=True``; the state dict has 316 tensors.
As officially, a single ``nn.PReLU`` is created in :class:`MPRNet` and shared by all 55 CABs, so the 55
``...body.1.weight`` entries are one parameter.

The forward pass is the official one, including the two export hazards kept here on purpose because this is the
numerical reference:

* the multi-patch split uses Python ``int(H/2)`` / ``int(W/2)``, which tracing bakes into constants. It lives in
  :meth:`MPRNet.split_points` (used by :meth:`MPRNet.split_halves` and :meth:`MPRNet.split_quadrants`), so an
  export rewrite can override that one method;
* the U-Net down-sampling is ``nn.Upsample(scale_factor=0.5, mode='bilinear', align_corners=False)``, stored as
  ``DownSample.down[0]`` (``DownSample.down`` is ``Sequential(Upsample, Conv1x1)`` so the conv key stays
  ``down.1.weight``). The resampler has no parameters, so swapping it leaves the state dict unchanged.

Both image sides must be multiples of 8.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

__all__ = [
    "MPRNet",
    "CALayer",
    "CAB",
    "SAM",
    "Encoder",
    "Decoder",
    "DownSample",
    "UpSample",
    "SkipUpSample",
    "ORB",
    "ORSNet",
    "MPRNET_VARIANTS",
]

#: Released hyper-parameters per task (the in-file defaults of each official ``MPRNet.py``).
MPRNET_VARIANTS = {
    "deblurring": dict(n_feat=96, scale_unetfeats=48, scale_orsnetfeats=32),
    "denoising": dict(n_feat=80, scale_unetfeats=48, scale_orsnetfeats=32),
    "deraining": dict(n_feat=40, scale_unetfeats=20, scale_orsnetfeats=16),
}


def conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = False, stride: int = 1) -> nn.Conv2d:
    """'Same'-padded convolution, the only conv factory of the official file."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias, stride=stride)


class CALayer(nn.Module):
    """Channel attention: global average pool, 1x1 squeeze/excite, sigmoid gate."""

    def __init__(self, channel: int, reduction: int = 16, bias: bool = False):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channel, channel // reduction, 1, padding=0, bias=bias),
            nn.ReLU(inplace=True),
            nn.Conv2d(channel // reduction, channel, 1, padding=0, bias=bias),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.conv_du(self.avg_pool(x))


class CAB(nn.Module):
    """Channel attention block: conv, act, conv, channel attention, identity residual.

    ``act`` is passed in (not created here) because the official network shares one PReLU across all CABs.
    """

    def __init__(self, n_feat: int, kernel_size: int, reduction: int, bias: bool, act: nn.Module):
        super().__init__()
        # Registration order (CA before body) matches the official state-dict key order.
        self.CA = CALayer(n_feat, reduction, bias=bias)
        self.body = nn.Sequential(
            conv(n_feat, n_feat, kernel_size, bias=bias),
            act,
            conv(n_feat, n_feat, kernel_size, bias=bias),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.CA(self.body(x)) + x


class SAM(nn.Module):
    """Supervised attention module: predicts a stage image and gates the features with it."""

    def __init__(self, n_feat: int, kernel_size: int, bias: bool, img_channels: int = 3):
        super().__init__()
        self.conv1 = conv(n_feat, n_feat, kernel_size, bias=bias)
        self.conv2 = conv(n_feat, img_channels, kernel_size, bias=bias)
        self.conv3 = conv(img_channels, n_feat, kernel_size, bias=bias)

    def forward(self, x: Tensor, x_img: Tensor) -> Tuple[Tensor, Tensor]:
        img = self.conv2(x) + x_img
        gate = torch.sigmoid(self.conv3(img))
        return self.conv1(x) * gate + x, img


class DownSample(nn.Module):
    """Bilinear x0.5 then a 1x1 conv adding ``s_factor`` channels.

    ``self.down[0]`` is the ``nn.Upsample(scale_factor=0.5)`` resampler: the export patch point. Replacing it with
    any parameter-free module of the same output size (e.g. an explicit-``size`` resize, or ``nn.AvgPool2d(2)``,
    which equals bilinear x0.5 with ``align_corners=False`` on even sizes) keeps the state dict unchanged.
    """

    def __init__(self, in_channels: int, s_factor: int):
        super().__init__()
        self.down = nn.Sequential(
            nn.Upsample(scale_factor=0.5, mode="bilinear", align_corners=False),
            nn.Conv2d(in_channels, in_channels + s_factor, 1, stride=1, padding=0, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.down(x)


class UpSample(nn.Module):
    """Bilinear x2 then a 1x1 conv removing ``s_factor`` channels."""

    def __init__(self, in_channels: int, s_factor: int):
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(in_channels + s_factor, in_channels, 1, stride=1, padding=0, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.up(x)


class SkipUpSample(UpSample):
    """:class:`UpSample` followed by the addition of a skip connection (same keys: ``up.1.weight``)."""

    def forward(self, x: Tensor, y: Tensor) -> Tensor:  # type: ignore[override]
        return self.up(x) + y


class Encoder(nn.Module):
    """Three-level U-Net encoder (2 CABs per level); with ``csff`` it fuses the previous stage's features."""

    def __init__(self, n_feat: int, kernel_size: int, reduction: int, act: nn.Module, bias: bool,
                 scale_unetfeats: int, csff: bool):
        super().__init__()
        c1, c2, c3 = n_feat, n_feat + scale_unetfeats, n_feat + 2 * scale_unetfeats

        def level(c: int) -> nn.Sequential:
            return nn.Sequential(*[CAB(c, kernel_size, reduction, bias=bias, act=act) for _ in range(2)])

        self.encoder_level1 = level(c1)
        self.encoder_level2 = level(c2)
        self.encoder_level3 = level(c3)
        self.down12 = DownSample(c1, scale_unetfeats)
        self.down23 = DownSample(c2, scale_unetfeats)

        # Cross-stage feature fusion (stage 2 only).
        if csff:
            self.csff_enc1 = nn.Conv2d(c1, c1, kernel_size=1, bias=bias)
            self.csff_enc2 = nn.Conv2d(c2, c2, kernel_size=1, bias=bias)
            self.csff_enc3 = nn.Conv2d(c3, c3, kernel_size=1, bias=bias)
            self.csff_dec1 = nn.Conv2d(c1, c1, kernel_size=1, bias=bias)
            self.csff_dec2 = nn.Conv2d(c2, c2, kernel_size=1, bias=bias)
            self.csff_dec3 = nn.Conv2d(c3, c3, kernel_size=1, bias=bias)

    def forward(self, x: Tensor, encoder_outs: Optional[Sequence[Tensor]] = None,
                decoder_outs: Optional[Sequence[Tensor]] = None) -> List[Tensor]:
        fuse = encoder_outs is not None and decoder_outs is not None

        enc1 = self.encoder_level1(x)
        if fuse:
            enc1 = enc1 + self.csff_enc1(encoder_outs[0]) + self.csff_dec1(decoder_outs[0])

        enc2 = self.encoder_level2(self.down12(enc1))
        if fuse:
            enc2 = enc2 + self.csff_enc2(encoder_outs[1]) + self.csff_dec2(decoder_outs[1])

        enc3 = self.encoder_level3(self.down23(enc2))
        if fuse:
            enc3 = enc3 + self.csff_enc3(encoder_outs[2]) + self.csff_dec3(decoder_outs[2])

        return [enc1, enc2, enc3]


class Decoder(nn.Module):
    """Three-level U-Net decoder; skips pass through a CAB before being added."""

    def __init__(self, n_feat: int, kernel_size: int, reduction: int, act: nn.Module, bias: bool,
                 scale_unetfeats: int):
        super().__init__()
        c1, c2, c3 = n_feat, n_feat + scale_unetfeats, n_feat + 2 * scale_unetfeats

        def level(c: int) -> nn.Sequential:
            return nn.Sequential(*[CAB(c, kernel_size, reduction, bias=bias, act=act) for _ in range(2)])

        self.decoder_level1 = level(c1)
        self.decoder_level2 = level(c2)
        self.decoder_level3 = level(c3)
        self.skip_attn1 = CAB(c1, kernel_size, reduction, bias=bias, act=act)
        self.skip_attn2 = CAB(c2, kernel_size, reduction, bias=bias, act=act)
        self.up21 = SkipUpSample(c1, scale_unetfeats)
        self.up32 = SkipUpSample(c2, scale_unetfeats)

    def forward(self, outs: Sequence[Tensor]) -> List[Tensor]:
        enc1, enc2, enc3 = outs
        dec3 = self.decoder_level3(enc3)
        dec2 = self.decoder_level2(self.up32(dec3, self.skip_attn2(enc2)))
        dec1 = self.decoder_level1(self.up21(dec2, self.skip_attn1(enc1)))
        return [dec1, dec2, dec3]


class ORB(nn.Module):
    """Original-resolution block: ``num_cab`` CABs and a 3x3 conv (always bias-free), with a residual."""

    def __init__(self, n_feat: int, kernel_size: int, reduction: int, act: nn.Module, bias: bool, num_cab: int):
        super().__init__()
        layers: List[nn.Module] = [CAB(n_feat, kernel_size, reduction, bias=bias, act=act) for _ in range(num_cab)]
        # The official tail conv ignores ``bias`` (uses the factory default False).
        layers.append(conv(n_feat, n_feat, kernel_size))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + x


class ORSNet(nn.Module):
    """Stage-3 original-resolution subnetwork: 3 ORBs, each followed by fused stage-2 U-Net features."""

    def __init__(self, n_feat: int, scale_orsnetfeats: int, kernel_size: int, reduction: int, act: nn.Module,
                 bias: bool, scale_unetfeats: int, num_cab: int):
        super().__init__()
        c_ors = n_feat + scale_orsnetfeats
        c2 = n_feat + scale_unetfeats

        self.orb1 = ORB(c_ors, kernel_size, reduction, act, bias, num_cab)
        self.orb2 = ORB(c_ors, kernel_size, reduction, act, bias, num_cab)
        self.orb3 = ORB(c_ors, kernel_size, reduction, act, bias, num_cab)

        self.up_enc1 = UpSample(n_feat, scale_unetfeats)
        self.up_dec1 = UpSample(n_feat, scale_unetfeats)
        self.up_enc2 = nn.Sequential(UpSample(c2, scale_unetfeats), UpSample(n_feat, scale_unetfeats))
        self.up_dec2 = nn.Sequential(UpSample(c2, scale_unetfeats), UpSample(n_feat, scale_unetfeats))

        self.conv_enc1 = nn.Conv2d(n_feat, c_ors, kernel_size=1, bias=bias)
        self.conv_enc2 = nn.Conv2d(n_feat, c_ors, kernel_size=1, bias=bias)
        self.conv_enc3 = nn.Conv2d(n_feat, c_ors, kernel_size=1, bias=bias)
        self.conv_dec1 = nn.Conv2d(n_feat, c_ors, kernel_size=1, bias=bias)
        self.conv_dec2 = nn.Conv2d(n_feat, c_ors, kernel_size=1, bias=bias)
        self.conv_dec3 = nn.Conv2d(n_feat, c_ors, kernel_size=1, bias=bias)

    def forward(self, x: Tensor, encoder_outs: Sequence[Tensor], decoder_outs: Sequence[Tensor]) -> Tensor:
        x = self.orb1(x)
        x = x + self.conv_enc1(encoder_outs[0]) + self.conv_dec1(decoder_outs[0])
        x = self.orb2(x)
        x = x + self.conv_enc2(self.up_enc1(encoder_outs[1])) + self.conv_dec2(self.up_dec1(decoder_outs[1]))
        x = self.orb3(x)
        x = x + self.conv_enc3(self.up_enc2(encoder_outs[2])) + self.conv_dec3(self.up_dec2(decoder_outs[2]))
        return x


class MPRNet(nn.Module):
    """Three-stage MPRNet. ``forward(x)`` returns ``[stage3_img, stage2_img, stage1_img]``; index 0 is the result.

    ``in_c``/``out_c`` are ignored by the official class (it hard-codes 3). Here they set the image channel count;
    they must be equal because the output adds the input image. Defaults build the identical network.
    """

    def __init__(self, in_c: int = 3, out_c: int = 3, n_feat: int = 96, scale_unetfeats: int = 48,
                 scale_orsnetfeats: int = 32, num_cab: int = 8, kernel_size: int = 3, reduction: int = 4,
                 bias: bool = False):
        super().__init__()
        if in_c != out_c:
            raise ValueError(f"MPRNet adds the input image to every stage output, so in_c ({in_c}) must equal "
                             f"out_c ({out_c}); the official class always uses 3")

        # One activation instance shared by every CAB, as in the official code (1 parameter, 55 state-dict keys).
        act = nn.PReLU()

        def shallow() -> nn.Sequential:
            return nn.Sequential(conv(in_c, n_feat, kernel_size, bias=bias),
                                 CAB(n_feat, kernel_size, reduction, bias=bias, act=act))

        self.shallow_feat1 = shallow()
        self.shallow_feat2 = shallow()
        self.shallow_feat3 = shallow()

        self.stage1_encoder = Encoder(n_feat, kernel_size, reduction, act, bias, scale_unetfeats, csff=False)
        self.stage1_decoder = Decoder(n_feat, kernel_size, reduction, act, bias, scale_unetfeats)
        self.stage2_encoder = Encoder(n_feat, kernel_size, reduction, act, bias, scale_unetfeats, csff=True)
        self.stage2_decoder = Decoder(n_feat, kernel_size, reduction, act, bias, scale_unetfeats)
        self.stage3_orsnet = ORSNet(n_feat, scale_orsnetfeats, kernel_size, reduction, act, bias,
                                    scale_unetfeats, num_cab)

        self.sam12 = SAM(n_feat, kernel_size=1, bias=bias, img_channels=in_c)
        self.sam23 = SAM(n_feat, kernel_size=1, bias=bias, img_channels=in_c)

        self.concat12 = conv(n_feat * 2, n_feat, kernel_size, bias=bias)
        self.concat23 = conv(n_feat * 2, n_feat + scale_orsnetfeats, kernel_size, bias=bias)
        self.tail = conv(n_feat + scale_orsnetfeats, out_c, kernel_size, bias=bias)

    # --- multi-patch split (export patch point) -------------------------------------------------------------
    def split_points(self, x: Tensor) -> Tuple[int, int]:
        """Row and column where the image is cut: the official ``int(H/2)``, ``int(W/2)``.

        These are Python ints, so a traced/exported graph bakes them in; an export rewrite overrides this method
        (e.g. returning ``x.shape[2] // 2, x.shape[3] // 2`` as symbolic sizes).
        """
        return int(x.size(2) / 2), int(x.size(3) / 2)

    def split_halves(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Top and bottom halves (the two stage-2 patches)."""
        h_half, _ = self.split_points(x)
        return x[:, :, :h_half, :], x[:, :, h_half:, :]

    def split_quadrants(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Left-top, right-top, left-bottom, right-bottom quadrants (the four stage-1 patches)."""
        h_half, w_half = self.split_points(x)
        return (x[:, :, :h_half, :w_half], x[:, :, :h_half, w_half:],
                x[:, :, h_half:, :w_half], x[:, :, h_half:, w_half:])

    def forward(self, x3_img: Tensor) -> List[Tensor]:
        x2top_img, x2bot_img = self.split_halves(x3_img)
        quadrants = self.split_quadrants(x3_img)

        # ---- Stage 1: four patches through the shared encoder, decoded as top/bottom halves.
        feats = [self.stage1_encoder(self.shallow_feat1(q)) for q in quadrants]
        feat1_ltop, feat1_rtop, feat1_lbot, feat1_rbot = feats
        feat1_top = [torch.cat((left, right), 3) for left, right in zip(feat1_ltop, feat1_rtop)]
        feat1_bot = [torch.cat((left, right), 3) for left, right in zip(feat1_lbot, feat1_rbot)]

        res1_top = self.stage1_decoder(feat1_top)
        res1_bot = self.stage1_decoder(feat1_bot)

        x2top_samfeats, stage1_img_top = self.sam12(res1_top[0], x2top_img)
        x2bot_samfeats, stage1_img_bot = self.sam12(res1_bot[0], x2bot_img)
        stage1_img = torch.cat([stage1_img_top, stage1_img_bot], 2)

        # ---- Stage 2: two halves, fused with stage-1 features, decoded on the full image.
        x2top_cat = self.concat12(torch.cat([self.shallow_feat2(x2top_img), x2top_samfeats], 1))
        x2bot_cat = self.concat12(torch.cat([self.shallow_feat2(x2bot_img), x2bot_samfeats], 1))

        feat2_top = self.stage2_encoder(x2top_cat, feat1_top, res1_top)
        feat2_bot = self.stage2_encoder(x2bot_cat, feat1_bot, res1_bot)
        feat2 = [torch.cat((top, bot), 2) for top, bot in zip(feat2_top, feat2_bot)]

        res2 = self.stage2_decoder(feat2)
        x3_samfeats, stage2_img = self.sam23(res2[0], x3_img)

        # ---- Stage 3: original resolution.
        x3_cat = self.concat23(torch.cat([self.shallow_feat3(x3_img), x3_samfeats], 1))
        x3_cat = self.stage3_orsnet(x3_cat, feat2, res2)
        stage3_img = self.tail(x3_cat)

        return [stage3_img + x3_img, stage2_img, stage1_img]
