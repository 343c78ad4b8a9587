"""deploykit.bench.onnx_memory: the liveness peak of a graph in node order, at a fixed input size."""

from __future__ import annotations

import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from deploykit.bench.onnx_memory import min_live_bytes  # noqa: E402


def _graph(tmp_path):
    """x -> a = Relu(x); b = Concat(a, a) on channels (2x); c = Relu(b); y = Add(c, c); dynamic H and W."""
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Concat", ["a", "a"], ["b"], axis=1),
             helper.make_node("Relu", ["b"], ["c"]), helper.make_node("Add", ["c", "c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)
    return path


def test_liveness_peak_in_node_order(tmp_path):
    r = min_live_bytes(_graph(tmp_path), 10, 20)
    one = 3 * 10 * 20 * 4  # bytes of a 3-channel FP32 map
    # a (1) -> b (2) with a alive = 3 -> a freed, c (2) with b alive = 4 -> b freed, y (2) with c alive = 4
    assert r["peak_bytes"] == 4 * one and r["unknown_tensors"] == 0 and r["nodes"] == 4
    assert min_live_bytes(_graph(tmp_path), 20, 20)["peak_bytes"] == 8 * one  # linear in pixels


def _pooled_graph(tmp_path):
    """x -> a = MaxPool 2x2 (a quarter of the pixels); p = GlobalAveragePool(x) (constant size); y = Add(x, p)."""
    nodes = [helper.make_node("MaxPool", ["x"], ["a"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Add", ["x", "p"], ["s"]),
             helper.make_node("Relu", ["a"], ["y2"]), helper.make_node("Relu", ["s"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("y2", TensorProto.FLOAT, None)])
    path = tmp_path / "p.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)
    return path


def test_measured_sizes_equal_shape_inference_on_full_pooled_and_downsampled_maps(tmp_path):
    from deploykit.bench.onnx_memory import _fixed_model, _tensor_bytes, measured_sizes

    path = _pooled_graph(tmp_path)
    inferred = {vi.name: _tensor_bytes(vi) for vi in list(_fixed_model(path, 96, 160).graph.value_info)
                + list(_fixed_model(path, 96, 160).graph.output)}
    measured = measured_sizes(path, 96, 160)
    assert measured == {k: inferred[k] for k in measured} and set(measured) == {"a", "p", "s", "y", "y2"}
    assert measured["p"] == 3 * 4 and measured["a"] == 3 * 48 * 80 * 4


def test_a_graph_shape_inference_cannot_size_is_measured(tmp_path, monkeypatch):
    from deploykit.bench import onnx_memory

    path = _pooled_graph(tmp_path)
    inferred = onnx_memory.min_live_bytes(path, 96, 160)

    def fail(*args, **kwargs):
        raise TypeError("object of type 'NoneType' has no len()")  # ORT's symbolic inference on MIRNet

    monkeypatch.setattr(onnx_memory, "_fixed_model", fail)
    measured = onnx_memory.min_live_bytes(path, 96, 160)
    assert measured["peak_bytes"] == inferred["peak_bytes"] > 0
    assert "measured by ONNX Runtime" in measured["method"] and "shape inference at" in inferred["method"]
