"""Tests for the MIRNet-v2 and MIRNet (v1) reference models.

Expected numbers come from the architecture fact sheet (shared/reference/architectures.md, sections 2.1
and 2.2), which measured them on the unmodified official classes. Inputs are kept tiny so the file
runs in a few seconds on CPU.
"""

import pytest
import torch

from models_src.mirnet import MIRNet
from models_src.mirnet_v2 import MIRNet_v2


def n_params(model):
    # model.parameters() yields each shared nn.Parameter once.
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def v2():
    torch.manual_seed(0)
    return MIRNet_v2().eval()


@pytest.fixture(scope="module")
def v2_defocus():
    torch.manual_seed(0)
    return MIRNet_v2(inp_channels=6, task="defocus_deblurring").eval()


@pytest.fixture(scope="module")
def v1():
    torch.manual_seed(0)
    return MIRNet().eval()


# --------------------------------------------------------------------------------------------------
# MIRNet-v2
# --------------------------------------------------------------------------------------------------


def test_v2_param_counts(v2, v2_defocus):
    assert n_params(v2) == 5_858_560
    assert n_params(v2_defocus) == 5_860_720


def test_v2_state_dict_layout(v2, v2_defocus):
    sd = v2.state_dict()
    assert len(sd) == 238
    assert len(v2_defocus.state_dict()) == 238
    assert not any(k.endswith(".bias") for k in sd)  # bias=False everywhere
    assert sum(v.numel() for v in sd.values()) == 5_858_560  # no sharing visible in the v2 state_dict

    expected = {
        "conv_in.weight": (80, 3, 3, 3),
        "conv_out.weight": (3, 80, 3, 3),
        "body.0.body.2.weight": (80, 80, 3, 3),  # RRG tail conv
        "body.3.body.2.weight": (80, 80, 3, 3),
        "body.0.body.0.dau_top.body.0.weight": (80, 80, 3, 3),  # groups=1
        "body.1.body.0.dau_mid.body.0.weight": (120, 60, 3, 3),  # groups=2
        "body.2.body.1.dau_bot.body.2.weight": (180, 45, 3, 3),  # groups=4
        "body.3.body.1.dau_top.body.0.weight": (80, 20, 3, 3),  # groups=4
        "body.0.body.0.dau_top.gcnet.conv_mask.weight": (1, 80, 1, 1),
        "body.0.body.0.dau_bot.gcnet.channel_add_conv.2.weight": (180, 180, 1, 1),
        "body.0.body.0.down2.body.0.bot.1.weight": (120, 80, 1, 1),
        "body.0.body.0.down4.0.body.0.bot.1.weight": (120, 80, 1, 1),
        "body.0.body.0.down4.1.body.0.bot.1.weight": (180, 120, 1, 1),
        "body.0.body.0.up21_1.body.0.bot.0.weight": (80, 120, 1, 1),
        "body.0.body.0.up32_2.body.0.bot.0.weight": (120, 180, 1, 1),
        "body.0.body.0.conv_out.weight": (80, 80, 1, 1),
        "body.0.body.0.skff_top.conv_du.0.weight": (10, 80, 1, 1),
        "body.0.body.0.skff_mid.conv_du.0.weight": (15, 120, 1, 1),
        "body.0.body.0.skff_mid.fcs.1.weight": (120, 15, 1, 1),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert tuple(v2_defocus.state_dict()["conv_in.weight"].shape) == (80, 6, 3, 3)


def test_v2_ignored_constructor_args(v2):
    """n_RRG, height, width and scale do not change the network (official behaviour)."""
    other = MIRNet_v2(n_RRG=2, height=5, width=7, scale=4)
    sd_a, sd_b = v2.state_dict(), other.state_dict()
    assert list(sd_a) == list(sd_b)
    assert all(sd_a[k].shape == sd_b[k].shape for k in sd_a)


def test_v2_strict_load_roundtrip(v2):
    torch.manual_seed(1)
    other = MIRNet_v2().eval()
    other.load_state_dict(v2.state_dict(), strict=True)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(other(x), v2(x))


@pytest.mark.parametrize("shape", [(1, 3, 32, 48), (2, 3, 40, 40)])
def test_v2_output_shape(v2, shape):
    with torch.no_grad():
        y = v2(torch.rand(*shape))
    assert y.shape == shape
    assert torch.isfinite(y).all()


def test_v2_defocus_channels(v2_defocus):
    with torch.no_grad():
        y = v2_defocus(torch.rand(2, 6, 16, 24))
    assert y.shape == (2, 3, 16, 24)


def test_v2_residual_paths():
    """Default adds the input image; defocus adds shallow features instead (no image residual)."""
    torch.manual_seed(0)
    plain = MIRNet_v2(n_feat=16).eval()
    defocus = MIRNet_v2(inp_channels=6, n_feat=16, task="defocus_deblurring").eval()
    for m in (plain, defocus):
        torch.nn.init.zeros_(m.conv_out.weight)
    with torch.no_grad():
        x3 = torch.rand(1, 3, 16, 16)
        assert torch.equal(plain(x3), x3)
        assert torch.count_nonzero(defocus(torch.rand(1, 6, 16, 16))) == 0


@pytest.mark.parametrize("hw", [(30, 32), (32, 34), (31, 32)])
def test_v2_rejects_non_multiple_of_4(v2, hw):
    """As upstream there is no explicit check: torch.cat in SKFF fails on the size mismatch."""
    with torch.no_grad(), pytest.raises(RuntimeError):
        v2(torch.rand(1, 3, *hw))


def test_v2_deterministic():
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        m = MIRNet_v2(n_feat=16).eval()
        x = torch.rand(2, 3, 16, 20)
        with torch.no_grad():
            outs.append((m(x), m(x)))
    (a1, a2), (b1, b2) = outs
    assert torch.equal(a1, a2)
    assert torch.equal(a1, b1)
    assert torch.equal(b1, b2)


def test_v2_batch_consistency(v2):
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        both = v2(x)
        single = torch.cat([v2(x[:1]), v2(x[1:])])
    torch.testing.assert_close(both, single, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# MIRNet v1
# --------------------------------------------------------------------------------------------------


def test_v1_counts(v1):
    sd = v1.state_dict()
    assert n_params(v1) == 31_787_419
    assert len(sd) == 797
    assert sum(v.numel() for v in sd.values()) == 42_280_770
    assert not any(k.endswith(".bias") for k in sd)


def test_v1_antialias_buffers(v1):
    sd = v1.state_dict()
    filt_keys = [k for k in sd if k.endswith(".filt")]
    assert len(filt_keys) == 48
    a = torch.tensor([1.0, 2.0, 1.0])
    kernel = (a[:, None] * a[None, :]) / 16.0
    for k in filt_keys:
        f = sd[k]
        assert f.shape[1:] == (1, 3, 3) and f.shape[0] in (64, 128), k
        assert torch.equal(f, kernel.expand_as(f)), k
    assert {k for k, _ in v1.named_buffers()} == set(filt_keys)  # all persistent, nothing else


def test_v1_spot_keys(v1):
    sd = v1.state_dict()
    expected = {
        "conv_in.weight": (64, 3, 3, 3),
        "conv_out.weight": (3, 64, 3, 3),
        "body.2.body.2.weight": (64, 64, 3, 3),  # RRG tail conv
        "body.0.body.0.blocks.0.0.body.0.weight": (64, 64, 3, 3),
        "body.0.body.0.blocks.0.1.body.1.weight": (1,),  # shared PReLU
        "body.0.body.0.blocks.2.1.SA.spatial.conv.weight": (1, 2, 5, 5),
        "body.0.body.0.blocks.2.0.CA.conv_du.0.weight": (32, 256, 1, 1),
        "body.0.body.0.blocks.1.0.conv1x1.weight": (128, 256, 1, 1),
        "body.0.body.0.down.64_4.body.1.top.5.weight": (256, 128, 1, 1),
        "body.0.body.0.down.64_2.body.0.top.4.filt": (64, 1, 3, 3),
        "body.0.body.0.down.128_2.body.0.bot.0.filt": (128, 1, 3, 3),
        "body.0.body.0.up.256_2.body.0.top.2.weight": (256, 256, 3, 3),  # ConvTranspose2d
        "body.0.body.0.up.128_2.body.0.bot.1.weight": (64, 128, 1, 1),
        "body.0.body.0.last_up.2.body.1.top.4.weight": (64, 128, 1, 1),
        "body.0.body.0.selective_kernel.0.conv_du.0.weight": (8, 64, 1, 1),
        "body.0.body.0.selective_kernel.2.conv_du.0.weight": (32, 256, 1, 1),
        "body.0.body.0.selective_kernel.1.conv_du.1.weight": (1,),
        "body.0.body.0.selective_kernel.2.fcs.2.weight": (256, 32, 1, 1),
        "body.0.body.1.conv_out.weight": (64, 64, 3, 3),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    msrb = v1.body[0].body[0]
    assert list(msrb.down.keys()) == ["64_4", "64_2", "128_2"]
    assert list(msrb.up.keys()) == ["256_4", "256_2", "128_2"]
    assert list(msrb.last_up.keys()) == ["1", "2"]


def test_v1_sharing(v1):
    sd = v1.state_dict()
    # Each stream's DAU list repeats a single instance.
    msrbs = [m for m in v1.modules() if m.__class__.__name__ == "MSRB"]
    assert len(msrbs) == 6
    for msrb in msrbs:
        for stream in msrb.blocks:
            assert stream[0] is stream[1]
    dau_ids = {id(m) for m in v1.modules() if m.__class__.__name__ == "DAU"}
    assert len(dau_ids) == 18

    # Duplicated keys hold equal (indeed identical) tensors.
    dup = [k for k in sd if ".blocks." in k and k.split(".blocks.")[1].split(".")[1] == "1"]
    assert dup
    for k1 in dup:
        j = k1.split(".blocks.")[1].split(".")[0]
        k0 = k1.replace(f".blocks.{j}.1.", f".blocks.{j}.0.")
        assert torch.equal(sd[k0], sd[k1]), k1

    # One PReLU scalar is shared by all DAUs (official default-argument PReLU).
    prelu_keys = [k for k in sd if ".blocks." in k and k.endswith(".body.1.weight")]
    assert len(prelu_keys) == 36
    prelus = {id(m.body[1]) for m in v1.modules() if m.__class__.__name__ == "DAU"}
    assert len(prelus) == 1
    weight = v1.body[0].body[0].blocks[0][0].body[1].weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.fill_(0.1)
        sd = v1.state_dict()
        assert all(float(sd[k]) == pytest.approx(0.1) for k in prelu_keys)
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def test_v1_strict_load_and_separate_instances(v1):
    torch.manual_seed(1)
    other = MIRNet().eval()
    # The shared PReLU is per model instance, not global as the official default argument is.
    assert other.body[0].body[0].blocks[0][0].body[1] is not v1.body[0].body[0].blocks[0][0].body[1]
    other.load_state_dict(v1.state_dict(), strict=True)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(other(x), v1(x))


@pytest.mark.parametrize("shape", [(1, 3, 32, 48), (2, 3, 40, 40)])
def test_v1_output_shape(v1, shape):
    with torch.no_grad():
        y = v1(torch.rand(*shape))
    assert y.shape == shape
    assert torch.isfinite(y).all()


def test_v1_image_residual():
    torch.manual_seed(0)
    m = MIRNet(n_feat=16, n_RRG=1, n_MSRB=1).eval()
    torch.nn.init.zeros_(m.conv_out.weight)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(m(x), x)


@pytest.mark.parametrize("hw", [(30, 32), (32, 34)])
def test_v1_rejects_non_multiple_of_4(v1, hw):
    """No explicit check upstream: the SKFF concatenation fails on the size mismatch."""
    with torch.no_grad(), pytest.raises(RuntimeError):
        v1(torch.rand(1, 3, *hw))


def test_v1_deterministic():
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        m = MIRNet(n_feat=8, n_RRG=1, n_MSRB=1).eval()
        x = torch.rand(2, 3, 16, 20)
        with torch.no_grad():
            outs.append((m(x), m(x)))
    (a1, a2), (b1, b2) = outs
    assert torch.equal(a1, a2)
    assert torch.equal(a1, b1)
    assert torch.equal(b1, b2)
