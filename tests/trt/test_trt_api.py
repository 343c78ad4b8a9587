"""The TensorRT code against the real TensorRT Python API of 10.3 (JetPack 6), the newest 10.x and 11.x.

TensorRT cannot run here (no libraries, no GPU), but NVIDIA's binding module is a plain wheel on PyPI
(``tensorrt-cu12-bindings``). Loaded with abort-only stand-ins for the libraries it links to, its classes,
signatures and enum members can be inspected; ``trt_api_dryrun.py`` walks deploykit's build and runtime code
against them (see its docstring). No engine is built and no TensorRT result exists: any call into TensorRT
itself would abort the child process. Skips when the wheel cannot be downloaded or no C compiler is present.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from deploykit.artifacts.manifest import MANIFEST_NAME, new_manifest
from deploykit.zoo.registry import get_spec

HERE = Path(__file__).parent
VERSIONS = ("10.3.0", "10.16.1.11", "11.4.0.106")  # JetPack 6's TensorRT, the newest 10.x, the newest 11.x
CACHE = Path(os.environ.get("DEPLOYKIT_TRT_BINDINGS_CACHE", Path.home() / ".cache" / "deploykit" / "trt-bindings"))

STUB_C = r"""
#include <stdio.h>
#include <stdlib.h>
#define STUB(name) void* name(void) { fprintf(stderr, "dry run: %s called, TensorRT is not here\n", #name); abort(); }
"""


def _bindings(version: str) -> Path:
    """<cache>/<version>/tensorrt_bindings from the PyPI wheel (downloaded once)."""
    target = CACHE / version
    if (target / "tensorrt_bindings" / "tensorrt.so").exists():
        return target
    download = CACHE / f".download-{version}"
    shutil.rmtree(download, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(download),
           f"tensorrt-cu12-bindings=={version}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.skip(f"downloading tensorrt-cu12-bindings=={version} timed out")
    wheels = list(download.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        pytest.skip(f"cannot download tensorrt-cu12-bindings=={version}: {proc.stderr.strip()[-200:]}")
    staging = CACHE / f".unpack-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extractall(staging, [n for n in wheel.namelist() if n.startswith("tensorrt_bindings/")])
    shutil.rmtree(download, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target


def _stand_ins(module: Path, out: Path) -> Path:
    """Abort-only libraries under the sonames the binding module links to (libnvinfer.so.N, ...)."""
    if shutil.which("gcc") is None or shutil.which("nm") is None or shutil.which("ldd") is None:
        pytest.skip("needs gcc, nm and ldd to load the binding module")
    ldd = subprocess.run(["ldd", str(module)], capture_output=True, text=True).stdout
    sonames = [line.split()[0] for line in ldd.splitlines() if "not found" in line]
    nm = subprocess.run(["nm", "-D", "--undefined-only", str(module)], capture_output=True, text=True).stdout
    process = ctypes.CDLL(None)
    symbols = sorted({line.split()[-1].split("@")[0] for line in nm.splitlines() if line.strip()}
                     - {"_ITM_deregisterTMCloneTable", "_ITM_registerTMCloneTable", "__gmon_start__"})
    missing = [s for s in symbols if not s.startswith("_") and not hasattr(process, s)]
    assert missing and sonames, f"unexpected binding module layout: {sonames} {missing}"
    source = out / "stand_in.c"
    source.write_text(STUB_C + "".join(f"STUB({s})\n" for s in missing))
    for soname in sonames:
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(out / soname), f"-Wl,-soname,{soname}", str(source)],
                       check=True, capture_output=True)
    return out


def _onnx(path: Path, node_names: list[str]) -> str:
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Identity", ["image" if i == 0 else f"t{i}"], [f"t{i + 1}"], name=name)
             for i, name in enumerate(node_names)]
    graph = helper.make_graph(nodes, "dry", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                           ["batch", 3, "height", "width"])],
                              [helper.make_tensor_value_info(f"t{len(nodes)}", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph), str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _export_dir(root: Path) -> Path:
    """An export of vapsr:s_x4 as the manifest records it, with small ONNX graphs whose node names matter."""
    spec = get_spec("vapsr:s_x4")
    out = root / "vapsr" / "s_x4"
    out.mkdir(parents=True)
    nodes = ["node_conv2d", "node_layer_norm", "node_min_shape_1", "node_mul", "node_add"]
    manifest = new_manifest(spec)
    manifest["io"] = {"inputs": [{"name": "image", "dims": ["batch", 3, "height", "width"]}]}
    manifest["export"] = {"static_hw": None, "opset": 18}
    manifest["artifacts"] = [
        {"kind": "onnx", "precision": "fp32", "file": "vapsr_s_x4.fp32.onnx",
         "sha256": _onnx(out / "vapsr_s_x4.fp32.onnx", nodes)},
        {"kind": "onnx", "precision": "fp16", "file": "vapsr_s_x4.fp16.onnx",
         "sha256": _onnx(out / "vapsr_s_x4.fp16.onnx", nodes), "fp32_nodes": ["node_layer_norm", "node_min_shape_1"]},
    ]
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return out


_RESULTS: dict[str, dict] = {}  # version -> dry-run result, shared with test_trt_semantics.py (one run each)


@pytest.fixture(scope="module", params=VERSIONS)
def dry_run(request, tmp_path_factory) -> dict:
    return run_dry_run(request.param, tmp_path_factory)


def run_dry_run(version: str, tmp_path_factory) -> dict:
    """The dry run's JSON result for one TensorRT version (run once per session)."""
    if version in _RESULTS:
        return _RESULTS[version]
    bindings = _bindings(version)
    work = tmp_path_factory.mktemp(f"trt-{version}")
    libs = _stand_ins(bindings / "tensorrt_bindings" / "tensorrt.so", work)
    export_dir = _export_dir(work / "exports")
    env = {**os.environ, "LD_LIBRARY_PATH": f"{libs}:{os.environ.get('LD_LIBRARY_PATH', '')}",
           "PYTHONPATH": os.pathsep.join([str(bindings), str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(HERE / "trt_api_dryrun.py"), str(export_dir)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["version"] == version
    _RESULTS[version] = result
    return result


def test_every_tensorrt_call_matches_the_real_api(dry_run):
    assert dry_run["problems"] == []
    assert dry_run["calls_checked"] >= 100
    assert dry_run["unchecked"] == []  # every argument type met was one the checker really checks
    touched = set(dry_run["touched"])
    for member in ("Builder.create_network", "OnnxParser.parse_from_file", "IBuilderConfig.set_timing_cache",
                   "IBuilderConfig.builder_optimization_level=", "IOptimizationProfile.set_shape",
                   "Builder.build_serialized_network", "ITimingCache.serialize", "Runtime.deserialize_cuda_engine",
                   "ICudaEngine.get_tensor_profile_shape", "IExecutionContext.set_input_shape",
                   "IExecutionContext.set_tensor_address", "IExecutionContext.execute_async_v3"):
        assert member in touched, member


def test_build_paths_per_version(dry_run):
    major = int(dry_run["version"].split(".")[0])
    walks = dry_run["walks"]
    strong = walks["fp16-strong"]["record"]
    assert strong["path"] == "strong-fp16" and strong["network_flags"] == ["STRONGLY_TYPED"]
    assert walks["fp32"]["record"]["cleared_flags"] == ["TF32"]
    assert "cannot parse" in walks["parse-failure"]["engine_error"]
    assert "Unsupported operator (dry run)" in walks["parse-failure"]["engine_error"]
    io = walks["fp16-strong"]["io"]
    assert [(t["name"], t["mode"]) for t in io] == [("image", "input"), ("output", "output")]
    assert io[0]["profile"]["min"] == [1, 3, 64, 64]
    if major >= 11:
        # strong typing only: the FP16 ONNX, no FP16 flag, no layer precisions anywhere
        assert walks["fp16-auto"]["record"]["path"] == "strong-fp16"
        assert "has no weak typing" in walks["fp16-weak"]["engine_error"]
        assert not any(m.startswith("ILayer.precision") or m.startswith("ILayer.set_output_type")
                       for m in dry_run["touched"])
    else:
        weak = walks["fp16-auto"]["record"]
        assert weak["path"] == "weak-fp16" and weak["builder_flags"] == ["FP16", "OBEY_PRECISION_CONSTRAINTS"]
        layers = weak["fp32_layers"]
        assert layers["layers"] == ["node_layer_norm"]  # matched by its ONNX node name
        assert layers["integer_layers_left_unpinned"] == ["node_min_shape_1"]  # INT64 output: not an FP32 island
        assert {"ILayer.precision=", "ILayer.set_output_type"} <= set(dry_run["touched"])


def test_runtime_backend_walk(dry_run):
    backend = dry_run["walks"]["backend"]
    assert backend["inputs"] == ["image"] and backend["outputs"] == ["output"]
    assert backend["output_shapes"] == {"output": [1, 3, 256, 288]}


def test_the_checker_catches_known_misuses(dry_run):
    check = dry_run["walks"]["self-check"]
    assert check["missed"] == [], check
    assert "matches no signature" in check["caught"]["wrong argument type"]
    assert "not a writable property" in check["caught"]["read-only property"]
