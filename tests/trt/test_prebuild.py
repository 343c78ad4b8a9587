"""The TensorRT pre-build check, without TensorRT: tensors over 2^31 elements and activation memory are refused in
plan_build with the figures; the sizes come from ONNX shape inference or a meta-device trace."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from deploykit.errors import EngineError
from deploykit.runtime.gpu import GpuInfo
from deploykit.trt import plan as trt_plan
from deploykit.zoo.registry import get_spec


def attention_graph() -> onnx.ModelProto:
    """image [1,3,H,W] -> mean over channels -> [1, H*W, 1] @ [1, 1, H*W] = [1, H*W, H*W] (s^4 elements) -> a sum
    back to [1, 3, H, W]: a non-local block's shape."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    nodes = [
        helper.make_node("ReduceMean", ["image", "ax1"], ["g"], name="gray", keepdims=1),
        helper.make_node("Reshape", ["g", "col"], ["c"], name="as_column"),
        helper.make_node("Reshape", ["g", "row"], ["r"], name="as_row"),
        helper.make_node("MatMul", ["c", "r"], ["att"], name="outer"),
        helper.make_node("ReduceMean", ["att", "ax2"], ["m"], name="pool", keepdims=1),
        helper.make_node("Reshape", ["m", "hw"], ["m4"], name="back"),
        helper.make_node("Mul", ["image", "m4"], ["output"], name="scale"),
    ]
    inits = [helper.make_tensor("ax1", TensorProto.INT64, [1], [1]),
             helper.make_tensor("ax2", TensorProto.INT64, [1], [2]),
             helper.make_tensor("col", TensorProto.INT64, [3], [1, -1, 1]),
             helper.make_tensor("row", TensorProto.INT64, [3], [1, 1, -1])]
    shape = helper.make_node("Shape", ["g"], ["hw"], name="shape_of_gray")
    graph = helper.make_graph([nodes[0], shape, *nodes[1:]], "att", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def _export(tmp_path, model: onnx.ModelProto):
    onnx.save(model, str(tmp_path / "g.fp32.onnx"))
    return {"artifacts": [{"kind": "onnx", "precision": "fp32", "file": "g.fp32.onnx", "sha256": "aa" * 32}]}


def _plan(tmp_path, manifest, res: str, **kw):
    spec = get_spec("vapsr:x4")
    return trt_plan.plan_build(tmp_path, manifest, spec, precision="fp32", profile=trt_plan.profile_from_res(spec, res),
                               tensorrt_version="10.9.0", gpu=GpuInfo("Fake", "8.9"), **kw)


def test_sizes_fit_the_power_of_the_side():
    sizes = trt_plan.onnx_tensor_sizes(attention_graph())
    assert sizes.counts["att"] == (64**4, 128**4) and sizes.counts["output"] == (3 * 64**2, 3 * 128**2)
    assert sizes.largest((256, 256)) == ("att", 256**4)
    assert sizes.largest((100, 300))[1] == (100 * 300) ** 2  # area, not side, for non-square sizes
    assert sizes.largest_safe_side() == 215  # 215^4 < 2^31 <= 216^4


def test_plan_build_refuses_a_profile_over_two_to_the_31(tmp_path):
    manifest = _export(tmp_path, attention_graph())
    with pytest.raises(EngineError, match=r"profile max 256x256 batch 1 cannot build: tensor 'att' would hold "
                                          r"4,294,967,296 elements .* largest safe square input is 215x215"):
        _plan(tmp_path, manifest, "64,256")
    with pytest.raises(EngineError, match=r"2,176,782,336 elements"):  # 216^4: just over the limit
        _plan(tmp_path, manifest, "64,216")
    assert _plan(tmp_path, manifest, "64,215").prebuild["largest_tensor_elements"] == 215**4  # just under
    ok = _plan(tmp_path, manifest, "64,128")
    assert ok.prebuild["largest_tensor"] == "att" and ok.prebuild["largest_tensor_elements"] == 128**4
    assert ok.prebuild["largest_safe_side"] == 215


def test_plan_build_refuses_activations_over_the_gpu_memory(tmp_path):
    manifest = _export(tmp_path, attention_graph())
    need = _plan(tmp_path, manifest, "64,128").prebuild["activation_bytes_estimate"]
    assert need >= 4 * 128**4  # at least the fp32 attention matrix
    with pytest.raises(EngineError, match=r"needs about .* GiB of activations, more than the GPU's"):
        _plan(tmp_path, manifest, "64,128", gpu_memory_bytes=need // 2)
    assert _plan(tmp_path, manifest, "64,128", gpu_memory_bytes=need * 2).prebuild


@pytest.mark.parametrize("free_gib", [None, 0.001])
def test_build_engine_checks_the_gpus_free_memory_before_the_builder(tmp_path, monkeypatch, free_gib):
    """``deploykit build`` hands the device's free memory (``gpu_free_memory``) to the pre-build check: a profile whose
    activations do not fit is refused with the figures before TensorRT is touched (the stand-in has no Builder)."""
    import json
    import types

    from deploykit.artifacts.manifest import MANIFEST_NAME, new_manifest
    from deploykit.trt import build as trt_build

    manifest = {**new_manifest(get_spec("vapsr:x4")), **_export(tmp_path, attention_graph())}
    manifest["export"] = {"static_hw": None, "opset": 17}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    free = None if free_gib is None else int(free_gib * 2**30)
    monkeypatch.setattr(trt_build, "import_tensorrt", lambda: types.SimpleNamespace(__version__="10.9.0"))
    monkeypatch.setattr(trt_build, "gpu_info", lambda index=0: GpuInfo("Fake", "8.9", index))
    monkeypatch.setattr(trt_build, "gpu_free_memory", lambda index=0: free)
    with pytest.raises(EngineError) as err:
        trt_build.build_engine(tmp_path, precision="fp32", res="64,128", parity=False)
    refused = "of activations, more than the GPU's 0.0 GiB; the largest safe square input is" in str(err.value)
    assert refused == (free is not None), str(err.value)


def test_meta_trace_agrees_with_the_onnx_graph_on_vapsr():
    from deploykit.exporting.tensor_sizes import traced_tensor_sizes

    spec = get_spec("vapsr:s_x4")
    traced = traced_tensor_sizes(spec)
    # the largest map is 64 values per input pixel (the upsampler's); onnx_tensor_sizes on the exported vapsr:x4
    # graph reports the same 419,430,400 elements at 2560^2
    assert traced.largest((2560, 2560))[1] == 64 * 2560 * 2560
    assert traced.largest_safe_side() == int(np.sqrt((2**31 - 1) / 64))


def test_info_reports_the_limit_row(cli_run):
    code, out, _ = cli_run("info", "vapsr:s_x4")
    assert code == 0 and "TensorRT sizes" in out
    assert "at 2560x2560: 419,430,400 elements (ok)" in out and "over 2^31-1: cannot build" in out
