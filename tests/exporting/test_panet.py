"""PANet / PA-EDSR (models_src/panet.py), the pyramid-attention export form and the official chop.

CPU only, tiny spatial sizes (the attention is quadratic in H*W). What is checked:

* distinct-parameter counts of all six variants (built on the meta device) = the official figures;
* the official state_dict layout round-trips strictly: ``escape_NaN`` buffers, unused ``sub_mean``/``add_mean``,
  80 copies of the one shared PReLU (PANET), ``msa.*`` = ``body.16.*`` (PA-EDSR), and a flat checkpoint file
  loads through ``deploykit.zoo.checkpoints``;
* ``PyramidAttentionMatmul`` equals the reference attention (float64 to 1e-10, float32 to 1e-4) at non-square,
  batch-2 and pyramid-quirk shapes, and the whole model through ``forms.build_export_module``;
* the exact pyramid sizes (PyTorch's float64 ``int(side * s)``, 90 * 0.7 -> 62) in eager and traced form;
* legacy ONNX exports (dynamic N/H/W) of PANET and of a small PA-EDSR match PyTorch at two tile shapes;
* ``deploykit.imaging.chop.forward_chop``: the official recursion (call shapes, SR rounding), exact for local models,
  whole-image runs where the image cannot be split, and quadrant-by-quadrant for non-local ones.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deploykit.exporting import forms
from deploykit.imaging.chop import chop_for, chop_settings, forward_chop, leaf_shapes
from deploykit.zoo.factory import build_model
from deploykit.exporting.forms_panet import PyramidAttentionMatmul, PyramidSide, apply_pyramid_attention
from deploykit.exporting.onnx_export import dim_request, export_onnx
from deploykit.zoo.registry import get_spec
from models_src.panet import PAEDSR, PyramidAttention

VARIANTS = {"panet:dn": 5_957_279, "panet:car": 5_954_973, "panet:demosaic": 5_957_279,
            "paedsr:x2": 40_811_870, "paedsr:x3": 43_762_270, "paedsr:x4": 43_172_190}


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny forwards: one thread is faster


@pytest.fixture(scope="module")
def panet_dn():
    return build_model("panet:dn")[0]


@pytest.fixture(scope="module")
def panet_form(panet_dn):
    return forms.build_export_module(panet_dn, get_spec("panet:dn"), [(1, 12, 16), (2, 16, 16), (1, 10, 14)])


def _session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# --- the reference ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(VARIANTS))
def test_parameter_counts(name):
    spec = get_spec(name)
    with torch.device("meta"):
        model = spec.build()
    assert sum(p.numel() for p in model.parameters()) == VARIANTS[name] == spec.params


def test_panet_state_dict_layout_round_trips_strictly(panet_dn):
    state = panet_dn.state_dict()
    assert len(state) == 420
    assert torch.equal(state["body.40.escape_NaN"], torch.tensor([1e-4]))
    assert {"sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias"} <= set(state)
    prelu_keys = [k for k in state if k.endswith("body.1.weight") and k.startswith("body.")]
    assert len(prelu_keys) == 80
    shared = {id(panet_dn.body[i].body[1]) for i in list(range(40)) + list(range(41, 81))}
    assert len(shared) == 1  # one PReLU for every ResBlock
    assert panet_dn.body[0].body[0].bias is not None  # nn.PReLU() landed in `bias`
    fresh = get_spec("panet:dn").build()
    fresh.load_state_dict({k: v.clone() for k, v in state.items()}, strict=True)
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in state.items())


def test_car_keeps_three_channel_mean_shift_and_loads_flat_checkpoint(tmp_path):
    spec = get_spec("panet:car")
    model = spec.build()
    state = model.state_dict()
    assert state["sub_mean.weight"].shape == (3, 3, 1, 1) and state["head.0.weight"].shape == (64, 1, 3, 3)
    path = tmp_path / "model_best.pt"
    torch.save(state, path)  # the official Model.save: a flat state_dict
    target, _, report = build_model(spec, path)
    assert report.wrapper_key is None and report.tensors == 420
    assert torch.equal(target.state_dict()["body.81.weight"], state["body.81.weight"])


def test_paedsr_attention_is_stored_twice_and_round_trips():
    model = get_spec("paedsr:x4").build()
    state = model.state_dict()
    msa = {k[len("msa."):]: v for k, v in state.items() if k.startswith("msa.")}
    body16 = {k[len("body.16."):]: v for k, v in state.items() if k.startswith("body.16.")}
    assert msa and msa.keys() == body16.keys() and "escape_NaN" in msa
    assert all(torch.equal(msa[k], body16[k]) for k in msa)
    assert model.msa is model.body[16]
    assert {"tail.0.0.weight", "tail.0.2.weight", "tail.1.weight"} <= set(state)
    assert model.tail[0][0].stride == (1, 1)  # upstream's stride=True slip
    fresh = PAEDSR(scale=4)
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(fresh.msa.conv_assembly[0].weight, model.body[16].conv_assembly[0].weight)


def test_bicubic_pyramid_uses_recomputed_scale_factor():
    pa = PyramidAttention(channel=8, reduction=2)
    seen = []
    pa.conv_assembly.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[2:])))
    with torch.no_grad():
        pa(torch.rand(1, 8, 90, 10))
    assert seen == [(90, 10), (81, 9), (72, 8), (62, 7), (54, 6)]  # 90 * 0.7 = 62.99999999999999 in float64
    x = torch.rand(1, 8, 9, 11)
    a = F.interpolate(x, scale_factor=0.7, mode="bicubic", recompute_scale_factor=True)
    b = F.interpolate(x, size=(6, 7), mode="bicubic", align_corners=False)
    assert torch.equal(a, b)


# --- the export form ----------------------------------------------------------------------------------------

def test_pyramid_side_is_exact_eager_and_traced():
    for scale in (0.9, 0.8, 0.7, 0.6):
        side = PyramidSide(scale)
        sides = torch.arange(1, 2049)
        traced = torch.stack([side(s) for s in sides])  # 0-d tensors: the traced code path
        expected = torch.tensor([int(float(s) * scale) for s in range(1, 2049)])
        assert torch.equal(traced, expected)
        assert all(side(s) == int(float(s) * scale) for s in (1, 2, 90, 170, 1000))
    assert PyramidSide(0.7)(torch.tensor(90)).item() == 62 and 90 in PyramidSide(0.7).exceptions
    assert not PyramidSide(0.9).exceptions


@pytest.mark.parametrize("channel,reduction,res_scale", [(64, 2, 1.0), (256, 8, 0.1)])
def test_form_equals_reference_attention(channel, reduction, res_scale):
    torch.manual_seed(0)
    reference = PyramidAttention(channel=channel, reduction=reduction, res_scale=res_scale).eval()
    form = PyramidAttentionMatmul(reference).eval()
    for n, h, w in [(1, 12, 16), (2, 16, 16), (2, 9, 13), (1, 90, 5)]:
        x = torch.randn(n, channel, h, w, dtype=torch.float64)
        with torch.no_grad():
            ref64, got64 = reference.double()(x), form.double()(x)
            ref32, got32 = reference.float()(x.float()), form.float()(x.float())
        assert ref64.shape == got64.shape == (n, channel, h, w)
        assert (ref64 - got64).abs().max().item() < 1e-10
        assert (ref32 - got32).abs().max().item() < 1e-4


def test_build_export_module_on_panet_and_paedsr_layout(panet_dn, panet_form):
    module, records = panet_form
    assert [r.name for r in records] == ["pyramid-attention"]
    assert max(c["max_abs"] for c in records[0].checks) < 1e-4
    assert isinstance(module.model.body[40], PyramidAttentionMatmul)
    assert isinstance(panet_dn.body[40], PyramidAttention)  # the reference is untouched
    small = PAEDSR(scale=2, n_resblocks=2)
    copy_ = copy.deepcopy(small)
    apply_pyramid_attention(copy_, "matmul")
    assert copy_.msa is copy_.body[1] and isinstance(copy_.msa, PyramidAttentionMatmul)
    assert copy_.state_dict().keys() == small.state_dict().keys()


def test_dynamo_export_is_refused_with_a_reason(tmp_path):
    from deploykit.errors import ExportError

    class Wrap(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image):
            return self.m(image)

    form = Wrap(PyramidAttentionMatmul(PyramidAttention(channel=8, reduction=2))).eval()
    request = dim_request([("image", 8)], [("output", 8)], None, 1)
    with pytest.raises(ExportError, match="legacy exporter"):
        export_onnx(form, (torch.rand(2, 8, 12, 14),), tmp_path / "pa.onnx", request, exporter="dynamo")


def _export_and_compare(module, reference, channels, scale, example, shapes, path):
    request = dim_request([("image", channels)], [("output", channels)], None, scale)
    model, _ = export_onnx(module, (torch.rand(*example),), path, request, exporter="legacy")
    ops = {n.op_type for n in model.graph.node}
    assert "Resize" in ops and "MatMul" in ops
    assert not ops & {"Col2Im", "ConvTranspose", "Loop", "Scan", "Im2Col"}
    session = _session(path)
    errors = []
    for n, h, w in shapes:
        x = torch.rand(n, channels, h, w)
        with torch.no_grad():
            want = reference(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.shape == want.shape == (n, channels, h * scale, w * scale)
        errors.append(float(np.abs(got - want).max()))
    assert max(errors) <= 1e-4, errors
    return errors


def test_onnx_legacy_panet_matches_pytorch_at_two_tile_shapes(panet_dn, panet_form, tmp_path):
    module, _ = panet_form
    _export_and_compare(module, panet_dn, 3, 1, (2, 3, 16, 20), [(1, 24, 20), (2, 12, 16)],
                        tmp_path / "panet.onnx")


def test_onnx_legacy_paedsr_small_matches_pytorch_incl_pyramid_quirk(tmp_path):
    torch.manual_seed(1)
    reference = PAEDSR(scale=3, n_resblocks=2).eval()  # same attention (256, r=8) and upsampler as x3
    module = copy.deepcopy(reference)
    apply_pyramid_attention(module, "matmul")
    _export_and_compare(module.eval(), reference, 3, 3, (2, 3, 14, 18), [(2, 12, 16), (1, 90, 6)],
                        tmp_path / "paedsr.onnx")


# --- chop --------------------------------------------------------------------------------------------------

class _Recorder(nn.Module):
    """A local model (3x3 conv, optional nearest x s upsampling) that records the shapes it is called with."""

    def __init__(self, scale: int = 1, channels: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.scale = scale
        self.calls: list[tuple[int, int]] = []

    def forward(self, x):
        self.calls.append(tuple(x.shape[2:]))
        y = self.conv(x)
        return F.interpolate(y, scale_factor=self.scale, mode="nearest") if self.scale > 1 else y


@pytest.mark.parametrize("h,w,scale,min_size,calls,leaf", [
    (100, 100, 1, 6800, 4, (60, 60)),   # 60*60 < 6800: one split
    (200, 200, 1, 6800, 16, (65, 65)),  # 110*110 >= 6800 -> recurse -> 65*65
    (50, 50, 3, 6400, 4, (37, 37)),     # 35 + 35 % 3
    (201, 161, 2, 6400, 16, (66, 56)),  # 110x90 -> recurse -> 65+1 x 55+1
    (19, 30, 1, 6400, 4, (19, 25)),     # smallest side the official code can split
])
def test_chop_reproduces_official_recursion(h, w, scale, min_size, calls, leaf):
    model = _Recorder(scale)
    x = torch.rand(2, 3, h, w)
    with torch.no_grad():
        out = forward_chop(model, x, scale=scale, shave=10, min_size=min_size)
        whole = model(x)
    assert model.calls[:-1] == [leaf] * calls == leaf_shapes(h, w, scale=scale, min_size=min_size)
    assert out.shape == whole.shape == (2, 3, h * scale, w * scale)
    assert torch.allclose(out, whole, atol=1e-6)  # a local model cannot tell: the paste geometry is right
    with torch.no_grad():
        numpy_out = forward_chop(lambda a: model(torch.from_numpy(a)).numpy(), x.numpy(), scale=scale,
                                 min_size=min_size, patches_per_call=4)
    assert np.allclose(numpy_out, out.numpy(), atol=1e-6)  # numpy runners (ORT, TensorRT) chop the same way


def test_chop_runs_whole_when_image_is_too_small_or_fits(panet_dn):
    x = torch.rand(1, 3, 12, 16)
    with torch.no_grad():
        whole = panet_dn(x)
        assert torch.equal(forward_chop(panet_dn, x, min_size=6800), whole)  # official code crashes here
        y = torch.rand(1, 3, 22, 26)
        assert torch.equal(forward_chop(panet_dn, y, min_size=6800, whole_if_fits=True), panet_dn(y))


def test_chop_is_quadrant_by_quadrant_for_nonlocal_models():
    def nonlocal_model(t):  # depends on the whole input, like the attention
        return t - t.mean(dim=(2, 3), keepdim=True)

    x = torch.rand(1, 3, 30, 40)  # quadrants 25x30 < min_size: one split
    out = forward_chop(nonlocal_model, x, min_size=6400)
    assert not torch.allclose(out, nonlocal_model(x), atol=1e-3)
    top_left = nonlocal_model(x[:, :, :25, :30])
    assert torch.allclose(out[:, :, :15, :20], top_left[:, :, :15, :20], atol=1e-6)
    bottom_right = nonlocal_model(x[:, :, 5:, 10:])
    assert torch.allclose(out[:, :, 15:, 20:], bottom_right[:, :, 10:, 10:], atol=1e-6)


def test_zoo_records_chop_and_tile_contract():
    dn, car, sr = get_spec("panet"), get_spec("panet:car"), get_spec("paedsr:x3")
    assert dn.variant == "dn" and dn.chop == {"shave": 10, "min_size": 6800}
    assert car.chop["min_size"] == 6400 and car.in_channels == car.out_channels == 1
    assert chop_settings(sr).scale == 3 and sr.chop["min_size"] == 6400
    assert dn.tile and sr.tile and dn.tile >= max(max(leaf_shapes(1080, 1920, min_size=6800)))
    assert chop_settings(get_spec("edsr:m_x4")) is None
    model = _Recorder(3)
    with torch.no_grad():
        out = chop_for(sr, model)(torch.rand(1, 3, 40, 44))
    assert out.shape == (1, 3, 120, 132) and len(model.calls) == 4
    assert math.isclose(get_spec("paedsr:x2").kwargs["res_scale"], 0.1)


def test_infer_uses_the_official_chop_by_default(tmp_path):
    from PIL import Image

    from deploykit.infer.run import infer

    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 52, 3)) * 255).astype(np.uint8)).save(tmp_path / "in.png")
    report = infer("panet:dn", [tmp_path / "in.png"], tmp_path / "out")
    result = report.results[0]
    assert result.ok and result.plan == "official chop (shave 10, min size 6800)"
    assert Image.open(result.output).size == (52, 40)
