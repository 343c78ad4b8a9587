"""TensorRT engines: the pure-Python decisions (no TensorRT needed) and, marked, real builds on a GPU.

Everything above the "real TensorRT" section runs on any machine: profiles from --res / --profile under the
shape contract, build-path choice per TensorRT version (version tuples, no import), engine naming and identity,
FP32-island layer selection, ONNX Runtime GPU option dictionaries, manifest writes, identity refusal, and the
CLI without TensorRT. The tests marked ``tensorrt`` + ``gpu`` build and run real engines; they skip with the
reason when TensorRT or a CUDA GPU is absent. No test here pretends an engine was built.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from deploykit.artifacts import engines
from deploykit.artifacts.manifest import MANIFEST_NAME, new_manifest, read_manifest
from deploykit.errors import (BackendUnavailableError, DeployKitError, EngineError, EngineMismatchError, InputError,
                              ShapeContractError)
from deploykit.runtime import gpu, ort_gpu, profiles
from deploykit.runtime import tensorrt as trt_backend
from deploykit.runtime.gpu import GpuInfo
from deploykit.runtime.profiles import Profile
from deploykit.trt import build as trt_build
from deploykit.trt import plan as trt_plan
from deploykit.util import files, sizes
from deploykit.verify.engine_parity import run_engine_parity
from deploykit.zoo.registry import get_spec

ROOT = Path(__file__).resolve().parents[2]


# --- sizes and profiles ---------------------------------------------------------------------------------------------

def test_sizes_are_width_by_height_like_the_cli():
    assert sizes.parse_size("512") == (512, 512)
    assert sizes.parse_size("1920x1080") == (1080, 1920)  # (height, width)
    assert sizes.parse_sizes("512, 1024,2048") == [(512, 512), (1024, 1024), (2048, 2048)]
    for bad in ("abc", "12x", "0", "-8"):
        with pytest.raises(InputError, match="size"):
            sizes.parse_size(bad)


def test_profile_from_res_min_middle_max():
    spec = get_spec("mirnetv2")  # multiple of 4
    p = trt_plan.profile_from_res(spec, "2048,512,1024", max_batch=4)
    assert (p.min_hw, p.opt_hw, p.max_hw, p.max_batch) == ((512, 512), (1024, 1024), (2048, 2048), 4)
    assert p.shapes(spec) == {"image": ((1, 3, 512, 512), (1, 3, 1024, 1024), (4, 3, 2048, 2048))}
    single = trt_plan.profile_from_res(spec, "1920x1080")
    assert single.min_hw == single.opt_hw == single.max_hw == (1080, 1920)
    assert single.tag() == "b1_1920x1080"
    assert p.tag() == "b4_min512x512_opt1024x1024_max2048x2048"


def test_profile_from_res_mixed_aspect_takes_per_side_extremes():
    spec = get_spec("vapsr:x4")
    p = trt_plan.profile_from_res(spec, "640x360,1280x720,720x1280")
    assert p.min_hw == (360, 640) and p.max_hw == (1280, 1280)
    assert p.opt_hw in ((720, 1280), (1280, 720))


def test_profile_honours_multiple_of_with_a_suggestion():
    spec = get_spec("mprnet")  # multiple of 8
    with pytest.raises(ShapeContractError, match=r"1001 is not a multiple of 8 \(use 1000 or 1008\)"):
        trt_plan.profile_from_res(spec, "512,1001")
    with pytest.raises(ShapeContractError, match="width 1002 is not a multiple of 8"):
        trt_plan.profile_from_string(spec, "256:512:1002x1000")


def test_profile_honours_min_size_and_square():
    spec = dataclasses.replace(get_spec("mprnet"), min_size=64, square=True)
    with pytest.raises(ShapeContractError, match="below the minimum 64"):
        trt_plan.profile_from_res(spec, "32,512")
    with pytest.raises(ShapeContractError, match="square inputs only"):
        trt_plan.profile_from_res(spec, "640x480")
    assert trt_plan.profile_from_string(spec, "64:512:1024").max_hw == (1024, 1024)


def test_profile_string_errors_are_clear():
    spec = get_spec("vapsr:x4")
    with pytest.raises(EngineError, match="MIN:OPT:MAX"):
        trt_plan.profile_from_string(spec, "256:1024")
    with pytest.raises(EngineError, match="min <= opt <= max"):
        trt_plan.profile_from_string(spec, "1024:512:2048")
    with pytest.raises(EngineError, match="--batch must be >= 1"):
        trt_plan.profile_from_string(spec, "64:128:256", max_batch=0)
    with pytest.raises(EngineError, match="either --res or --profile"):
        trt_plan.resolve_profile(spec, res="512", profile="64:128:256")


def test_static_export_pins_the_profile():
    spec = get_spec("vapsr:x4")
    with pytest.raises(EngineError, match=r"fixed input size 640x480 .*--res 640x480"):
        trt_plan.resolve_profile(spec, res="512", static_hw=[480, 640])
    p = trt_plan.resolve_profile(spec, static_hw=[480, 640])
    assert p.min_hw == p.opt_hw == p.max_hw == (480, 640)


def test_udvd_inputs_share_height_and_width():
    spec = get_spec("udvd")  # image [3], kernel [15], noise [1]
    p = trt_plan.profile_from_string(spec, "64:128x96:256", max_batch=2)
    shapes = p.shapes(spec)
    assert shapes == {
        "image": ((1, 3, 64, 64), (1, 3, 96, 128), (2, 3, 256, 256)),
        "kernel": ((1, 15, 64, 64), (1, 15, 96, 128), (2, 15, 256, 256)),
        "noise": ((1, 1, 64, 64), (1, 1, 96, 128), (2, 1, 256, 256)),
    }
    assert p.to_dict(spec)["inputs"]["kernel"]["max"] == [2, 15, 256, 256]


def test_default_profile_and_parity_shapes_stay_inside_it():
    spec = get_spec("mprnet")
    p = trt_plan.resolve_profile(spec, max_batch=4)
    assert (p.min_hw, p.opt_hw, p.max_hw) == ((64, 64), (512, 512), (1024, 1024))
    shapes = profiles.engine_parity_shapes(p)
    assert shapes == [(1, 64, 64), (2, 512, 512)]
    assert all(p.contains(*s) for s in shapes)
    assert profiles.engine_parity_shapes(Profile((32, 32), (32, 32), (32, 32), 1)) == [(1, 32, 32)]
    assert Profile.from_dict(p.to_dict(spec)) == p


# --- versions and build paths (version tuples; TensorRT is never imported) -----------------------------------------

@pytest.mark.parametrize("version,precision,typing,path,onnx,flags", [
    ((10, 0, 1), "fp16", "auto", "weak-fp16", "fp32", ("FP16", "OBEY_PRECISION_CONSTRAINTS")),
    ("10.9.0.34", "fp16", "weak", "weak-fp16", "fp32", ("FP16", "OBEY_PRECISION_CONSTRAINTS")),
    ((10, 12, 0), "fp16", "strong", "strong-fp16", "fp16", ()),
    ((11, 0, 0), "fp16", "auto", "strong-fp16", "fp16", ()),
    ("11.4.0.106", "fp16", "strong", "strong-fp16", "fp16", ()),
    ((10, 3), "fp32", "auto", "fp32", "fp32", ()),
    ((11, 4), "fp32", "auto", "fp32", "fp32", ()),
])
def test_build_path_per_version(version, precision, typing, path, onnx, flags):
    chosen = trt_plan.choose_build_path(version, precision, typing)
    assert (chosen.name, chosen.onnx_precision, chosen.builder_flags) == (path, onnx, flags)
    assert chosen.layer_precisions == (path == "weak-fp16")
    if path == "strong-fp16":
        assert chosen.network_flags == ("STRONGLY_TYPED",)
    if path == "fp32":
        assert chosen.clear_flags == ("TF32",)


def test_build_path_refusals():
    with pytest.raises(EngineError, match="no weak typing .*--typing strong"):
        trt_plan.choose_build_path((11, 1, 0), "fp16", "weak")
    with pytest.raises(EngineError, match="too old"):
        trt_plan.choose_build_path("8.6.1", "fp16")
    with pytest.raises(EngineError, match="unknown precision"):
        trt_plan.choose_build_path((10, 9), "int8")
    assert gpu.parse_version("10.0.0b6") == (10, 0, 0)


# --- identity and names ----------------------------------------------------------------------------------------------

def _identity(**over):
    spec = get_spec("vapsr:s_x4")
    fields = dict(model="vapsr", variant="s_x4", precision="fp16", profile=trt_plan.profile_from_res(spec, "256,512,1024"),
                  tensorrt="10.9.0.34", gpu_name="NVIDIA GeForce RTX 4090", compute_capability="8.9",
                  onnx_file="vapsr_s_x4.fp32.onnx", onnx_sha256="ab" * 32, build_path="weak-fp16")
    fields.update(over)
    return trt_plan.engine_identity(**fields)


def test_engine_file_name_carries_the_identity():
    name = trt_plan.engine_file_name(_identity())
    assert name == ("vapsr_s_x4.fp16.b1_min256x256_opt512x512_max1024x1024.trt10.9.0.34."
                    "NVIDIA-GeForce-RTX-4090.sm89.abababababab.engine")
    assert trt_plan.timing_cache_file_name("10.9.0.34", "NVIDIA H100 80GB HBM3", "9.0", "weak-fp16") == \
        "timing.trt10.9.0.34.NVIDIA-H100-80GB-HBM3.sm90.weak-fp16.cache"


@pytest.mark.parametrize("change", [
    {"tensorrt": "11.4.0.106"}, {"compute_capability": "8.6"}, {"gpu_name": "NVIDIA A100"},
    {"onnx_sha256": "cd" * 32}, {"precision": "fp32"}, {"build_path": "strong-fp16"},
    {"profile": Profile((256, 256), (512, 512), (1024, 1024), 2)},
])
def test_identity_key_changes_with_every_identity_field(change):
    base = _identity()
    assert trt_plan.identity_key(base) == trt_plan.identity_key(_identity())  # stable
    assert trt_plan.identity_key(_identity(**change)) != trt_plan.identity_key(base)
    if "gpu_name" not in change and "build_path" not in change:
        assert trt_plan.engine_file_name(_identity(**change)) != trt_plan.engine_file_name(base)


# --- FP32 islands on a weakly typed network --------------------------------------------------------------------------

def test_fp32_layer_selection_by_node_name_metadata_and_op_type():
    # node names as the dynamo exporter writes them for VapSR (node_layer_norm, node_layer_norm_1, ...)
    nodes = ["node_conv", "node_conv_1", "node_layer_norm", "node_layer_norm_1", "node_mean", "node_Softmax"]
    layers = [
        ("node_conv", "CONVOLUTION"),
        ("node_conv_1", "CONVOLUTION"),
        ("node_layer_norm", "NORMALIZATION"),          # fp32 node itself
        ("node_layer_norm_1", "NORMALIZATION"),        # another node, NOT in the list: must stay free
        ("node_layer_norm_7", "ELEMENTWISE"),          # helper layer the parser made for node_layer_norm
        ("(Unnamed Layer* 9) [Constant]", "CONSTANT"),  # weights: never pinned
        ("(Unnamed Layer* 12) [Reduce]", "REDUCE"),    # no owner found: pinned by type (ReduceMean kept FP32)
        ("(Unnamed Layer* 13) [ElementWise]", "ELEMENTWISE"),  # no owner, ambiguous type: free
        ("myelin_fused", "REDUCE", "[ONNX Layer: node_mean]"),  # parser metadata names the node
        ("node_Softmax", "SOFTMAX"),                   # named node that is not an FP32 node: free
    ]
    sel = trt_plan.select_fp32_layers(layers, ["node_layer_norm", "node_mean", "node_gone"],
                                       keep_fp32_ops=("LayerNormalization", "ReduceMean", "Pow"), node_names=nodes)
    assert sel.layers == ["node_layer_norm", "node_layer_norm_7", "(Unnamed Layer* 12) [Reduce]", "myelin_fused"]
    assert sel.by_name == ["node_layer_norm", "node_mean"]
    assert sel.unmatched == ["node_gone"]  # reported, never silently dropped
    assert sel.by_op_type == ["(Unnamed Layer* 12) [Reduce]"]
    assert sel.to_dict()["pinned_layers"] == 4


def test_fp32_layer_owner_from_parser_metadata_inside_local_functions():
    # onnx-tensorrt writes '[ONNX Layer: NODE | CALLER (FUNCTION)]' for nodes of an ONNX local function, and names
    # nodes without a name 'node_of_<output>', which is no node of the file: owner unknown -> the op-type rule
    nodes = ["node_layer_norm", "node_call"]
    layers = [("fused_a", "NORMALIZATION", "[ONNX Layer: node_layer_norm | node_call (LayerNormFn)]"),
              ("fused_b", "REDUCE", "[ONNX Layer: node_of_val_3]")]
    assert trt_plan.layer_owner("fused_a", layers[0][2], nodes) == "node_layer_norm"
    sel = trt_plan.select_fp32_layers(layers, ["node_layer_norm"], keep_fp32_ops=("ReduceMean",), node_names=nodes)
    assert sel.layers == ["fused_a", "fused_b"] and sel.by_op_type == ["fused_b"]


def test_fp32_layer_selection_without_the_node_list_matches_exact_names_only():
    sel = trt_plan.select_fp32_layers([("a", "SOFTMAX"), ("a_1", "SOFTMAX"), ("b", "SOFTMAX")], ["a"], ())
    assert sel.layers == ["a", "a_1"]  # a_1 is no known node: a helper of a
    sel = trt_plan.select_fp32_layers([("a", "SOFTMAX"), ("a_1", "SOFTMAX")], ["a"], (), node_names=["a", "a_1"])
    assert sel.layers == ["a"]


def test_build_options():
    assert trt_plan.validate_build_options(2, None) == (2 << 30, 3)
    assert trt_plan.validate_build_options(None, 5) == (None, 5)
    with pytest.raises(EngineError, match="0..5"):
        trt_plan.validate_build_options(None, 7)
    with pytest.raises(EngineError, match="positive"):
        trt_plan.validate_build_options(-1, 3)


# --- ONNX Runtime GPU provider options -------------------------------------------------------------------------------

def test_cuda_provider_options():
    assert ort_gpu.cuda_provider_options(device_id=1, conv_algo_search="heuristic", gpu_mem_limit=4 << 30) == {
        "device_id": "1", "cudnn_conv_algo_search": "HEURISTIC", "do_copy_in_default_stream": "1",
        "enable_cuda_graph": "0", "gpu_mem_limit": str(4 << 30)}
    with pytest.raises(EngineError, match="cudnn_conv_algo_search"):
        ort_gpu.cuda_provider_options(conv_algo_search="fastest")


def test_tensorrt_provider_options_profile_and_caches(tmp_path):
    spec = get_spec("udvd")
    profile = trt_plan.profile_from_string(spec, "64:128:256", max_batch=2)
    opts = ort_gpu.tensorrt_provider_options(profile_shapes=profile.shapes(spec), cache_dir=tmp_path, precision="fp16",
                                             tensorrt_version=(11, 4, 0), cache_prefix="udvd_x2_fp16", opt_level=4,
                                             workspace_bytes=1 << 30)
    assert opts["trt_profile_min_shapes"] == "image:1x3x64x64,kernel:1x15x64x64,noise:1x1x64x64"
    assert opts["trt_profile_opt_shapes"] == "image:1x3x128x128,kernel:1x15x128x128,noise:1x1x128x128"
    assert opts["trt_profile_max_shapes"] == "image:2x3x256x256,kernel:2x15x256x256,noise:2x1x256x256"
    assert opts["trt_fp16_enable"] == "False"  # strongly typed FP16 ONNX, not the weak flag
    assert opts["trt_engine_cache_enable"] == opts["trt_timing_cache_enable"] == "True"
    assert opts["trt_engine_cache_path"] == opts["trt_timing_cache_path"] == str(tmp_path)
    assert opts["trt_engine_cache_prefix"] == "udvd_x2_fp16"
    assert opts["trt_builder_optimization_level"] == "4" and opts["trt_max_workspace_size"] == str(1 << 30)
    assert all(isinstance(v, str) for v in opts.values())
    flag = ort_gpu.tensorrt_provider_options(profile_shapes=profile.shapes(spec), cache_dir=tmp_path,
                                             fp16_mode="flag", tensorrt_version="10.9.0.34")
    assert flag["trt_fp16_enable"] == "True"
    with pytest.raises(EngineError, match="TensorRT 11 removed"):
        ort_gpu.tensorrt_provider_options(profile_shapes=profile.shapes(spec), cache_dir=tmp_path,
                                          fp16_mode="flag", tensorrt_version="11.0.0")


def test_ort_gpu_artifact_choice_and_provider_order():
    assert ort_gpu.ort_gpu_onnx_precision("tensorrt", "fp16") == "fp16"
    assert ort_gpu.ort_gpu_onnx_precision("tensorrt", "fp16", "flag") == "fp32"
    assert ort_gpu.ort_gpu_onnx_precision("cuda", "fp16") == "fp16"
    assert ort_gpu.ort_gpu_onnx_precision("cuda", "fp32") == "fp32"
    cuda = ort_gpu.cuda_provider_options()
    assert [p for p, _ in ort_gpu.providers_for("tensorrt", cuda_options=cuda, trt_options={"x": "1"})] == \
        ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    assert [p for p, _ in ort_gpu.providers_for("cuda", cuda_options=cuda)] == ["CUDAExecutionProvider"]


def test_ort_gpu_backend_unavailable_on_cpu_onnxruntime(tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider; the refusal path is for CPU-only builds")
    with pytest.raises(BackendUnavailableError, match=r"pip install 'deploykit\[gpu\]'"):
        ort_gpu.OrtGpuBackend(tmp_path / "x.onnx", provider="cuda")


def test_ort_backend_takes_session_options(tmp_path):
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from deploykit.runtime.ort import OrtBackend

    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["output"])], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 2, 2])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 2, 2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10),
              str(tmp_path / "relu.onnx"))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    backend = OrtBackend(tmp_path / "relu.onnx", session_options=options)
    used = backend.session.get_session_options()
    assert used.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert used.intra_op_num_threads == 1  # the caller's thread count is kept
    x = np.array([-1.0, 2.0, -3.0, 4.0] * 3, np.float32).reshape(1, 3, 2, 2)
    assert np.array_equal(backend.run({"image": x})["output"], np.maximum(x, 0))


# --- manifest entries, identity refusal ------------------------------------------------------------------------------

def _export_dir(tmp_path) -> Path:
    """A manifest as 'deploykit export' writes it (no ONNX files needed for these tests)."""
    spec = get_spec("vapsr:s_x4")
    manifest = new_manifest(spec)
    manifest["io"] = {"inputs": [{"name": "image", "dims": ["batch", 3, "height", "width"]}]}
    manifest["export"] = {"static_hw": None, "opset": 18}
    manifest["artifacts"] = [
        {"kind": "onnx", "precision": "fp32", "file": "vapsr_s_x4.fp32.onnx", "sha256": "aa" * 32},
        {"kind": "onnx", "precision": "fp16", "file": "vapsr_s_x4.fp16.onnx", "sha256": "bb" * 32,
         "fp32_nodes": ["node_layer_norm", "node_layer_norm_1"]},
    ]
    manifest["parity"] = [{"backend": "ort-cpu", "passed": True}]
    out = tmp_path / "vapsr" / "s_x4"
    out.mkdir(parents=True)
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return out


def _entry(out: Path, **identity_over) -> dict:
    spec = get_spec("vapsr:s_x4")
    plan = trt_plan.plan_build(out, read_manifest(out), spec, precision="fp16",
                                profile=trt_plan.profile_from_res(spec, "64,128"),
                                tensorrt_version=identity_over.pop("tensorrt", "10.9.0.34"),
                                gpu=GpuInfo(identity_over.pop("gpu_name", "NVIDIA L4"),
                                            identity_over.pop("compute_capability", "8.9")))
    return engines.engine_entry(identity=plan.identity, key=plan.key, file=plan.engine_file,
                                profile=plan.profile.to_dict(spec), build=plan.path.to_dict(), io=[],
                                created="2026-01-01T00:00:00+00:00", sha256="00" * 32, nbytes=0)


def test_plan_build_picks_the_artifact_per_version(tmp_path):
    out = _export_dir(tmp_path)
    spec = get_spec("vapsr:s_x4")
    kwargs = dict(precision="fp16", profile=trt_plan.profile_from_res(spec, "64,128"), gpu=GpuInfo("NVIDIA L4", "8.9"))
    weak = trt_plan.plan_build(out, read_manifest(out), spec, tensorrt_version="10.9.0.34", **kwargs)
    strong = trt_plan.plan_build(out, read_manifest(out), spec, tensorrt_version="11.4.0.106", **kwargs)
    assert (weak.onnx["file"], weak.path.name) == ("vapsr_s_x4.fp32.onnx", "weak-fp16")
    assert weak.fp32_nodes == ["node_layer_norm", "node_layer_norm_1"]
    assert weak.identity["onnx_sha256"] == "aa" * 32
    assert (strong.onnx["file"], strong.path.name) == ("vapsr_s_x4.fp16.onnx", "strong-fp16")
    assert strong.identity["onnx_sha256"] == "bb" * 32
    assert weak.timing_cache == out / "timing.trt10.9.0.34.NVIDIA-L4.sm89.weak-fp16.cache"
    assert weak.engine_path.parent == out and weak.key != strong.key


def test_plan_build_without_fp16_artifact_on_trt11(tmp_path):
    out = _export_dir(tmp_path)
    manifest = read_manifest(out)
    manifest["artifacts"] = manifest["artifacts"][:1]
    spec = get_spec("vapsr:s_x4")
    with pytest.raises(EngineError, match="needs the FP16 ONNX.*without --no-fp16"):
        trt_plan.plan_build(out, manifest, spec, precision="fp16", profile=trt_plan.default_profile(spec),
                             tensorrt_version="11.0.0", gpu=GpuInfo("x", "9.0"))


def test_engine_entries_are_written_atomically_and_keep_the_manifest(tmp_path, monkeypatch):
    out = _export_dir(tmp_path)
    before = read_manifest(out)
    first = _entry(out)
    engines.upsert_engine_entry(out, first)
    after = read_manifest(out)
    assert {k: v for k, v in after.items() if k != "engines"} == before  # everything else preserved
    assert after["engines"] == [first]
    # a rebuild (same key) replaces; another GPU is a second entry
    engines.upsert_engine_entry(out, {**first, "created": "2026-02-02T00:00:00+00:00"})
    other = _entry(out, gpu_name="NVIDIA H100", compute_capability="9.0")
    engines.upsert_engine_entry(out, other)
    stored = read_manifest(out)["engines"]
    assert [e["key"] for e in stored] == [first["key"], other["key"]]
    assert stored[0]["created"].startswith("2026-02-02")
    assert engines.find_engine(read_manifest(out), key=other["key"])["compute_capability"] == "9.0"
    # an interrupted write leaves the previous manifest and no temp file
    text = (out / MANIFEST_NAME).read_text()

    def interrupted(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(OSError):
        engines.upsert_engine_entry(out, _entry(out, tensorrt="10.3.0"))
    assert (out / MANIFEST_NAME).read_text() == text
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME]


def test_engine_bytes_are_written_atomically(tmp_path, monkeypatch):
    target = tmp_path / "m.engine"
    files.write_bytes_atomic(target, b"old")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("interrupted")))
    with pytest.raises(OSError):
        files.write_bytes_atomic(target, b"new plan bytes")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["m.engine"]


def test_identity_mismatch_is_refused_with_a_clear_message(tmp_path):
    entry = _entry(_export_dir(tmp_path))
    assert engines.check_engine_identity(entry, tensorrt_version="10.9.0.34", compute_capability="8.9",
                                         gpu_name="NVIDIA L4") == []
    with pytest.raises(EngineMismatchError, match=r"built with TensorRT 10\.9\.0\.34 and this machine has TensorRT "
                                                  r"11\.4\.0\.106.*rebuild it on this machine"):
        engines.check_engine_identity(entry, tensorrt_version="11.4.0.106", compute_capability="8.9")
    with pytest.raises(EngineMismatchError, match=r"compute capability 8\.9 \(NVIDIA L4\) and this GPU is 8\.7 \(Orin\)"):
        engines.check_engine_identity(entry, tensorrt_version="10.9.0.34", compute_capability="8.7", gpu_name="Orin")
    warnings = engines.check_engine_identity(entry, tensorrt_version="10.9.0.34", compute_capability="8.9",
                                             gpu_name="NVIDIA RTX 4000 Ada")
    assert len(warnings) == 1 and "tuned on NVIDIA L4" in warnings[0]
    assert issubclass(EngineMismatchError, DeployKitError)


def test_tensorrt_backend_refuses_before_deserializing(tmp_path, monkeypatch):
    """The runtime check reads the manifest entry first: a plan for another TensorRT version or GPU never reaches
    deserialize_cuda_engine. The stand-in module below has a version string and a Runtime that fails the test if
    touched; it builds and runs nothing."""
    from deploykit.runtime.tensorrt import TensorRTBackend

    out = _export_dir(tmp_path)
    entry = _entry(out)
    engines.upsert_engine_entry(out, entry)

    class NoDeserialize:
        def __init__(self, *_a):
            raise AssertionError("deserialize attempted before the identity check")

    stand_in = types.SimpleNamespace(__version__="11.4.0.106", Runtime=NoDeserialize)
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: stand_in)
    monkeypatch.setattr(trt_backend, "gpu_info", lambda index=0: GpuInfo("NVIDIA L4", "8.9", index))
    with pytest.raises(EngineMismatchError, match="TensorRT 10.9.0.34 .* TensorRT 11.4.0.106"):
        TensorRTBackend(out, entry)
    stand_in.__version__ = "10.9.0.34"
    monkeypatch.setattr(trt_backend, "gpu_info", lambda index=0: GpuInfo("Orin", "8.7", index))
    with pytest.raises(EngineMismatchError, match="compute capability 8.9"):
        TensorRTBackend(out, entry)
    monkeypatch.setattr(trt_backend, "gpu_info", lambda index=0: GpuInfo("NVIDIA L4", "8.9", index))
    with pytest.raises(EngineError, match="listed in the manifest but missing"):  # identity fine, file absent
        TensorRTBackend(out, entry)


def test_parity_records_land_in_the_engine_entry(tmp_path):
    """record_engine_parity stores what it is given; these records are labelled synthetic test data."""
    out = _export_dir(tmp_path)
    entry = _entry(out)
    engines.upsert_engine_entry(out, entry)
    rows = [{"backend": "synthetic-test", "precision": "fp16", "output": "output", "shape": [1, 3, 256, 256],
             "max_abs": 0.01, "mean_abs": 0.001, "psnr_db": 45.0, "nonfinite": 0, "tolerance": "PSNR >= 40 dB",
             "passed": True}]
    updated = engines.record_engine_parity(out, entry["key"], "synthetic-test", rows)
    assert updated["parity"]["synthetic-test"] == rows
    assert updated["parity_summary"]["synthetic-test"]["passed"] is True
    stored = read_manifest(out)
    assert stored["engines"][0]["parity"]["synthetic-test"] == rows
    assert stored["parity"] == [{"backend": "ort-cpu", "passed": True}]  # export parity untouched
    with pytest.raises(EngineError, match="no 0123 is recorded"):
        engines.record_engine_parity(out, "0123", "x", rows)
    # a shape mismatch reports inf; the strict-JSON manifest stores null instead of failing the write
    broken = [{**rows[0], "max_abs": float("inf"), "mean_abs": float("inf"), "psnr_db": 0.0, "passed": False}]
    updated = engines.record_engine_parity(out, entry["key"], "synthetic-broken", broken)
    assert updated["parity"]["synthetic-broken"][0]["max_abs"] is None
    assert updated["parity_summary"]["synthetic-broken"] == {"passed": False, "min_psnr_db": 0.0, "max_abs": None,
                                                             "nonfinite": 0, "shapes": [[1, 3, 256, 256]]}


# --- without TensorRT: CLI and export hook -------------------------------------------------------------------------

@pytest.fixture
def no_tensorrt(monkeypatch):
    """Make 'import tensorrt' fail even where it is installed (None in sys.modules halts the import)."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


