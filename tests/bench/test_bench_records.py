"""deploykit.bench.records: the JSON written by a benchmark (schema deploykit.bench v1) and the machine facts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from deploykit.bench.memory import PROBE_SIZES
from deploykit.bench.plan import BenchSettings
from deploykit.bench.records import (LATENCY_NOTE, METHODS, SCHEMA, SCHEMA_VERSION, BenchRecord, BenchResult,
                                     device_info, json_safe, latency_note, library_versions, memory_summary)

V1_KEYS = {"schema", "schema_version", "created", "started", "command", "argv", "device", "versions", "settings",
           "load", "host_memory", "unavailable_backends", "methods", "flops", "notes", "probe", "records",
           "complete", "segments"}


def _record(**kw) -> BenchRecord:
    return BenchRecord("srresnet:x2", "srresnet", "x2", "ort", "fp32", 1, [1080, 1920], [2160, 3840], **kw)


def test_json_safe_makes_strict_json():
    data = json_safe({"nan": math.nan, "inf": -math.inf, "i": np.int64(3), "f": np.float32(0.5),
                      "nested": ({"x": np.float64(math.nan)}, [1, 2.0])})
    assert data == {"nan": None, "inf": None, "i": 3, "f": 0.5, "nested": [{"x": None}, [1, 2.0]]}
    assert type(data["i"]) is int and type(data["f"]) is float
    json.dumps(data, allow_nan=False)


def test_record_to_dict_writes_wxh_and_stop_says_why():
    record = _record(latency_ms={"median": math.inf})
    data = record.to_dict()
    assert data["input_wxh"] == "1920x1080" and data["output_wxh"] == "3840x2160"  # W x H, as typed
    assert data["latency_ms"] == {"median": None} and data["status"] == "ok"
    events = []
    record.stop("skipped", "too big", lambda kind, msg: events.append((kind, msg)), "srresnet:x2 ort/fp32 1920x1080")
    assert (record.status, record.reason) == ("skipped", "too big")
    record.stop("error", "boom", lambda kind, msg: events.append((kind, msg)), "case")
    assert events == [("skip", "srresnet:x2 ort/fp32 1920x1080: too big"), ("error", "case: boom")]


def test_result_to_dict_has_the_v1_keys():
    settings = BenchSettings([(1080, 1920)], ["ort"], ["fp32"], iters=2)
    result = BenchResult(settings, [_record()], {"name": "cpu"}, {"torch": "x"}, ["deploykit", "bench", "a b"], {},
                         "2026-01-01T00:00:00+00:00", "2026-01-01T00:01:00+00:00", [0.5, 0.4, 0.3], None,
                         {"MemTotal": 1}, {"MemTotal": 1})
    data = result.to_dict()
    assert set(data) == V1_KEYS
    assert (data["schema"], data["schema_version"]) == (SCHEMA, SCHEMA_VERSION) == ("deploykit.bench", 1)
    assert data["command"] == "deploykit bench 'a b'" and data["argv"] == ["deploykit", "bench", "a b"]
    assert data["created"] == "2026-01-01T00:01:00+00:00" and data["settings"]["sizes"] == ["1920x1080"]
    assert data["methods"] == METHODS and data["records"][0]["input_wxh"] == "1920x1080"
    assert data["load"]["loadavg_before"] == [0.5, 0.4, 0.3] and data["load"]["loadavg_after"] is None
    assert data["complete"] is True and data["segments"] == [  # one run: the file's only segment
        {"started": data["started"], "created": data["created"], "command": data["command"], "probe": {},
         "load": {"loadavg_before": [0.5, 0.4, 0.3], "loadavg_after": None}}]
    json.dumps(data, allow_nan=False)


def test_methods_state_the_probe_sizes():
    assert f"{PROBE_SIZES[0]}^2 and {PROBE_SIZES[1]}^2" in METHODS["memory_guard"]
    assert {"latency", "percentiles", "flops", "memory", "memory_guard", "parity"} <= set(METHODS)


def test_latency_note_by_backend_and_device():
    assert latency_note("trt", "cuda:0") == LATENCY_NOTE["cuda"]
    assert latency_note("torch", "cuda") == LATENCY_NOTE["cuda"]
    assert latency_note("ort", "cpu") == LATENCY_NOTE["ort:cpu"]
    assert latency_note("aoti", "cpu") == "Backend.run on host numpy arrays"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU machine's description")
def test_device_info_on_a_cpu_machine():
    info = device_info({"torch_intra_op": 1})
    assert info["gpu"] is None and info["slug"].startswith("cpu-") and info["slug"].endswith("cpu")
    assert info["slug"] == info["slug"].lower() and info["threads"] == {"torch_intra_op": 1}
    assert info["cpu_cores_visible"] >= 1 and "CPUs visible" in info["name"]


def test_library_versions_and_memory_summary():
    versions = library_versions()
    assert versions["torch"] and versions["onnxruntime"]
    assert "CPUExecutionProvider" in versions["onnxruntime_providers"].split(",")
    assert {"onnxruntime-gpu", "tensorrt", "matplotlib", "rich", "typer"} <= set(versions)
    mem = memory_summary()
    assert set(mem) == {"MemTotal", "MemAvailable", "SwapTotal", "SwapFree"}
    assert mem["MemTotal"] is None or mem["MemTotal"] > 0
