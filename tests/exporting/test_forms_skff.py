"""The ``skff`` export form (MIRNet / MIRNet-v2 selective kernel feature fusion as branch-by-branch adds): the same
numbers as the official module on non-trivial inputs, and a graph without the stacked ReduceSum."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from deploykit.errors import FormCheckError
from deploykit.exporting import forms
from deploykit.zoo.factory import build_model
from models_src import mirnet, mirnet_v2


def _branches(height: int, n: int, c: int, h: int, w: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # branches on different scales and signs, so a wrong attention index or a dropped branch shows
    return [(torch.randn(n, c, h, w, generator=g) * (1.0 + 2 * i) + i) for i in range(height)]


def _skff(cls, c: int, height: int, seed: int):
    torch.manual_seed(seed)
    module = cls(c, height=height).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p))  # the attention must not be uniform: strong, distinct weights
    return module


@pytest.mark.parametrize("cls,height", [(mirnet_v2.SKFF, 2), (mirnet_v2.SKFF, 3), (mirnet.SKFF, 3)])
@pytest.mark.parametrize("shape", [(1, 16, 9, 14), (2, 16, 12, 7)])  # non-square; batch 2
def test_skff_sum_form_equals_the_reference(cls, height, shape):
    reference = _skff(cls, shape[1], height, seed=height)
    module = _skff(cls, shape[1], height, seed=height)
    detail = forms._apply_skff(module, "sum")
    assert detail.startswith("1 SKFF as branch-by-branch adds")
    feats = _branches(height, *shape, seed=sum(shape))
    with torch.no_grad():
        ref = reference(feats)
        got = module(feats)
        attn = torch.softmax(torch.cat([fc(reference.conv_du(reference.avg_pool(sum(feats)))) for fc in
                                        reference.fcs], 1).view(shape[0], height, shape[1], 1, 1), dim=1)
    assert attn.std() > 0.05, "the attention is near uniform: the test would not see a branch mix-up"
    assert got.shape == ref.shape == shape
    assert torch.abs(got - ref).max() <= 1e-5 * torch.abs(ref).max()
    # not the identity of some other fusion: dropping the last branch changes the result
    assert torch.abs(module(feats[:-1] + [torch.zeros_like(feats[-1])]) - ref).max() > 1e-2


def test_skff_form_onnx_has_no_reduce_sum_and_matches_in_onnx_runtime(tmp_path):
    reference = _skff(mirnet_v2.SKFF, 8, 2, seed=3)
    module = _skff(mirnet_v2.SKFF, 8, 2, seed=3)
    forms._apply_skff(module, "sum")

    class Two(torch.nn.Module):
        def __init__(self, skff):
            super().__init__()
            self.skff = skff

        def forward(self, a, b):
            return self.skff([a, b])

    path = tmp_path / "skff.onnx"
    a, b = _branches(2, 1, 8, 10, 12, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Two(module).eval(), (a, b), str(path), dynamo=False, opset_version=18,
                          input_names=["a", "b"], output_names=["out"],
                          dynamic_axes={k: {0: "N", 2: "H", 3: "W"} for k in ("a", "b", "out")})
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "ReduceSum" not in ops and "Concat" in ops  # the small attention concat stays; the stack is gone
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n, h, w in [(2, 7, 13), (1, 16, 5)]:
        a, b = _branches(2, n, 8, h, w, seed=h * w)
        got = session.run(None, {"a": a.numpy(), "b": b.numpy()})[0]
        with torch.no_grad():
            ref = reference([a, b]).numpy()
        assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


def test_skff_form_applies_to_both_mirnets_only():
    for name, count in [("mirnetv2", 16), ("mirnet", 18)]:
        model = build_model(name)[0]
        assert forms._has_skff(model)
        assert forms._apply_skff(model, "sum").startswith(f"{count} SKFF")
    assert not forms._has_skff(build_model("edsr")[0])


def test_skff_form_options_are_checked():
    model = build_model("mirnetv2")[0]
    assert forms._apply_skff(model, "stack").endswith("kept as the reference (stack, ReduceSum)")
    with pytest.raises(FormCheckError, match="unknown skff form 'nope' \\(use one of sum, stack\\)"):
        forms._apply_skff(model, "nope")
    assert forms.parse_form_options(["skff=stack"])["skff"] == "stack"