def _run_cli(cli_run, *args):
    from deploykit.cli import app as cli
    from deploykit.cli import trt as cli_trt

    cli_trt.register(cli.app)
    cli_trt.register(cli.app)  # idempotent
    assert sum(getattr(c, "name", None) == "build" for c in cli.app.registered_commands) == 1
    return cli_run(*args)


def test_build_without_tensorrt_is_one_line_with_the_install_hint(cli_run, no_tensorrt):
    code, out, err = _run_cli(cli_run, "build", "vapsr:s_x4", "--res", "256,512")
    assert code != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "TensorRT is not installed" in lines[0] and "pip install 'deploykit[gpu]'" in lines[0]
    assert "Traceback" not in out + err


def test_build_bad_profile_fails_first_in_one_line(cli_run):
    code, _, err = _run_cli(cli_run, "build", "mprnet", "--res", "1001")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "multiple of 8" in err


def test_export_hook_skips_without_tensorrt(no_tensorrt, tmp_path):
    result = types.SimpleNamespace(out_dir=tmp_path)
    outcome = trt_build.maybe_build_after_export(result, precision="fp16", res="256")
    assert set(outcome) == {"skipped"} and "pip install 'deploykit[gpu]'" in outcome["skipped"]


def test_importing_the_package_never_imports_tensorrt():
    code = ("import sys, deploykit, deploykit.trt.build, deploykit.artifacts.engines, deploykit.cli.trt, "
            "deploykit.runtime.tensorrt, deploykit.runtime.ort_gpu, deploykit.cli; "
            "assert 'tensorrt' not in sys.modules, 'tensorrt imported at module import time'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# --- real TensorRT (skipped without TensorRT and a CUDA GPU) ------------------------------------------------------

@pytest.fixture(scope="module")
def trt_gpu():
    reason = gpu.tensorrt_unavailable_reason()
    if reason is not None:
        pytest.skip(f"needs TensorRT and a CUDA GPU: {reason}")


@pytest.fixture(scope="module")
def small_export(trt_gpu, tmp_path_factory):
    import deploykit

    result = deploykit.export("vapsr:s_x4", out=tmp_path_factory.mktemp("trt"))
    return result.out_dir


def _ort_has(provider: str) -> None:
    import onnxruntime as ort

    if provider not in ort.get_available_providers():
        pytest.skip(f"onnxruntime has no {provider} here (pip install 'deploykit[gpu]')")


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_real_engine_builds_runs_and_passes_parity(small_export, precision):
    entry = trt_build.build_engine(small_export, precision=precision, res="32,48,64", max_batch=2, opt_level=2)
    manifest = read_manifest(small_export)
    assert engines.find_engine(manifest, key=entry["key"])["file"] == entry["file"]
    assert (small_export / entry["file"]).exists()
    assert (small_export / entry["build"]["timing_cache"]["file"]).exists()
    summary = entry["parity_summary"]["tensorrt"]
    assert summary["passed"], entry["parity"]["tensorrt"]
    import tensorrt as trt

    assert entry["tensorrt"] == trt.__version__
    assert entry["build"]["path"] == trt_plan.choose_build_path(trt.__version__, precision).name
    # a rebuild reuses the timing cache and replaces the entry
    again = trt_build.build_engine(small_export, precision=precision, res="32,48,64", max_batch=2, opt_level=2,
                                   parity=False)
    assert again["key"] == entry["key"] and again["build"]["timing_cache"]["loaded"]
    assert [e["key"] for e in read_manifest(small_export)["engines"]].count(entry["key"]) == 1


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_real_engine_rejects_shapes_outside_its_profile_and_cuda_graph_matches(small_export):
    import numpy as np

    from deploykit.runtime.tensorrt import TensorRTBackend
    from deploykit.zoo.sample_inputs import random_inputs

    entry = trt_build.build_engine(small_export, precision="fp16", res="32,64", parity=False)
    spec = get_spec("vapsr:s_x4")
    feed = random_inputs(spec, (1, 48, 40), seed=3)
    with TensorRTBackend(small_export, entry) as plain:
        ref = plain.run(feed)["output"]
        with pytest.raises(EngineError, match="outside the engine's profile"):
            plain.run(random_inputs(spec, (1, 128, 128)))
    try:
        graphed = TensorRTBackend(small_export, entry, cuda_graph=True)
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))
    with graphed:
        first, second = graphed.run(feed)["output"], graphed.run(feed)["output"]
    assert np.array_equal(first, second) and np.allclose(first, ref, atol=1e-3)


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("provider", ["ort-cuda", "ort-tensorrt"])
def test_ort_gpu_providers_parity(small_export, provider):
    _ort_has("CUDAExecutionProvider" if provider == "ort-cuda" else "TensorrtExecutionProvider")
    entry = trt_build.build_engine(small_export, precision="fp16", res="32,64", parity=False)
    results = run_engine_parity(small_export, entry, backends=[provider])
    assert all(r["passed"] for r in results[provider]), results
    assert engines.find_engine(read_manifest(small_export), key=entry["key"])["parity_summary"][provider]["passed"]
