"""Every runner says what it really is: ``open_backend`` results' name / device / precision per kind, and the
thread counts the runtimes really use (read back from the session / torch, not what was asked for)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from deploykit.errors import BackendUnavailableError
from deploykit.runtime.base import Backend
from deploykit.runtime.open import open_backend, unavailable_reason
from deploykit.runtime.ort import OrtBackend, default_threads
from deploykit.runtime.torch_backend import TorchBackend
from deploykit.util.system import cpu_count
from deploykit.zoo.registry import get_spec

SPEC = get_spec("srresnet:x2")  # image -> output, scale 2


class _Double(torch.nn.Module):
    """A stand-in model with SRResNet x2's contract: nearest x2 upsampling times two."""

    def forward(self, x):
        return 2.0 * torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    """image [N, 3, H, W] -> output = image * 3 (float32 I/O)."""
    path = tmp_path_factory.mktemp("ort") / "triple.onnx"
    three = helper.make_tensor("three", TensorProto.FLOAT, [], [3.0])
    graph = helper.make_graph([helper.make_node("Mul", ["image", "three"], ["output"])], "triple",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [three])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


# --- ONNX Runtime threads ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 2])
def test_ort_session_really_has_the_requested_threads(onnx_file, threads):
    import onnxruntime as ort

    with OrtBackend(onnx_file, threads=threads) as backend:
        really = backend.session.get_session_options().intra_op_num_threads
        assert really == threads and backend.threads == threads
        assert backend.describe() == {"backend": "ort-cpu", "device": "cpu", "precision": "fp32",
                                      "intra_op_threads": threads, "cpu_arena": "the session's own (ORT default)"}
    # the same through the one factory
    opened = open_backend("ort", SPEC, onnx=onnx_file, threads=threads)
    assert opened.session.get_session_options().intra_op_num_threads == threads == opened.threads
    # session options passed in keep their own count unless threads are asked for
    options = ort.SessionOptions()
    options.intra_op_num_threads = 3
    assert OrtBackend(onnx_file, session_options=options).threads == 3
    options = ort.SessionOptions()
    options.intra_op_num_threads = 3
    assert OrtBackend(onnx_file, session_options=options, threads=threads).threads == threads


def test_ort_default_threads_are_one_per_visible_cpu(onnx_file):
    assert default_threads() == cpu_count() >= 1
    assert OrtBackend(onnx_file).threads == cpu_count()


def test_torch_threads_are_read_back_where_deploykit_sets_them():
    from deploykit.bench.probe import set_torch_threads

    before = torch.get_num_threads()
    try:
        for asked in (1, 2):
            got = set_torch_threads(asked)
            assert torch.get_num_threads() == asked == got["torch_intra_op"]
            assert got["torch_inter_op"] == torch.get_num_interop_threads()
        assert set_torch_threads(None)["torch_intra_op"] == 2 == torch.get_num_threads()  # None leaves it alone
    finally:
        torch.set_num_threads(before)


# --- what each kind of runner says it is --------------------------------------------------------------------------

@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_ort_backend_reports_itself_and_runs_the_file(onnx_file, precision):
    backend = open_backend("ort", SPEC, onnx=onnx_file, precision=precision)
    assert type(backend) is OrtBackend
    assert (backend.name, backend.device, backend.precision) == ("ort-cpu", "cpu", precision)
    assert backend.input_names == ["image"] and backend.output_names == ["output"]
    x = np.random.default_rng(0).random((2, 3, 5, 7), dtype=np.float32)
    np.testing.assert_array_equal(backend.run({"image": x})["output"], x * 3)  # it is this file that runs


def test_torch_backend_reports_itself_and_runs_the_model():
    backend = open_backend("torch", SPEC, model=_Double())
    assert type(backend) is TorchBackend
    assert (backend.name, backend.device, backend.precision) == ("torch", "cpu", "fp32")
    assert backend.describe() == {"backend": "torch", "device": "cpu", "precision": "fp32"}
    assert backend.input_names == ["image"] and backend.output_names == [SPEC.outputs[SPEC.image_output].name]
    x = np.random.default_rng(1).random((1, 3, 4, 6), dtype=np.float32)
    out = backend.run({"image": x})[backend.output_names[0]]
    np.testing.assert_array_equal(out, 2 * x.repeat(2, axis=2).repeat(2, axis=3))


def test_torch_fp16_backend_says_fp16_and_computes_in_half():
    backend = open_backend("torch", SPEC, model=_Double(), precision="fp16")
    assert (backend.name, backend.precision) == ("torch", "fp16") and backend._dtype == torch.float16
    x = np.array([[[[1.0 + 2.0 ** -12]]] * 3], np.float32)  # not representable in float16: rounds to 1.0
    assert backend.run({"image": x})[backend.output_names[0]].max() == 2.0


@pytest.mark.parametrize("kind", ["ort-cuda", "ort-tensorrt", "trt"])
def test_gpu_kinds_are_what_they_say_or_refused(kind, tmp_path, onnx_file):
    reason = unavailable_reason(kind)
    if reason is not None:
        with pytest.raises(BackendUnavailableError) as info:
            open_backend(kind, SPEC, onnx=onnx_file, export_dir=tmp_path)
        assert str(info.value) == f"backend {kind} is not available here: {reason}"
        return
    # the capability is here (a GPU machine): whatever answers must be that runner, never a CPU one
    if kind == "ort-cuda":
        backend = open_backend(kind, SPEC, onnx=onnx_file)
        assert backend.name == "ort-cuda" and backend.device.startswith("cuda:")
        assert "CUDAExecutionProvider" in backend.session.get_providers()
    else:
        pytest.skip(f"{kind} needs an engine or export built on this GPU (tests/trt covers it)")


def test_every_backend_kind_is_a_backend():
    for cls in (OrtBackend, TorchBackend):
        assert issubclass(cls, Backend)
