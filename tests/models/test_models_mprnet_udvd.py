"""Reference-model checks for MPRNet and UDVD/PixelConv (CPU, deterministic, fast)."""

import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models_src.mprnet import MPRNET_VARIANTS, DownSample, MPRNet
from models_src.udvd import PixelConv, UDVD


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny forwards: one thread is faster


def n_params(model: nn.Module) -> int:
    """Distinct nn.Parameter elements (shared modules counted once)."""
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------------------------
# MPRNet
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant,expected", [
    ("deblurring", 20_127_073),
    ("denoising", 15_741_025),
    ("deraining", 3_637_249),
])
def test_mprnet_param_counts(variant, expected):
    model = MPRNet(**MPRNET_VARIANTS[variant])
    assert n_params(model) == expected


def test_mprnet_defaults_are_deblurring():
    assert n_params(MPRNet()) == 20_127_073


@pytest.fixture(scope="module")
def deraining():
    torch.manual_seed(0)
    model = MPRNet(**MPRNET_VARIANTS["deraining"]).eval()
    with torch.no_grad():  # non-trivial shared PReLU slope
        model.shallow_feat1[1].body[1].weight.fill_(0.1)
    return model


def test_mprnet_state_dict_and_shared_prelu(deraining):
    sd = deraining.state_dict(keep_vars=True)
    assert len(sd) == 316
    prelu_keys = [k for k in sd if k.endswith("body.1.weight") and sd[k].numel() == 1]
    assert len(prelu_keys) == 55
    first = sd[prelu_keys[0]]
    assert all(sd[k] is first for k in prelu_keys)
    prelus = {id(m) for m in deraining.modules() if isinstance(m, nn.PReLU)}
    assert len(prelus) == 1
    assert not any(k.endswith(".bias") for k in sd)
    # the export patch points exist where documented
    downs = [m for m in deraining.modules() if isinstance(m, DownSample)]
    assert len(downs) == 4
    assert all(isinstance(d.down[0], nn.Upsample) and d.down[0].scale_factor == 0.5 for d in downs)


def test_mprnet_strict_roundtrip(deraining):
    other = MPRNet(**MPRNET_VARIANTS["deraining"])
    other.load_state_dict(deraining.state_dict(), strict=True)
    assert other.shallow_feat1[1].body[1].weight.item() == pytest.approx(0.1)


@pytest.mark.parametrize("shape", [(1, 3, 48, 64), (2, 3, 32, 32)])
def test_mprnet_forward_shapes(deraining, shape):
    x = torch.rand(*shape)
    with torch.no_grad():
        out = deraining(x)
    assert isinstance(out, list) and len(out) == 3
    assert all(o.shape == x.shape for o in out)
    assert all(torch.isfinite(o).all() for o in out)


def test_mprnet_split_helpers(deraining):
    x = torch.arange(2 * 3 * 16 * 24, dtype=torch.float32).reshape(2, 3, 16, 24)
    assert deraining.split_points(x) == (8, 12)
    top, bot = deraining.split_halves(x)
    assert torch.equal(torch.cat([top, bot], 2), x)
    lt, rt, lb, rb = deraining.split_quadrants(x)
    assert torch.equal(torch.cat([torch.cat([lt, rt], 3), torch.cat([lb, rb], 3)], 2), x)


def test_mprnet_batch_consistent(deraining):
    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 40)
    with torch.no_grad():
        both = deraining(x)[0]
        single = deraining(x[1:])[0]
    torch.testing.assert_close(both[1:], single, rtol=1e-5, atol=1e-5)


def test_mprnet_downsample_swap_is_equivalent(deraining):
    """Bilinear x0.5 (align_corners=False) equals 2x2 average pooling on even sizes: a valid export rewrite."""
    import copy

    patched = copy.deepcopy(deraining)
    for m in patched.modules():
        if isinstance(m, DownSample):
            m.down[0] = nn.AvgPool2d(2)
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        ref, new = deraining(x), patched(x)
    for a, b in zip(ref, new):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_mprnet_rejects_mismatched_channels():
    with pytest.raises(ValueError, match="in_c"):
        MPRNet(in_c=3, out_c=1, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4)


# ----------------------------------------------------------------------------------------------------------------
# PixelConv
# ----------------------------------------------------------------------------------------------------------------

def pixelconv_loop(feature, kernel, scale, k, tap_order="ba"):
    """Direct per-pixel evaluation of the udvd.md formula, then pixel_shuffle."""
    n, c, h, w = feature.shape
    s2 = scale * scale
    p = (k - 1) // 2
    padded = F.pad(feature, [p, p, p, p])
    pre = torch.zeros(n, c * s2, h, w, dtype=feature.dtype)
    for bn, ch, j, y, x in itertools.product(range(n), range(c), range(s2), range(h), range(w)):
        acc = 0.0
        for a in range(k):
            for b in range(k):
                tap = b * k + a if tap_order == "ba" else a * k + b
                acc += padded[bn, ch, y + a, x + b] * kernel[bn, tap * s2 + j, y, x]
        pre[bn, ch * s2 + j, y, x] = acc
    return F.pixel_shuffle(pre, scale) if scale > 1 else pre


