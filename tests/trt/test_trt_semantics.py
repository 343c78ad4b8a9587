"""What deploykit asks TensorRT to build, checked on the calls the dry run records (tests/trt/trt_api_dryrun.py).

test_trt_api.py proves the calls exist in each TensorRT version's real API; this file proves they say the right
thing: the optimisation profile's bounds, the FP32 islands' precision, the network creation flag bits, the build
path per version, and the engine entry written into the manifest. Same dry runs (one per version per session).
"""

from __future__ import annotations

import hashlib

import pytest
import test_trt_api as api  # tests/trt is on sys.path under pytest's default import mode

from deploykit.errors import EngineError, ShapeContractError
from deploykit.runtime.gpu import GpuInfo
from deploykit.trt import plan as trt_plan
from deploykit.trt.plan import profile_from_res
from deploykit.zoo.registry import get_spec

PROFILE_RES = "64x48,96x80,128x112"  # what trt_api_dryrun.PROFILE_RES plans (W x H), with max batch 2
SPEC = get_spec("vapsr:s_x4")
BUILD_WALKS = ("fp16-auto", "fp16-strong", "fp32", "fp16-weak")


@pytest.fixture(scope="module", params=api.VERSIONS)
def dry(request, tmp_path_factory) -> dict:
    result = api.run_dry_run(request.param, tmp_path_factory)
    assert result["problems"] == []
    return result


def _major(dry) -> int:
    return int(dry["version"].split(".")[0])


def _builds(dry) -> dict[str, dict]:
    """The build walks that got as far as a build (TensorRT 11 refuses --typing weak before any call)."""
    walks = {k: dry["walks"][k] for k in BUILD_WALKS if "record" in dry["walks"][k]}
    assert {"fp16-auto", "fp16-strong", "fp32"} <= set(walks)
    return walks


def _calls(walk: dict, name: str) -> list[dict]:
    return [c for c in walk["calls"] if c["call"] == name]


def test_profile_bounds_are_ordered_and_are_the_plans():
    expected = {n: [list(s) for s in shapes]
                for n, shapes in profile_from_res(SPEC, PROFILE_RES, max_batch=2).shapes(SPEC).items()}
    assert expected == {"image": [[1, 3, 48, 64], [1, 3, 80, 96], [2, 3, 112, 128]]}  # W x H parsed as H, W


def test_profile_is_set_once_per_input_min_opt_max(dry):
    expected = {n: [list(s) for s in shapes]
                for n, shapes in profile_from_res(SPEC, PROFILE_RES, max_batch=2).shapes(SPEC).items()}
    for name, walk in _builds(dry).items():
        shapes = _calls(walk, "IOptimizationProfile.set_shape")
        assert sorted(c["args"][0] for c in shapes) == sorted(t.name for t in SPEC.inputs), name
        for call in shapes:
            lo, opt, hi = call["args"][1:]
            assert all(a <= b <= c for a, b, c in zip(lo, opt, hi)), (name, call)
            assert [lo, opt, hi] == expected[call["args"][0]], (name, call)
            planned = walk["profile"]["inputs"][call["args"][0]]
            assert [lo, opt, hi] == [planned["min"], planned["opt"], planned["max"]], (name, call)
        added = _calls(walk, "IBuilderConfig.add_optimization_profile")
        assert len(added) == 1, name
        order = [c["call"] for c in walk["calls"]]
        assert order.index("IBuilderConfig.add_optimization_profile") > max(
            i for i, c in enumerate(order) if c == "IOptimizationProfile.set_shape"), name


def test_fp32_islands_are_pinned_to_float_and_only_the_selected_layers(dry):
    for name, walk in _builds(dry).items():
        precision = _calls(walk, "ILayer.precision=")
        outputs = _calls(walk, "ILayer.set_output_type")
        assert not any("HALF" in str(c["args"]) for c in walk["calls"] if c["call"].startswith("ILayer.")), name
        if walk["record"]["path"] != "weak-fp16":
            assert precision == [] and outputs == [], name  # strong typing and FP32: the graph decides
            continue
        selected = walk["record"]["fp32_layers"]["layers"]
        assert selected == ["node_layer_norm"]
        assert [(c["on"], c["args"]) for c in precision] == [(n, ["DataType.FLOAT"]) for n in selected], name
        assert [(c["on"], c["args"]) for c in outputs] == [(n, [0, "DataType.FLOAT"]) for n in selected], name


