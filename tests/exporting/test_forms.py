"""Export forms (deploykit/forms.py) against their references: PixelConv rewrites and the MPRNet split.

CPU only, small shapes. What is checked:

* ``PixelConvUnfold`` / ``PixelConvShift`` equal ``models_src.udvd.PixelConv`` (float64 and float32, scale 1/2/3,
  k 3/5, non-square, batch 2) and reject bad kernel channel counts;
* each form exported alone with the legacy exporter (dynamic N/H/W) runs in ONNX Runtime at two other shapes and
  matches the reference, with no Loop/Scan/Sequence ops and a fixed channel dim;
* ``build_export_module`` on the real UDVD (both options) matches the reference's image output, leaves the
  reference untouched, and turns a wrong form into a ``FormCheckError`` with the figures;
* MPRNet: the form's graph, exported at one size, is right at two other sizes; the unpatched reference's graph
  is not (the baked ``int(H/2)`` split this form exists for).
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from deploykit.exporting import forms
from deploykit.errors import FormCheckError
from deploykit.zoo.factory import build_model
from deploykit.zoo.sample_inputs import random_inputs
from deploykit.exporting.onnx_export import dim_request, export_onnx
from deploykit.zoo.registry import get_spec
from models_src.udvd import PixelConv

FORM_CLASSES = {"unfold": forms.PixelConvUnfold, "shift": forms.PixelConvShift}
FORBIDDEN_OPS = {"Loop", "Scan", "SequenceConstruct", "SequenceAt"}


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny forwards: one thread is faster


def _session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _pixelconv_inputs(n, c, h, w, k, scale, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    feature = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    kernel = torch.randn(n, k * k * scale * scale, h, w, generator=gen, dtype=dtype)
    return feature, kernel


# ----------------------------------------------------------------------------------------------------------------
# PixelConv forms vs the reference, in PyTorch
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("scale", [1, 2, 3])
@pytest.mark.parametrize("form", sorted(FORM_CLASSES))
def test_pixelconv_form_matches_reference(form, scale, k, dtype, tol):
    feature, kernel = _pixelconv_inputs(2, 3, 7, 11, k, scale, dtype, seed=10 * scale + k)
    with torch.no_grad():
        ref = PixelConv(scale=scale, depthwise=True)(feature, kernel)
        got = FORM_CLASSES[form](scale)(feature, kernel)
    assert got.dtype == dtype
    assert got.shape == ref.shape == (2, 3, 7 * scale, 11 * scale)
    assert (got - ref).abs().max().item() <= tol


@pytest.mark.parametrize("form", sorted(FORM_CLASSES))
def test_pixelconv_form_tap_order_is_column_major(form):
    """One non-zero tap: kernel channel (b*k + a)*s^2 + j reads feature at row offset a, column offset b."""
    k, scale, a, b, j = 3, 2, 0, 2, 1  # a != b so a row-major mix-up moves the picked pixel
    feature = torch.arange(1 * 1 * 4 * 5, dtype=torch.float64).reshape(1, 1, 4, 5) + 1
    kernel = torch.zeros(1, k * k * scale * scale, 4, 5, dtype=torch.float64)
    kernel[0, (b * k + a) * scale * scale + j] = 1.0
    got = FORM_CLASSES[form](scale)(feature, kernel)
    ref = PixelConv(scale=scale)(feature, kernel)
    assert torch.equal(got, ref)
    # sub-pixel j=1 is (row 0, col 1) of each 2x2 block; pixel (y, x) reads padded (y+a, x+b) = feature (y-1, x+1)
    assert got[0, 0, 2 * 1, 2 * 0 + 1].item() == feature[0, 0, 0, 1].item()


@pytest.mark.parametrize("scale,channels", [(1, 8), (1, 16), (2, 50), (2, 64), (2, 99), (3, 10), (1, 0)])
@pytest.mark.parametrize("form", sorted(FORM_CLASSES))
def test_pixelconv_form_rejects_bad_kernel_channels(form, scale, channels):
    """Not k*k*s^2 channels, or an even k (16 = 4*4 at s=1, 64 = 4*4*4 at s=2): ValueError, like the reference."""
    feature = torch.randn(1, 3, 5, 6)
    kernel = torch.randn(1, channels, 5, 6)
    with pytest.raises(ValueError, match="kernel channels"):
        FORM_CLASSES[form](scale)(feature, kernel)
    with pytest.raises(ValueError):
        PixelConv(scale=scale)(feature, kernel)


# ----------------------------------------------------------------------------------------------------------------
# Each PixelConv form exported alone (legacy exporter, dynamic N/H/W) and run in ONNX Runtime
# ----------------------------------------------------------------------------------------------------------------

class _FormOnly(nn.Module):
    def __init__(self, form: nn.Module):
        super().__init__()
        self.form = form

    def forward(self, feature: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        return self.form(feature, kernel)


@pytest.mark.parametrize("k,scale", [(5, 2), (5, 1), (3, 3)])
@pytest.mark.parametrize("form", sorted(FORM_CLASSES))
def test_pixelconv_form_onnx_dynamic_shapes(form, k, scale, tmp_path):
    path = tmp_path / f"pixelconv_{form}.onnx"
    args = _pixelconv_inputs(1, 3, 8, 10, k, scale, torch.float32, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_FormOnly(FORM_CLASSES[form](scale)).eval(), args, str(path), dynamo=False,
                          opset_version=18, input_names=["feature", "kernel"], output_names=["out"],
                          dynamic_axes={"feature": {0: "N", 2: "H", 3: "W"}, "kernel": {0: "N", 2: "H", 3: "W"},
                                        "out": {0: "N", 2: "OH", 3: "OW"}})
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    ops = {node.op_type for node in model.graph.node}
    assert not ops & FORBIDDEN_OPS, f"{form} graph has {sorted(ops & FORBIDDEN_OPS)}"
    out_dims = model.graph.output[0].type.tensor_type.shape.dim
    assert out_dims[1].dim_value == 3, "channel dim should stay fixed (3), not become symbolic"
    assert all(d.dim_param for i, d in enumerate(out_dims) if i != 1)

    session = _session(path)
    for n, h, w in [(1, 12, 17), (2, 9, 9)]:  # non-square; batch 2 -- neither is the export shape
        feature, kernel = _pixelconv_inputs(n, 3, h, w, k, scale, torch.float32, seed=h * w)
        got = session.run(None, {"feature": feature.numpy(), "kernel": kernel.numpy()})[0]
        with torch.no_grad():
            ref = PixelConv(scale=scale)(feature, kernel).numpy()
        assert got.shape == ref.shape == (n, 3, h * scale, w * scale)
        assert np.abs(got - ref).max() <= 1e-5


# ----------------------------------------------------------------------------------------------------------------
# build_export_module on the real UDVD
# ----------------------------------------------------------------------------------------------------------------

UDVD_VERIFY_SHAPES = [(2, 8, 12), (1, 12, 8), (1, 10, 10)]
UDVD_CHECK_SHAPES = [(1, 9, 14), (2, 11, 7)]


@pytest.fixture(scope="module")
def udvd():
    model, spec, _ = build_model("udvd")
    assert spec.name == get_spec("udvd").name
    return model, spec


def _udvd_args(spec, shape, seed):
    feed = random_inputs(spec, shape, seed=seed)
    return [torch.from_numpy(feed[t.name]) for t in spec.inputs]


def _count(model: nn.Module, cls) -> int:
    return sum(isinstance(m, cls) for m in model.modules())


@pytest.mark.parametrize("option", sorted(FORM_CLASSES))
def test_build_export_module_udvd(udvd, option):
    reference, spec = udvd
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    module, records = forms.build_export_module(reference, spec, UDVD_VERIFY_SHAPES, {"pixelconv": option})

    assert [r.name for r in records] == ["pixelconv"] and records[0].option == option
    assert "3 PixelConv modules" in records[0].detail
    assert len(records[0].checks) == len(UDVD_VERIFY_SHAPES)
    assert _count(module, PixelConv) == 0 and _count(module, FORM_CLASSES[option]) == 3
    # the reference is not modified
    assert _count(reference, PixelConv) == 3 and _count(reference, FORM_CLASSES[option]) == 0
    assert all(torch.equal(before[k], v) for k, v in reference.state_dict().items())

    with torch.no_grad():
        for k, shape in enumerate(UDVD_CHECK_SHAPES):
            args = _udvd_args(spec, shape, seed=50 + k)
            ref = reference(*args)[2]
            got = module(*args)
            assert got.shape == ref.shape == (shape[0], 3, 2 * shape[1], 2 * shape[2])
            assert (got - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("option", sorted(FORM_CLASSES))
def test_build_export_module_udvd_rejects_broken_form(udvd, option, monkeypatch):
    reference, spec = udvd

    class Broken(FORM_CLASSES[option]):
        def forward(self, feature, kernel):
            return super().forward(feature, kernel) + 1e-2

    monkeypatch.setitem(forms._PIXELCONV_CLASSES, option, Broken)
    with pytest.raises(FormCheckError) as caught:
        forms.build_export_module(reference, spec, UDVD_VERIFY_SHAPES, {"pixelconv": option})
    message = str(caught.value)
    assert "pixelconv" in message and spec.name in message
    for n, h, w in UDVD_VERIFY_SHAPES:
        assert f"{n}x{h}x{w}: " in message
    figures = [float(v) for v in re.findall(r"\d+x\d+x\d+: (\d\.\d\de[-+]\d+)", message)]
    assert len(figures) == len(UDVD_VERIFY_SHAPES) and all(f > 1e-4 for f in figures)
    assert _count(reference, PixelConv) == 3


def test_build_export_module_needs_three_shapes(udvd):
    reference, spec = udvd
    with pytest.raises(ValueError):
        forms.build_export_module(reference, spec, UDVD_VERIFY_SHAPES[:2])


# ----------------------------------------------------------------------------------------------------------------
# MPRNet: shape-generic split (the regression test for the baked int(H/2))
# ----------------------------------------------------------------------------------------------------------------

MPR_EXPORT_SHAPE = (2, 3, 32, 48)
MPR_CHECK_SHAPES = [(1, 3, 40, 56), (2, 3, 48, 48)]


@pytest.fixture(scope="module")
def mprnet():
    model, spec, _ = build_model("mprnet:deraining")
    assert spec.name == get_spec("mprnet:deraining").name
    return model, spec


def _mpr_export_and_compare(module, reference, spec, path) -> list[float]:
    """Legacy export at MPR_EXPORT_SHAPE; max abs vs reference output[0] at each of MPR_CHECK_SHAPES."""
    name_in, name_out = spec.inputs[0].name, spec.outputs[spec.image_output].name
    request = dim_request([(name_in, spec.in_channels)], [(name_out, spec.out_channels)], None, spec.scale)
    gen = torch.Generator().manual_seed(3)
    export_onnx(module, (torch.rand(*MPR_EXPORT_SHAPE, generator=gen),), path, request, exporter="legacy")
    session = _session(path)
    diffs = []
    with torch.no_grad():
        for shape in MPR_CHECK_SHAPES:
            x = torch.rand(*shape, generator=gen)
            ref = reference(x)[0].numpy()
            got = session.run([name_out], {name_in: x.numpy()})[0]
            assert got.shape == ref.shape == shape
            diffs.append(float(np.abs(got - ref).max()))
    return diffs


def test_mprnet_form_onnx_is_shape_generic(mprnet, tmp_path):
    reference, spec = mprnet
    module, records = forms.build_export_module(reference, spec, [(1, 16, 24), (2, 24, 16), (1, 32, 32)])
    assert [r.name for r in records] == ["mprnet-split"]
    assert max(c["max_abs"] for c in records[0].checks) <= 1e-4
    diffs = _mpr_export_and_compare(module, reference, spec, tmp_path / "mprnet_form.onnx")
    assert max(diffs) <= 1e-4, diffs


def test_mprnet_unpatched_legacy_onnx_is_wrong_at_other_sizes(mprnet, tmp_path):
    """Without the form the legacy tracer bakes int(H/2), int(W/2) of the export size: wrong elsewhere."""
    reference, spec = mprnet
    diffs = _mpr_export_and_compare(forms.ImageOutput(reference, spec.image_output).eval(), reference, spec,
                                    tmp_path / "mprnet_reference.onnx")
    assert min(diffs) > 1e-2, diffs


# ----------------------------------------------------------------------------------------------------------------
# MPRNet form in PyTorch: same numbers as the reference, non-square, batch 2 (fast; no export)
# ----------------------------------------------------------------------------------------------------------------

def test_mprnet_form_split_and_pooling_equal_the_reference_in_torch(mprnet):
    reference, spec = mprnet
    model = __import__("copy").deepcopy(reference)
    detail = forms._apply_mprnet(model, "on")
    from models_src.mprnet import DownSample

    downs = [m for m in model.modules() if isinstance(m, DownSample)]
    assert downs and all(isinstance(m.down[0], nn.AvgPool2d) for m in downs)
    assert detail == f"split at H//2, W//2 from the shape; {len(downs)} bilinear x0.5 -> AvgPool2d(2)"
    x = torch.rand(2, 3, 24, 40, generator=torch.Generator().manual_seed(4))
    assert model.split_points(x) == reference.split_points(x) == (12, 20)
    with torch.no_grad():
        ref, got = reference(x), model(x)
        assert len(got) == len(ref) == 3
        for a, b in zip(ref, got):
            assert a.shape == b.shape == (2, 3, 24, 40)
            assert (a - b).abs().max().item() <= 1e-5
        # the pooling swap on its own equals bilinear x0.5 on even sizes
        feature = torch.randn(2, 5, 6, 10, generator=torch.Generator().manual_seed(5))
        bilinear = nn.Upsample(scale_factor=0.5, mode="bilinear", align_corners=False)
        assert torch.allclose(nn.AvgPool2d(2)(feature), bilinear(feature), atol=1e-6)
    assert reference.split_points.__func__ is type(reference).split_points  # the reference is untouched
    assert not any(isinstance(m.down[0], nn.AvgPool2d) for m in reference.modules() if isinstance(m, DownSample))
