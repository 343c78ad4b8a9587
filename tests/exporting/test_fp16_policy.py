"""--fp16-policy auto on hand-built ONNX graphs: planted overflow above a resolution, 1-minimal accuracy set,
determinism, and the per-node records."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from deploykit.errors import ExportError
from deploykit.exporting import fp16_policy as fp
from deploykit.exporting.fp16_calib import Feed, calibration_boxes, held_out_boxes


def _graph(nodes, inits, name="g", extra=()) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, "height", "width"])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1, "height", "width"])
    graph = helper.make_graph(nodes, name, [x], [y], initializer=[
        helper.make_tensor(k, TensorProto.FLOAT, np.shape(v), np.ravel(v).tolist()) for k, v in inits.items()]
        + list(extra))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def _smooth(side: int, seed: int = 0) -> np.ndarray:
    """A constant-ish positive image (0.4..0.6): its sum over H*W grows with H*W."""
    rng = np.random.default_rng(seed)
    return (0.5 + 0.1 * rng.uniform(-1, 1, (1, 1, side, side))).astype(np.float32)


def _feeds(sides=(48, 72, 96), calib=96) -> tuple[list[Feed], list[Feed]]:
    return ([Feed(f"c{k}", {"x": _smooth(calib, seed=k)}) for k in range(2)],
            [Feed(f"g{s}", {"x": _smooth(s, seed=9)}) for s in sides])


def overflow_graph() -> onnx.ModelProto:
    """output = relu(x) * 0.5 + 1e-9 * ReduceSum_HW(x): the sum is ~0.5*H*W, past 65504 in FP16 above ~362^2."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Mul", ["r", "half"], ["m"], name="scale"),
        helper.make_node("ReduceSum", ["x", "axes"], ["s"], name="global_sum", keepdims=1),
        helper.make_node("Mul", ["s", "tiny"], ["t"], name="tiny_gain"),
        helper.make_node("Add", ["m", "t"], ["output"], name="mix"),
    ]
    return _graph(nodes, {"half": np.float32(0.5), "tiny": np.float32(1e-9)},
                  extra=[helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])])


def precision_graph() -> onnx.ModelProto:
    """A main path whose (x + 1000) - 1000 loses x in FP16 (ulp 0.5 at 1000), and a decoy branch doing the same
    but scaled by 1e-5 into the output: its relative error is large, its effect on PSNR nil."""
    nodes = [
        helper.make_node("Add", ["x", "big"], ["a"], name="add_big"),
        helper.make_node("Sub", ["a", "big"], ["b"], name="sub_big"),
        helper.make_node("Relu", ["b"], ["r"], name="relu"),
        helper.make_node("Mul", ["r", "gain"], ["g"], name="gain"),
        helper.make_node("Add", ["x", "big"], ["da"], name="decoy_add"),
        helper.make_node("Sub", ["da", "big"], ["db"], name="decoy_sub"),
        helper.make_node("Mul", ["db", "tiny"], ["dt"], name="decoy_scale"),
        helper.make_node("Add", ["g", "dt"], ["output"], name="mix"),
    ]
    return _graph(nodes, {"big": np.float32(1000.0), "gain": np.float32(0.9), "tiny": np.float32(1e-5)})


def _run(model, feed, fp32_nodes=()) -> np.ndarray:
    """The graph's output with FP16 storage everywhere outside ``fp32_nodes`` (deploykit's emulation)."""
    return fp._run_all(fp._session(fp.emulate(model, fp32_nodes), emulated=True), feed)["output"]


def test_planted_overflow_is_kept_fp32_only_when_max_res_needs_it():
    model = overflow_graph()
    feeds, growth = _feeds()
    big = Feed("big", {"x": _smooth(512)})
    assert not np.isfinite(_run(model, big)).all()  # the planted overflow is real at 512^2 ...
    assert np.isfinite(_run(model, feeds[0])).all()  # ... and invisible at the 96^2 calibration size
    # the FP16 file in ONNX Runtime CPU stores the sum as inf too (exposed), though its Mul then reads FP32
    exposed = fp._exposed(fp.to_fp16(model, []), ["s"])
    assert np.isinf(fp._run_all(fp._session(exposed), big)["s"]).all()
    by = {st.name: st for st in fp.measure(model, growth, 2048)}
    assert 0.9 < by["tiny_gain"].growth < 1.1  # not a reduction, but it scales the sum: it grows like H*W too
    assert by["relu"].growth < 0.1 and not by["relu"].over_hw and by["global_sum"].over_hw
    low = fp.search_policy(model, feeds, growth, "output", max_res=128)
    assert low.fp32_nodes == []  # at 128^2 the sum is ~8k: FP16 is fine
    high = fp.search_policy(model, feeds, growth, "output", max_res=2048)
    assert high.fp32_nodes == ["global_sum", "tiny_gain"]  # tiny_gain reads the big sum: it stays FP32 too
    assert high.reasons["tiny_gain"]["reason"] == "range" and "global_sum" in high.reasons["tiny_gain"]["detail"]
    record = high.reasons["global_sum"]
    assert record["reason"] == "accumulation" and record["op_type"] == "ReduceSum"
    assert 0.9 < record["growth_exponent"] < 1.1  # a sum over H*W grows like H*W
    assert 1.5e6 < record["predicted_at_max_res"] < 2.7e6  # ~0.5 * 2048^2
    assert np.isfinite(_run(model, big, high.fp32_nodes)).all()
    check = fp.check_finite(model, high.fp32_nodes, big, high.watch)
    assert check["nonfinite"] == 0 and fp.check_finite(model, [], big, ["global_sum"])["emulated_nonfinite"] > 0
    # the low-res policy says where it stops being safe: the sum reaches 65504 near sqrt(65504 / 0.5) = 362
    assert low.limiting_node == "global_sum" and 300 <= low.predicted_safe_side <= 420