def test_network_creation_flags_are_built_from_bits(dry):
    bits = dry["network_flag_bits"]
    for name, walk in _builds(dry).items():
        created = _calls(walk, "Builder.create_network")
        assert len(created) == 1, name
        flags = created[0]["args"][0]
        assert flags == sum(1 << bits[n] for n in walk["record"]["network_flags"]), (name, flags)
    strong = _builds(dry)["fp16-strong"]
    assert strong["record"]["network_flags"] == ["STRONGLY_TYPED"]
    assert _calls(strong, "Builder.create_network")[0]["args"] == [1 << bits["STRONGLY_TYPED"]]


def _flags(walk, call: str) -> list[str]:
    return [c["args"][0] for c in _calls(walk, call)]


def test_build_path_per_version(dry):
    walks = _builds(dry)
    for name, walk in walks.items():
        parsed = _calls(walk, "OnnxParser.parse_from_file")
        assert len(parsed) == 1 and parsed[0]["args"][0].endswith("/" + walk["onnx_file"]), name
    fp32 = walks["fp32"]
    assert fp32["onnx_file"].endswith(".fp32.onnx") and _flags(fp32, "IBuilderConfig.clear_flag") == ["BuilderFlag.TF32"]
    assert _flags(fp32, "IBuilderConfig.set_flag") == []
    strong = walks["fp16-strong"]
    assert strong["onnx_file"].endswith(".fp16.onnx") and _flags(strong, "IBuilderConfig.set_flag") == []
    auto = walks["fp16-auto"]
    if _major(dry) >= 11:
        assert auto["record"]["path"] == "strong-fp16" and auto["onnx_file"].endswith(".fp16.onnx")
        assert _flags(auto, "IBuilderConfig.set_flag") == []  # BuilderFlag.FP16 does not exist any more
        assert "fp16-weak" not in walks and "has no weak typing" in dry["walks"]["fp16-weak"]["engine_error"]
    else:
        for walk in (auto, walks["fp16-weak"]):
            assert walk["record"]["path"] == "weak-fp16" and walk["onnx_file"].endswith(".fp32.onnx")
            assert _flags(walk, "IBuilderConfig.set_flag") == ["BuilderFlag.FP16",
                                                                "BuilderFlag.OBEY_PRECISION_CONSTRAINTS"]
            assert _calls(walk, "Builder.create_network")[0]["args"] == [0]
    for walk in walks.values():  # the flags are set before the build, on the config that is built
        order = [c["call"] for c in walk["calls"]]
        assert order.index("Builder.build_serialized_network") > max(
            (i for i, c in enumerate(order) if c.startswith("IBuilderConfig.set_flag") or "clear_flag" in c),
            default=-1)


