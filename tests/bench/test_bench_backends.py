"""deploykit.bench.backends: which runner each case opens through runtime.open.open_backend (stubbed: the GPU
kinds are checked on any machine), which engine a TensorRT case takes, and the call the timing loop wraps."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from deploykit.bench import backends
from deploykit.bench.backends import case_device, engine_for, make_backend, run_once_fn
from deploykit.bench.plan import BenchSettings, Case
from deploykit.bench.sources import Target
from deploykit.bench.state import ModelState
from deploykit.errors import ShapeContractError
from deploykit.runtime.profiles import Profile
from deploykit.zoo.registry import get_spec
from deploykit.zoo.sample_inputs import random_inputs


@pytest.fixture(scope="module")
def state() -> ModelState:
    return ModelState(Target(get_spec("srresnet:x2")), "cpu")


@pytest.fixture
def opened(monkeypatch, state, tmp_path):
    """open_backend recorded instead of run; the case's ONNX already found (state.onnx) in tmp_path."""
    calls = []
    monkeypatch.setattr(backends, "open_backend", lambda kind, spec, **kw: calls.append((kind, kw)) or
                        SimpleNamespace(name=kind, device="cuda:0"))
    manifest = {"export": {"static_hw": None},
                "artifacts": [{"kind": "onnx", "precision": "fp16", "file": "m.fp16.onnx", "sha256": "ab" * 32}]}
    monkeypatch.setitem(state.onnx, "fp16", (tmp_path / "m.fp16.onnx", tmp_path, manifest, "exports"))
    return calls


def _case(state, backend, precision="fp16", hw=(96, 128), batch=1) -> Case:
    return Case(state.target, backend, precision, hw, batch)


def test_torch_fp32_is_the_reference_runner(state):
    settings = BenchSettings([(64, 64)], ["torch"], ["fp32"])
    assert make_backend(_case(state, "torch", "fp32"), state, settings, "cpu", print) == (state.reference, None)


def test_ort_cuda_gets_a_profile_of_the_work_shape(state, opened, tmp_path):
    settings = BenchSettings([(96, 128)], ["ort-cuda"], ["fp16"], tile=64, overlap=8)
    runner, artifact = make_backend(_case(state, "ort-cuda", batch=2), state, settings, "cuda", print)
    ((kind, kw),) = opened
    hw = backends.work_hw((96, 128), settings, state.spec)
    assert kind == "ort-cuda" and kw["profile"] == Profile(hw, hw, hw, 2) and kw["export_dir"] == tmp_path
    assert artifact == {"file": str(tmp_path / "m.fp16.onnx"), "source": "exports", "sha256": "ab" * 32}
    assert case_device(runner) == "cuda:0"


def test_trt_opens_the_engine_it_found(state, opened, tmp_path, monkeypatch):
    entry = {"file": "engines/m.plan", "sha256": "cd" * 32, "tensorrt": "10.9"}
    monkeypatch.setattr(backends, "engine_for", lambda case, settings, export_dir, hw, notify: entry)
    settings = BenchSettings([(96, 128)], ["trt"], ["fp16"])
    _, artifact = make_backend(_case(state, "trt"), state, settings, "cuda", print)
    assert opened == [("trt", {"export_dir": tmp_path, "engine": entry})]
    assert artifact == {"file": str(tmp_path / "engines/m.plan"), "source": "engine", "sha256": "cd" * 32,
                        "tensorrt": "10.9", "onnx": str(tmp_path / "m.fp16.onnx")}


def test_a_fixed_size_export_refuses_other_sizes(state, opened, monkeypatch):
    path, folder, manifest, source = state.onnx["fp16"]
    monkeypatch.setitem(state.onnx, "fp16", (path, folder, {**manifest, "export": {"static_hw": [64, 64]}}, source))
    with pytest.raises(ShapeContractError, match="fixed size 64x64"):
        make_backend(_case(state, "ort"), state, BenchSettings([(96, 128)], ["ort"], ["fp16"]), "cpu", print)
    assert opened == []


def test_engine_for_takes_a_matching_engine_or_builds_one(state, monkeypatch, tmp_path):
    def engine(precision, trt="10.9", cc="9.0", max_hw=(128, 128)):
        return {"precision": precision, "tensorrt": trt, "compute_capability": cc, "file": f"{precision}-{trt}",
                "profile": Profile((32, 32), (64, 64), max_hw, 1).to_dict()}

    engines = [engine("fp16"), engine("fp16", trt="10.1"), engine("fp32"), engine("fp16", max_hw=(64, 64))]
    monkeypatch.setattr(backends, "import_tensorrt", lambda: SimpleNamespace(__version__="10.9"))
    monkeypatch.setattr(backends, "gpu_info", lambda index=0: SimpleNamespace(compute_capability="9.0"))
    monkeypatch.setattr(backends, "read_manifest", lambda folder: {"engines": engines})
    built = []
    monkeypatch.setattr(backends, "build_engine", lambda folder, **kw: built.append(kw) or {"file": "new"})
    settings = BenchSettings([(96, 128), (256, 256)], ["trt"], ["fp16"])
    assert engine_for(_case(state, "trt"), settings, tmp_path, (96, 128), print) is engines[0]  # the one of this TensorRT, GPU and size
    assert built == []
    notes = []
    assert engine_for(_case(state, "trt"), settings, tmp_path, (256, 256), notes.append) == {"file": "new"}
    assert built == [{"precision": "fp16", "res": ["128x96", "256x256"], "max_batch": 1, "parity": False}]
    assert "building a TensorRT fp16 engine" in notes[0]


def test_run_once_is_the_image_output_whole_or_tiled(state):
    feed = random_inputs(state.spec, (1, 40, 40), seed=1)
    whole = run_once_fn(state.reference, state, feed, BenchSettings([(40, 40)], ["torch"], ["fp32"]), 1)()
    tiled = run_once_fn(state.reference, state, feed,
                        BenchSettings([(40, 40)], ["torch"], ["fp32"], tile=24, overlap=8), 1)()
    assert whole.shape == tiled.shape == (1, 3, 80, 80)
    assert np.abs(whole - tiled).mean() < 0.05  # blended tiles approximate the whole image
    assert case_device(state.reference) == "cpu"