def test_accuracy_set_is_minimal_and_skips_the_decoy():
    model = precision_graph()
    feeds = [Feed(f"c{k}", {"x": np.random.default_rng(k).uniform(0, 1, (1, 1, 64, 64)).astype(np.float32)})
             for k in range(2)]
    growth = [Feed(f"g{s}", {"x": feeds[0].inputs["x"][:, :, :s, :s].copy()}) for s in (32, 48, 64)]
    result = fp.search_policy(model, feeds, growth, "output", min_psnr_db=50.0, max_res=2048)
    assert result.fp32_nodes == ["add_big", "sub_big"]
    assert {result.reasons[n]["reason"] for n in result.fp32_nodes} == {"accuracy"}
    assert "falls to" in result.reasons["add_big"]["detail"]
    assert min(result.psnr_db.values()) >= 51.0
    # the error ranking puts the culprits first: bisection + pruning take 8 runs (the reversed ranking needs more)
    assert result.evaluations <= 8
    # 1-minimal: dropping either node breaks the floor, and all-FP16 is far below it
    judge = fp._Judge(model, feeds, "output", 1.0, 51.0)
    assert not judge.ok(["add_big"]) and not judge.ok(["sub_big"]) and min(judge.psnrs([]).values()) < 30
    again = fp.search_policy(model, feeds, growth, "output", min_psnr_db=50.0, max_res=2048)
    assert (again.fp32_nodes, again.psnr_db, again.reasons) == (result.fp32_nodes, result.psnr_db, result.reasons)


def test_policy_record_is_complete():
    feeds, growth = _feeds()
    d = fp.search_policy(overflow_graph(), feeds, growth, "output", max_res=2048, calibration="test").to_dict()
    for key in ("mode", "min_psnr_db", "calib_margin_db", "max_res", "calibration", "growth_sides",
                "fp32_node_count", "fp32_nodes", "psnr_db", "min_psnr_reached_db", "predicted_safe_side",
                "limiting_node", "evaluations", "compute_nodes"):
        assert key in d, key
    assert d["mode"] == "auto" and d["fp32_node_count"] == 2 and d["growth_sides"] == [48, 72, 96]
    assert d["fp32_nodes"][0]["node"] == "global_sum" and "2048x2048" in d["fp32_nodes"][0]["detail"]
    assert set(d["psnr_db"]) == {"c0", "c1"} and d["min_psnr_reached_db"] >= 51


def test_unreachable_floor_is_a_one_line_error():
    feeds = [Feed("c", {"x": np.full((1, 1, 16, 16), 0.3, np.float32)})]
    growth = [Feed(f"g{s}", {"x": np.full((1, 1, s, s), 0.3, np.float32)}) for s in (8, 16)]
    model = precision_graph()
    for n in model.graph.initializer:  # rounding the weight itself to FP16 (1000.0 is exact; 0.9 is not)
        if n.name == "gain":
            n.float_data[:] = [0.9000001]
    with pytest.raises(ExportError, match="even with every node FP32"):
        fp.search_policy(model, feeds, growth, "output", min_psnr_db=200.0)


def test_calibration_and_held_out_crops_do_not_overlap():
    h, w, side = 400, 496, 96
    for ca in calibration_boxes(h, w, side):
        for ho in held_out_boxes(h, w, 128):
            assert ca[0] + ca[2] <= ho[0] or ho[0] + ho[2] <= ca[0]
            assert max(ca[0] + ca[2], ho[0] + ho[2]) <= h and max(ca[1] + ca[3], ho[1] + ho[3]) <= w


def test_an_initializer_shared_by_fp32_and_fp16_nodes_converts_to_a_valid_file():
    """EDSR's mean is subtracted at the input and added back at the output: keeping only the first FP32 used to
    give the converter's file a float/float16 clash that ONNX Runtime refuses to load."""
    nodes = [helper.make_node("Sub", ["x", "mean"], ["a"], name="sub_mean"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "mean"], ["output"], name="add_mean")]
    model = _graph(nodes, {"mean": np.float32(0.45)})
    feed = Feed("c", {"x": _smooth(16)})
    for fp32 in (["sub_mean"], ["add_mean"], ["relu"]):
        got = fp._run_all(fp._session(fp.to_fp16(model, fp32)), feed)["output"]
        want = np.maximum(feed.inputs["x"] - 0.45, 0) + 0.45
        assert np.abs(got - want).max() < 2e-3, fp32