def test_manifest_engine_entry_records_the_build(dry):
    expected_profile = profile_from_res(SPEC, PROFILE_RES, max_batch=2).to_dict(SPEC)
    for walk_name, precision in (("entry-fp16-auto", "fp16"), ("entry-fp32", "fp32")):
        walk = dry["walks"][walk_name]
        entry, stored = walk["entry"], walk["stored"]
        assert stored == entry  # what build_engine returns is what the manifest holds
        build = entry["build"]
        assert entry["precision"] == entry["identity"]["precision"] == precision
        assert entry["tensorrt"] == entry["identity"]["tensorrt"] == dry["version"]
        assert entry["identity"]["build_path"] == build["path"]
        assert entry["identity"]["onnx_file"] == walk["onnx_file"]
        assert entry["profile"] == expected_profile and entry["identity"]["profile"] == {
            k: v for k, v in expected_profile.items() if k != "inputs"}
        assert ".b2_min64x48_opt96x80_max128x112." in entry["file"] and entry["file"].endswith(".engine")
        assert entry["bytes"] == 16 and entry["sha256"] == hashlib.sha256(b"\0" * 16).hexdigest()
        prebuild = build["prebuild"]  # the pre-build check's figures at the profile's maximum, in the entry
        assert prebuild["largest_tensor_elements"] <= prebuild["max_elements"] == 2**31 - 1
        assert prebuild["activation_bytes_estimate"] > 0 and prebuild["gpu_free_bytes"] is None  # dry-run GPU
        if precision == "fp32":
            assert build["path"] == "fp32" and build["cleared_flags"] == ["TF32"]
            assert build["builder_flags"] == [] and build["network_flags"] == []
            assert walk["onnx_file"].endswith(".fp32.onnx")
        elif _major(dry) >= 11:
            assert build["path"] == "strong-fp16" and build["network_flags"] == ["STRONGLY_TYPED"]
            assert build["builder_flags"] == [] and "fp32_layers" not in build
            assert walk["onnx_file"].endswith(".fp16.onnx")
        else:
            assert build["path"] == "weak-fp16" and build["network_flags"] == []
            assert build["builder_flags"] == ["FP16", "OBEY_PRECISION_CONSTRAINTS"] and build["cleared_flags"] == []
            assert build["fp32_layers"]["layers"] == ["node_layer_norm"]
            assert walk["onnx_file"].endswith(".fp32.onnx")


# --- the plan itself, pure Python (fast; also the mutation-testing selection for deploykit/trt/plan.py) ----------

def test_build_path_records_precision_and_notes():
    weak = trt_plan.choose_build_path("10.11.1", "fp16")
    assert weak.to_dict() == {
        "path": "weak-fp16", "onnx_precision": "fp32", "network_flags": [],
        "builder_flags": ["FP16", "OBEY_PRECISION_CONSTRAINTS"], "cleared_flags": [], "layer_precisions": True,
        "note": "TensorRT 10: FP32 ONNX + BuilderFlag.FP16, FP32 islands pinned by layer precision"}
    assert weak.precision == "fp16"
    deprecated = trt_plan.choose_build_path("10.12.0", "fp16")
    assert deprecated.note == weak.note + (
        "; TensorRT 10.12 deprecated these flags and layer precisions (they still work in 10.x): "
        "--typing strong builds the FP16 ONNX as TensorRT 11 does")
    fp32 = trt_plan.choose_build_path("11.4.0", "fp32")
    assert (fp32.name, fp32.precision, fp32.onnx_precision, fp32.clear_flags, fp32.builder_flags) == (
        "fp32", "fp32", "fp32", ("TF32",), ())
    assert fp32.note == "FP32 ONNX, TF32 cleared so FP32 means FP32"
    for version in ("10.3.0", "11.4.0"):
        strong = trt_plan.choose_build_path(version, "fp16", "strong" if version < "11" else "auto")
        assert (strong.name, strong.precision, strong.onnx_precision) == ("strong-fp16", "fp16", "fp16")
        assert strong.network_flags == ("STRONGLY_TYPED",) and not strong.layer_precisions
        assert strong.note.startswith("TensorRT 10 strongly typed" if version < "11" else "TensorRT >= 11: strongly")


def test_build_path_refusal_messages():
    with pytest.raises(EngineError) as info:
        trt_plan.choose_build_path("10.3.0", "int8")
    assert str(info.value) == "unknown precision 'int8' (use fp16 or fp32)"
    with pytest.raises(EngineError) as info:
        trt_plan.choose_build_path("10.3.0", "fp16", "loose")
    assert str(info.value) == "unknown typing 'loose' (use auto, weak, strong)"
    with pytest.raises(EngineError, match=r"use --typing strong \(the default\), which builds the FP16 ONNX$"):
        trt_plan.choose_build_path("11.0.0", "fp16", "weak")


def test_profile_opt_is_the_middle_size_by_area():
    # by area: 64x64 (4096) < 32x256 (8192) < 96x96 (9216); sorted by height or by width the middle differs
    got = trt_plan.profile_from_res(SPEC, [(32, 256), (96, 96), (64, 64)])
    assert (got.min_hw, got.opt_hw, got.max_hw, got.max_batch) == ((32, 64), (32, 256), (96, 256), 1)
    assert trt_plan.profile_from_res(SPEC, "256x32,96,64") == got  # the same given as --res text (W x H)
    assert trt_plan.profile_from_res(SPEC, ["256x32", "96", "64"]) == got  # or as repeated --res options


