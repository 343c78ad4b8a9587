"""deploykit.bench.guard: the verdict for one case, host and device pools, with ORT's calibration (no runs)."""

from __future__ import annotations

import pytest
import torch

from deploykit.bench import guard, memory
from deploykit.bench.guard import memory_guard
from deploykit.bench.plan import BenchSettings, Case, Work
from deploykit.bench.run import new_record
from deploykit.bench.sources import Target
from deploykit.bench.state import ModelState
from deploykit.errors import BackendUnavailableError
from deploykit.zoo.registry import get_spec

GIB = 2**30


@pytest.fixture(scope="module")
def state() -> ModelState:
    return ModelState(Target(get_spec("srresnet:x2")), "cpu")


def _case(state: ModelState, backend: str, precision: str = "fp32") -> tuple[Case, Work]:
    case = Case(state.target, backend, precision, (64, 64), 1)
    return case, Work((64, 64), 1, 1, 4 * 3 * 128 * 128)


@pytest.fixture
def plenty(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 64 * GIB)
    monkeypatch.setattr(memory, "host_reserve", lambda total=None: GIB)


@pytest.fixture
def tight(monkeypatch):
    """1 GiB usable: the coarse ORT bound of a 64x64 srresnet case (~0.36 GiB) is above a quarter of it."""
    monkeypatch.setattr(memory, "available_memory", lambda: 2 * GIB)
    monkeypatch.setattr(memory, "host_reserve", lambda total=None: GIB)


def test_device_backends_are_guarded_on_the_gpu(state, plenty, monkeypatch):
    case, work = _case(state, "trt", "fp16")
    settings = BenchSettings([(64, 64)], ["trt"], ["fp16"])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (8 * GIB, 16 * GIB))
    record = new_record(case, 0)
    verdict = memory_guard(case, state, settings, "cpu", work, record, print)
    assert verdict.fits and verdict.pool == "host"  # the host keeps only the I/O copies
    assert verdict.trace_peak_bytes == 0 and record.memory["estimate_bytes"] == verdict.estimate_bytes
    assert record.memory["gpu_trace_peak_bytes"] == state.trace((64, 64), 1, "fp16").peak_bytes
    assert record.memory["gpu_trace_peak_bytes"] < record.memory["trace_peak_bytes"]  # traced in FP16
    assert record.memory["gpu_available_bytes"] == 8 * GIB
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (GIB // 4, 16 * GIB))  # below the 512 MiB reserve
    verdict = memory_guard(case, state, settings, "cpu", work, new_record(case, 0), print)
    assert not verdict.fits and verdict.pool == "cuda" and "free GPU memory" in verdict.reason("64x64")


def test_far_below_the_memory_available_the_coarse_bound_is_kept(state, plenty, monkeypatch):
    monkeypatch.setattr(guard, "run_probe", lambda *a, **k: pytest.fail("no probe is worth running here"))
    for backend in ("ort", "torch"):
        case, work = _case(state, backend)
        record = new_record(case, 0)
        verdict = memory_guard(case, state, BenchSettings([(64, 64)], [backend], ["fp32"]), "cpu", work, record,
                               print)
        assert verdict.fits and verdict.factor == memory.HOST_FACTORS[backend]
        assert record.memory["estimate_method"].startswith("coarse") and "calibration" not in record.memory


@pytest.mark.parametrize("backend, key", [("ort", ("ort", "fp32", 1, "all")), ("torch", ("torch", "fp32", 1, None)),
                                          ("torch-compile", ("torch", "fp32", 1, None))])
def test_calibration_is_per_backend_kind(state, tight, monkeypatch, backend, key):
    cal = {"factor": 1.5, "fixed_bytes": 300 * 2**20, "ratio": 1.2, "sizes": [64, 128], "seconds": 0.0}
    monkeypatch.setitem(state.calibrations, key, cal)
    monkeypatch.setattr(guard, "run_probe", lambda *a, **k: pytest.fail("the probe ran again"))
    case, work = _case(state, backend)
    record = new_record(case, 0)
    verdict = memory_guard(case, state, BenchSettings([(64, 64)], [backend], ["fp32"]), "cpu", work, record, print)
    assert verdict.factor == 1.5 and record.memory["calibration"] is cal
    assert record.memory["estimate_method"].startswith("calibrated: 300 MiB + 1.5 x")


def test_ort_uses_the_calibrated_factor(state, tight, monkeypatch):
    case, work = _case(state, "ort")
    settings = BenchSettings([(64, 64)], ["ort"], ["fp32"])
    cal = {"factor": 7.5, "fixed_bytes": 300 * 2**20, "ratio": 3.0, "sizes": [48, 96], "seconds": 0.0}
    monkeypatch.setitem(state.calibrations, ("ort", "fp32", 1, "all"), cal)  # probed before: no backend is opened
    monkeypatch.setattr(guard, "run_probe", lambda *a, **k: pytest.fail("the probe ran again"))
    record = new_record(case, 0)
    verdict = memory_guard(case, state, settings, "cpu", work, record, print)
    trace = state.trace((64, 64), 1).peak_bytes
    assert verdict.fits and verdict.factor == 7.5
    assert verdict.estimate_bytes == int(7.5 * trace + 300 * 2**20 + 2 * work.held_bytes)
    assert record.memory["calibration"] is cal and record.memory["guard_factor"] == 7.5


def test_an_unavailable_probe_backend_is_a_skip(state, tight, monkeypatch):
    case, work = _case(state, "ort", "fp16")

    def unavailable(*args, **kwargs):
        raise BackendUnavailableError("no onnxruntime here")

    monkeypatch.setattr(guard, "require_available", unavailable)
    monkeypatch.setattr(guard, "run_probe", lambda *a, **k: pytest.fail("probed an unavailable backend"))
    events = []
    record = new_record(case, 0)
    settings = BenchSettings([(64, 64)], ["ort"], ["fp16"])
    assert memory_guard(case, state, settings, "cpu", work, record, lambda *e: events.append(e)) is None
    assert record.status == "skipped" and record.reason == "backend unavailable: no onnxruntime here"
    assert events == [("skip", f"{case.label}: backend unavailable: no onnxruntime here")]
    assert not [k for k in state.calibrations if k[:2] == ("ort", "fp16")]
