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