def test_profile_defaults_and_pass_through():
    assert trt_plan.profile_from_string(SPEC, "64:96:128").max_batch == 1
    assert trt_plan.default_profile(SPEC).max_batch == 1 == trt_plan.resolve_profile(SPEC).max_batch
    assert trt_plan.resolve_profile(SPEC) == trt_plan.default_profile(SPEC)
    pinned = trt_plan.default_profile(SPEC, max_batch=2, static_hw=(64, 80))
    assert (pinned.min_hw, pinned.opt_hw, pinned.max_hw, pinned.max_batch) == ((64, 80), (64, 80), (64, 80), 2)
    for kw in ({"profile": "64:96:128"}, {"res": "64,96,128"}):
        got = trt_plan.resolve_profile(SPEC, max_batch=3, **kw)
        assert (got.min_hw, got.opt_hw, got.max_hw, got.max_batch) == ((64, 64), (96, 96), (128, 128), 3)
        with pytest.raises(EngineError, match=r"fixed input size 80x64 \(exported with --static\)"):
            trt_plan.resolve_profile(SPEC, static_hw=(64, 80), **kw)
    with pytest.raises(EngineError) as info:
        trt_plan.resolve_profile(SPEC, res="64", profile="64:64:64")
    assert str(info.value) == "give either --res or --profile, not both"


def test_profile_size_messages_name_the_corner_and_the_side():
    spec8 = get_spec("mprnet:deraining")  # multiple of 8
    with pytest.raises(ShapeContractError) as info:
        trt_plan.profile_from_string(spec8, "60x36:64:128")
    assert str(info.value) == (f"profile minimum 60x36 does not fit {spec8.name}: height 36 is not a multiple of 8 "
                               "(use 32 or 40); width 60 is not a multiple of 8 (use 56 or 64)")
    for corner, text in (("optimum", "64:60:128"), ("maximum", "64:64:130")):
        with pytest.raises(ShapeContractError, match=rf"^profile {corner} "):
            trt_plan.profile_from_string(spec8, text)
    with pytest.raises(ShapeContractError, match=r"^--res 60x60 does not fit"):
        trt_plan.profile_from_res(spec8, "60")
    with pytest.raises(EngineError, match=r"profile widths must satisfy min <= opt <= max, got 64 / 32 / 128"):
        trt_plan.profile_from_string(SPEC, "64x64:32x64:128x128")
    with pytest.raises(EngineError, match=r"profile heights must satisfy"):
        trt_plan.profile_from_string(SPEC, "64x64:64x32:128x128")
    square = next(s for s in __import__("deploykit").list_models() if get_spec(s).square) \
        if any(get_spec(s).square for s in __import__("deploykit").list_models()) else None
    if square is not None:
        sq = get_spec(square)
        with pytest.raises(ShapeContractError, match=r"the model takes square inputs only \(give N, not WxH\)"):
            trt_plan.check_profile_size(sq, (sq.valid_size(64), sq.valid_size(128)), "x")


def test_build_option_bounds():
    assert trt_plan.validate_build_options(None, 0) == (None, 0)
    assert trt_plan.validate_build_options(0.5, 5) == (1 << 29, 5)
    assert trt_plan.validate_build_options(None, None) == (None, 3)
    for level in (-1, 6):
        with pytest.raises(EngineError, match=rf"--opt-level must be 0..5 .*not {level}$"):
            trt_plan.validate_build_options(None, level)
    with pytest.raises(EngineError, match="--workspace must be a positive number of GB, not 0$"):
        trt_plan.validate_build_options(0, None)


def test_layer_owner_without_a_match_is_none():
    assert trt_plan.layer_owner("relu_7", "", ["conv", "conv_1"]) is None
    assert trt_plan.layer_owner("conv_1_2", "", ["conv", "conv_1"]) == "conv_1"
    assert trt_plan.layer_owner("x", "[ONNX Layer: node_a | caller (FUNC)]", []) == "node_a"