@pytest.mark.parametrize("scale,k", [(1, 3), (1, 5), (2, 3), (2, 5), (3, 3)])
def test_pixelconv_matches_formula(scale, k):
    g = torch.Generator().manual_seed(100 * scale + k)
    n, c, h, w = 2, 2, 4, 5
    feature = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    kernel = torch.randn(n, k * k * scale * scale, h, w, generator=g, dtype=torch.float64)
    out = PixelConv(scale=scale, depthwise=True)(feature, kernel)
    assert out.shape == (n, c, h * scale, w * scale)
    torch.testing.assert_close(out, pixelconv_loop(feature, kernel, scale, k, "ba"), rtol=1e-10, atol=1e-10)
    # sensitivity: the row-major tap order must NOT match
    assert not torch.allclose(out, pixelconv_loop(feature, kernel, scale, k, "ab"), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("scale", [1, 2])
def test_pixelconv_non_depthwise_single_channel(scale):
    g = torch.Generator().manual_seed(7)
    feature = torch.randn(2, 1, 3, 4, generator=g, dtype=torch.float64)
    kernel = torch.randn(2, 9 * scale * scale, 3, 4, generator=g, dtype=torch.float64)
    out = PixelConv(scale=scale, depthwise=False)(feature, kernel)
    assert out.shape == (2, 1, 3 * scale, 4 * scale)
    torch.testing.assert_close(out, pixelconv_loop(feature, kernel, scale, 3), rtol=1e-10, atol=1e-10)


def test_pixelconv_non_depthwise_multi_channel_raises():
    feature = torch.randn(1, 3, 4, 4)
    kernel = torch.randn(1, 9 * 3 * 4, 4, 4)
    with pytest.raises(ValueError, match=r"C == 1.*matmul shapes do not agree.*depthwise"):
        PixelConv(scale=2, depthwise=False)(feature, kernel)


@pytest.mark.parametrize("scale,channels", [(1, 8), (1, 16), (2, 9), (2, 64), (2, 99), (1, 0)])
def test_pixelconv_bad_kernel_channels_raise(scale, channels):
    feature = torch.randn(1, 3, 4, 4)
    kernel = torch.randn(1, channels, 4, 4)
    with pytest.raises(ValueError, match="odd integer k"):
        PixelConv(scale=scale)(feature, kernel)


def test_pixelconv_mismatched_sizes_raise():
    with pytest.raises(ValueError, match="batch and spatial"):
        PixelConv(scale=1)(torch.randn(1, 3, 4, 4), torch.randn(1, 9, 4, 5))


# ----------------------------------------------------------------------------------------------------------------
# UDVD
# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def udvd():
    torch.manual_seed(0)
    return UDVD().eval()


def test_udvd_param_count(udvd):
    assert n_params(udvd) == 4_835_999


def test_udvd_parameter_names(udvd):
    keys = set(udvd.state_dict())
    expected = {"head.weight", "body.14.conv.2.bias", "UpDyConv.image_conv.4.weight", "UpDyConv.feat_residual.0.weight",
                "UpDyConv.feat_residual.3.weight", "UpDyConv.feat_kernel.weight", "ComDyConv1.feat_conv.1.weight",
                "ComDyConv2.feat_residual.2.weight", "ComDyConv2.feat_kernel.bias"}
    assert expected <= keys
    assert udvd.UpDyConv.feat_kernel.weight.shape == (100, 160, 3, 3)
    assert udvd.ComDyConv1.feat_kernel.weight.shape == (25, 160, 3, 3)


@pytest.mark.parametrize("n,h,w", [(1, 8, 8), (2, 6, 10)])
def test_udvd_forward_shapes(udvd, n, h, w):
    g = torch.Generator().manual_seed(h * w)
    image = torch.rand(n, 3, h, w, generator=g)
    kernel = torch.randn(n, 15, h, w, generator=g)
    noise = torch.full((n, 1, h, w), 0.05)
    with torch.no_grad():
        out = udvd(image, kernel, noise)
    assert isinstance(out, tuple) and len(out) == 3
    assert all(o.shape == (n, 3, 2 * h, 2 * w) for o in out)
    assert all(torch.isfinite(o).all() for o in out)
    if n > 1:
        with torch.no_grad():
            single = udvd(image[1:], kernel[1:], noise[1:])
        for a, b in zip(out, single):
            torch.testing.assert_close(a[1:], b, rtol=1e-5, atol=1e-5)
