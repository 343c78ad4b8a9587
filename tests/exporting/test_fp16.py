"""FP16: the ONNX conversion keeps the policy's islands in FP32 and the I/O float32; the PyTorch emulation rounds
exactly as float16 storage does (numpy's float16 is the reference)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from deploykit.errors import ExportError
from deploykit.exporting.fp16 import Fp16RoundingEmulation, convert_to_fp16
from deploykit.zoo.spec import Fp16Policy

# values chosen to round differently in float16: ties to even, subnormals, overflow beyond 65504
KNOWN = np.array([1.0, 1.0 + 2 ** -11, 1.0 + 3 * 2 ** -11, 0.1, -3.14159, 1e-7, 2 ** -25, 65504.0, 65519.0,
                  65520.0, 70000.0, -1e5, 3e-8, 1234.5678], np.float32)


def _f16(x) -> np.ndarray:
    with np.errstate(over="ignore"):  # overflow to inf is the point
        return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


def test_numpy_reference_is_what_we_think():
    ref = _f16(KNOWN)
    assert ref[1] == 1.0 and ref[2] == 1.0 + 2 ** -9  # ties to even
    assert ref[7] == 65504.0 and ref[8] == 65504.0 and np.isinf(ref[9]) and np.isinf(ref[10]) and ref[11] == -np.inf
    assert ref[3] != np.float32(0.1) and ref[5] != 0 and ref[6] == 0  # 2**-25 ties to zero


class _Leafy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Linear(1, 1, bias=False)
        self.ident = torch.nn.Identity()
        with torch.no_grad():
            self.scale.weight.fill_(0.1)

    def forward(self, x):
        return self.ident(x), self.scale(x.unsqueeze(-1)).squeeze(-1)


def test_emulation_rounds_every_leaf_output_like_float16():
    model = _Leafy()
    x = torch.from_numpy(KNOWN.copy())
    with Fp16RoundingEmulation(model) as emu, torch.no_grad():
        ident, scaled = emu(x)
        np.testing.assert_array_equal(ident.numpy(), _f16(KNOWN))  # overflow to inf included
        assert ident.dtype == torch.float32  # arithmetic stays float32
        # the weight is rounded (0.1 -> 0.0999755859375), then the product, computed in float32, is rounded again
        w = _f16(0.1)
        assert emu.module.scale.weight.item() == w
        expected = _f16(KNOWN * w)
        np.testing.assert_array_equal(scaled.numpy(), expected)
        assert not np.array_equal(expected, KNOWN * 0.1)
    assert model.scale.weight.item() == np.float32(0.1)  # the caller's module is untouched
    # leaving the context removes the rounding hooks
    with torch.no_grad():
        after, _ = emu(x)
    np.testing.assert_array_equal(after.numpy(), KNOWN)


def test_emulation_rounds_all_weights_and_buffers_are_left():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.PReLU())
    torch.manual_seed(3)
    for p in model.parameters():
        p.data.uniform_(-1, 1)
    emu = Fp16RoundingEmulation(model)
    for (name, p), (_, q) in zip(model.named_parameters(), emu.module.named_parameters()):
        assert torch.equal(q, p.half().float()), name
        assert not torch.equal(q, p), name
    assert not emu.module.training
    x = torch.rand(2, 3, 9, 7)
    with torch.no_grad():
        y = emu(x)
    np.testing.assert_array_equal(y.numpy(), _f16(y.numpy()))  # the last leaf's output is float16-exact
    hooked = [m for m in emu.module.modules() if m._forward_hooks]
    assert len(hooked) == 3 and emu.module not in hooked  # leaves only


def test_emulation_leaves_integer_outputs_alone():
    assert Fp16RoundingEmulation._round(None, (), torch.tensor([70000])).item() == 70000
    assert Fp16RoundingEmulation._round(None, (), "x") == "x"


# --- ONNX conversion ------------------------------------------------------------------------------------------

def _graph() -> onnx.ModelProto:
    """x [1,3,5,6] -> Conv -> Softmax(axis=1) -> ReduceMean(axes=[1]) -> Mul -> y; every op one node."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    k = numpy_helper.from_array(np.array(1.2345678, np.float32), "k")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Softmax", ["c"], ["s"], name="softmax", axis=1),
             helper.make_node("ReduceMean", ["s", "axes"], ["m"], name="mean", keepdims=1),
             helper.make_node("Mul", ["m", "k"], ["y"], name="scale")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 5, 6])], [w, b, k, axes])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def _input_types(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> elem type, from graph inputs, initializers, Cast targets and inferred value_info."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    return types


def test_conversion_keeps_policy_ops_fp32_and_io_float32():
    original = _graph()
    converted, record = convert_to_fp16(original, Fp16Policy(keep_fp32_ops=("Softmax", "ReduceMean")))
    onnx.checker.check_model(converted)
    g = converted.graph
    assert [i.type.tensor_type.elem_type for i in g.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in g.output] == [TensorProto.FLOAT]
    types = _input_types(converted)
    by_name = {n.name: n for n in g.node}
    assert types[by_name["conv"].input[1]] == TensorProto.FLOAT16  # weights converted
    assert types[by_name["scale"].input[0]] == TensorProto.FLOAT16  # Mul computes in FP16
    assert types[by_name["softmax"].input[0]] == TensorProto.FLOAT  # the islands compute in FP32
    assert types[by_name["mean"].input[0]] == TensorProto.FLOAT
    assert record.fp32_op_types == ["ReduceMean", "Softmax"]
    assert record.fp32_nodes == ["softmax", "mean"] and record.fp16_nodes == 2
    assert record.to_dict() == {"fp32_op_types": ["ReduceMean", "Softmax"], "fp32_nodes": ["softmax", "mean"],
                                "fp32_node_count": 2, "fp16_node_count": 2}
    assert original.graph.initializer[0].data_type == TensorProto.FLOAT  # the input model is not modified


def test_an_initializer_read_by_an_island_and_an_fp16_node_is_split():
    """EDSR's mean is subtracted at the input and added back at the output; with the subtraction kept FP32 by op
    type, the converter used to type the one initializer for one side only (a float/float16 clash in the file)."""
    import onnxruntime as ort

    values = np.array([0.4, 0.5, 0.6], np.float32).reshape(1, 3, 1, 1)
    mean = numpy_helper.from_array(values, "mean")
    nodes = [helper.make_node("Sub", ["x", "mean"], ["c"], name="centre"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "mean"], ["y"], name="uncentre")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])], [mean])
    original = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    converted, record = convert_to_fp16(original, Fp16Policy(keep_fp32_ops=("Sub",)))
    onnx.checker.check_model(converted, full_check=True)
    types = _input_types(converted)
    by_name = {n.name: n for n in converted.graph.node}
    assert types[by_name["centre"].input[1]] == TensorProto.FLOAT and record.fp32_nodes == ["centre"]
    assert types[by_name["uncentre"].input[1]] == TensorProto.FLOAT16
    x = np.random.default_rng(0).random((1, 3, 4, 4), dtype=np.float32)
    got = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    assert np.abs(got - (np.maximum(x - values, 0) + values)).max() < 2e-3