def test_identity_key_is_the_sha256_of_canonical_json():
    import json

    identity = {"b": [1, 2], "a": "x", "c": {"z": 1, "y": 2}}
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    assert canonical == '{"a":"x","b":[1,2],"c":{"y":2,"z":1}}'
    assert trt_plan.identity_key(identity) == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert trt_plan.identity_key(dict(reversed(list(identity.items())))) == trt_plan.identity_key(identity)


def _manifest_dir(tmp_path):
    import json

    from deploykit.artifacts.manifest import MANIFEST_NAME, new_manifest

    manifest = new_manifest(SPEC)
    manifest["artifacts"] = [
        {"kind": "onnx", "precision": "fp32", "file": "m.fp32.onnx", "sha256": "aa" * 32},
        {"kind": "onnx", "precision": "fp16", "file": "m.fp16.onnx", "sha256": "bb" * 32, "fp32_nodes": ["n1"]}]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    return manifest


def test_plan_build_identity_fields(tmp_path):
    manifest = _manifest_dir(tmp_path)
    profile = trt_plan.profile_from_res(SPEC, "64,128")
    plan = trt_plan.plan_build(tmp_path, manifest, SPEC, precision="fp16", profile=profile,
                               tensorrt_version="10.9.0.34", gpu=GpuInfo("NVIDIA L4", "8.9"))
    assert plan.identity == {"model": "vapsr", "variant": "s_x4", "precision": "fp16", "build_path": "weak-fp16",
                             "profile": profile.to_dict(), "tensorrt": "10.9.0.34", "gpu_name": "NVIDIA L4",
                             "compute_capability": "8.9", "onnx_file": "m.fp32.onnx", "onnx_sha256": "aa" * 32}
    assert plan.spec is SPEC and plan.manifest is manifest and plan.fp32_nodes == ["n1"]
    assert plan.key == trt_plan.identity_key(plan.identity)
    custom = trt_plan.plan_build(tmp_path, manifest, SPEC, precision="fp32", profile=profile, typing="auto",
                                 tensorrt_version="11.4.0", gpu=GpuInfo("NVIDIA L4", "8.9"),
                                 timing_cache=tmp_path / "shared.cache")
    assert custom.timing_cache == tmp_path / "shared.cache" and custom.identity["onnx_file"] == "m.fp32.onnx"
    strong = trt_plan.plan_build(tmp_path, manifest, SPEC, precision="fp16", profile=profile, typing="strong",
                                 tensorrt_version="10.9.0.34", gpu=GpuInfo("NVIDIA L4", "8.9"))
    assert strong.path.name == "strong-fp16" and strong.identity["onnx_file"] == "m.fp16.onnx"
    no16 = {**manifest, "artifacts": manifest["artifacts"][:1]}
    assert trt_plan.plan_build(tmp_path, no16, SPEC, precision="fp32", profile=profile, tensorrt_version="11.4.0",
                               gpu=GpuInfo("x", "9.0")).fp32_nodes == []
    with pytest.raises(EngineError) as info:
        trt_plan.plan_build(tmp_path, {**manifest, "artifacts": []}, SPEC, precision="fp32", profile=profile,
                            tensorrt_version="11.4.0", gpu=GpuInfo("x", "9.0"))
    assert str(info.value) == (f"the fp32 build needs the FP32 ONNX, which {tmp_path / 'manifest.json'} does not "
                               "list; re-run 'deploykit export'")


def test_fp32_selection_record():
    sel = trt_plan.select_fp32_layers([("ln", "NORMALIZATION"), ("sm_1", "SOFTMAX"), ("c", "CONSTANT")], ["ln", "gone"],
                                      keep_fp32_ops=("Softmax",), node_names=["ln", "other"])
    assert sel.to_dict() == {"pinned_layers": 2, "layers": ["ln", "sm_1"], "matched_nodes": 1,
                             "unmatched_nodes": ["gone"], "pinned_by_op_type": ["sm_1"],
                             "integer_layers_left_unpinned": []}