def test_conversion_without_islands_converts_everything_and_runs_close():
    import onnxruntime as ort

    original = _graph()
    converted, record = convert_to_fp16(original, Fp16Policy())
    types = _input_types(converted)
    by_name = {n.name: n for n in converted.graph.node}
    assert types[by_name["softmax"].input[0]] == TensorProto.FLOAT16
    assert record.fp32_nodes == [] and record.fp16_nodes == 4
    x = np.random.default_rng(1).random((1, 3, 5, 6), dtype=np.float32)
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
           for m in (original, converted)]
    assert run[1].dtype == np.float32
    diff = np.abs(run[0] - run[1]).max()
    assert 0 < diff < 2e-3  # FP16 arithmetic really happened, and stayed close


def test_conversion_failure_is_an_export_error():
    broken = _graph()
    broken.graph.node[0].input[1] = "does_not_exist"
    del broken.graph.initializer[:]
    broken.graph.initializer.append(numpy_helper.from_array(np.ones(3, np.float32), "w"))
    broken.graph.initializer[0].raw_data = b"\x00"  # 1 byte for 3 floats
    try:
        convert_to_fp16(broken, Fp16Policy())
    except ExportError as exc:
        assert str(exc).startswith("FP16 conversion failed: ")
    else:
        pytest.fail("a corrupt initializer was converted without an ExportError")


def test_conversion_counts_compute_nodes_only():
    model = _graph()
    g = model.graph
    g.node.insert(0, helper.make_node("Constant", [], ["unused_c"], name="const",
                                      value=numpy_helper.from_array(np.ones(1, np.float32))))
    g.node.insert(1, helper.make_node("Shape", ["x"], ["x_shape"], name="shape"))
    g.node.insert(2, helper.make_node("Cast", ["x_shape"], ["x_shape_f"], name="cast", to=TensorProto.FLOAT))
    _, record = convert_to_fp16(model, Fp16Policy(keep_fp32_ops=("Softmax",)))
    assert record.fp32_nodes == ["softmax"] and record.fp16_nodes == 3  # Conv, ReduceMean, Mul


def test_converter_failures_and_chatter(monkeypatch, capsys):
    from onnxconverter_common import float16

    def chatty(model, **kwargs):
        print("converter noise on stdout")
        raise ValueError("bad graph " + "x" * 400)

    monkeypatch.setattr(float16, "convert_float_to_float16", chatty)
    with pytest.raises(ExportError) as info:
        convert_to_fp16(_graph(), Fp16Policy())
    assert str(info.value) == "FP16 conversion failed: ValueError: " + ("bad graph " + "x" * 400)[:300]
    assert capsys.readouterr().out == ""  # the converter's prints are swallowed
