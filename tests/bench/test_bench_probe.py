"""deploykit.bench.probe: the same-run GEMM probe, CPU time / wall time, threads read back, and the suspect flag."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deploykit.bench import probe
from deploykit.bench.probe import (
    CpuClock,
    gemm_probe,
    judge,
    judge_records,
    ort_readback,
    peak_gflops,
)
from deploykit.bench.records import BenchRecord


def test_gemm_probe_reports_fp32_on_cpu_only():
    result = gemm_probe("cpu", n=128, repeats=2)
    assert set(result) >= {"fp32", "device", "n", "torch_threads", "method"} and "fp16" not in result
    assert result["fp32"]["gflops_best"] >= result["fp32"]["gflops_median"] > 0
    assert result["torch_threads"] == torch.get_num_threads()
    kernels = result["fp32"]["kernels_gflops"]  # the peak is the best library kernel, each one recorded
    assert set(kernels) == {"mkl_sgemm", "onednn_conv3x3", "mlas_sgemm", "mlas_conv3x3"}
    assert result["fp32"]["gflops_best"] == max(kernels.values()) == kernels[result["fp32"]["best_kernel"]]
    assert result["fp32"]["sgemm_gflops_best"] == kernels["mkl_sgemm"]


def test_gemm_probe_counts_two_n_cubed_flops(monkeypatch):
    ticks = iter([0.0, 0.5, 1.0, 2.0])  # two timed mm calls: 0.5 s and 1.0 s
    cpu = iter([0.0, 0.25, 1.0, 1.5])  # 0.25 and 0.5 CPU-s: the thread had the CPU half of the time
    monkeypatch.setattr(probe.time, "perf_counter", lambda: next(ticks))
    monkeypatch.setattr(probe.time, "process_time", lambda: next(cpu))
    rate = probe._gemm_rate("cpu", torch.float32, 100, 2)
    assert rate["gflops_per_cpu_s_best"] == pytest.approx(2 * 100**3 / 0.25 / 1e9)
    assert rate["gflops_best"] == pytest.approx(2 * 100**3 / 0.5 / 1e9)
    assert rate["gflops_median"] == pytest.approx(2 * 100**3 / 0.75 / 1e9)


def test_cpu_clock_is_process_cpu_time_over_wall_time(monkeypatch):
    cpu, wall = iter([10.0, 13.8]), iter([100.0, 102.0])  # 3.8 CPU-s in 2 wall-s: two busy threads
    monkeypatch.setattr(probe.time, "process_time", lambda: next(cpu))
    monkeypatch.setattr(probe.time, "perf_counter", lambda: next(wall))
    with CpuClock() as clock:
        pass
    assert (clock.cpu_s, clock.wall_s) == pytest.approx((3.8, 2.0)) and clock.ratio == pytest.approx(1.9)
    assert judge(None, clock.ratio, 1, "cpu") and not judge(None, clock.ratio, 2, "cpu")


def test_judge_flags_above_the_gemm_rate_and_more_cpu_than_threads():
    assert judge(0.8, 1.0, 1, "cpu") == []
    above = judge(1.9, 1.0, 1, "cpu")
    assert len(above) == 1 and "1.90 x the same-run GEMM rate" in above[0]
    busy = judge(0.5, 1.95, 1, "cpu")
    assert len(busy) == 1 and "CPU time / wall time 1.95" in busy[0] and "1 thread(s)" in busy[0]
    assert judge(0.5, 1.95, 2, "cpu") == []  # two threads may use two CPUs
    assert judge(0.5, 5.0, 1, "cuda:0") == []  # CPU/wall says nothing about a GPU run


def _record(**kw) -> BenchRecord:
    r = BenchRecord("m", "f", "v", "ort", "fp32", 1, [64, 64], [64, 64], device="cpu")
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_judge_records_divides_by_the_best_probe_and_flags_the_impossible():
    probes = [{"device": "cpu", "fp32": {"gflops_best": 80.0}}, {"device": "cpu", "fp32": {"gflops_best": 90.0}}]
    ok = _record(tflops=0.045, cpu_per_wall=1.0, threads={"ort_intra_op": 1})
    wrong = _record(tflops=0.18, cpu_per_wall=1.9, threads={"ort_intra_op": 1})  # the old "1 thread" rows
    skipped = _record(status="skipped")
    judge_records([ok, wrong, skipped], probes)
    assert ok.peak_gflops == 90.0 and ok.peak_fraction == pytest.approx(0.5) and not ok.suspect
    assert wrong.peak_fraction == pytest.approx(2.0) and wrong.suspect and len(wrong.suspect_reasons) == 2
    assert skipped.peak_fraction is None and not skipped.suspect
    assert peak_gflops(probes, "fp16", "cpu") == 90.0  # a CPU case is measured against FP32
    assert peak_gflops(probes, "fp16", "cuda:0") is None  # never against a CPU probe


def test_the_roofline_takes_the_lower_roof():
    """90 GFLOP/s peak, 20 GB/s: a model at 2 FLOP/B is memory-bound (roof 40 GFLOP/s), one at 50 FLOP/B is not."""
    probes = [{"device": "cpu", "fp32": {"gflops_best": 90.0}, "bandwidth": {"gbps_best": 20.0}},
              {"device": "cpu", "fp32": {"gflops_best": 80.0}, "bandwidth": {"gbps_best": 15.0}}]
    latency = {"median": 1000.0}  # 1 s per run
    thin = _record(tflops=0.02, flops_per_image=int(20e9), traffic_bytes_per_image=int(10e9), latency_ms=latency)
    dense = _record(tflops=0.045, flops_per_image=int(45e9), traffic_bytes_per_image=int(0.9e9), latency_ms=latency)
    unknown = _record(tflops=0.045, flops_per_image=int(45e9), latency_ms=latency)  # no traffic count
    judge_records([thin, dense, unknown], probes)
    assert thin.roofline["bound"] == "memory" and thin.roofline["roof_gflops"] == pytest.approx(40.0)
    assert thin.roofline["roofline_fraction"] == pytest.approx(0.5)  # 20 GFLOP/s of 40
    assert thin.roofline["bandwidth_gbps"] == pytest.approx(10.0) and thin.roofline["peak_bandwidth_gbps"] == 20.0
    assert dense.roofline["bound"] == "compute" and dense.roofline["roof_gflops"] == pytest.approx(90.0)
    assert dense.roofline["roofline_fraction"] == pytest.approx(0.5) == dense.peak_fraction
    assert unknown.roofline is None


def test_bandwidth_probe_names_its_kernels():
    result = probe.bandwidth_probe(repeats=2, n=2**20)
    assert set(result["kernels_gbps"]) == {"add", "copy"} and min(result["kernels_gbps"].values()) > 0
    assert result["gbps_best"] == max(result["kernels_gbps"].values())
    assert result["gbps_best"] == result["kernels_gbps"][result["best_kernel"]]
    assert gemm_probe("cpu", n=64, repeats=1)["bandwidth"]["elements"] == probe.BANDWIDTH_ELEMENTS


def test_ort_readback_reads_the_session_not_the_request(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)
    from deploykit.runtime.ort import OrtBackend, cpu_session_options

    opts = cpu_session_options(1, "extended")
    opts.enable_cpu_mem_arena = False  # a request the read-back must report as the session has it
    backend = OrtBackend(path, session_options=opts)
    read = ort_readback(backend)
    assert (read["ort_intra_op"], read["ort_inter_op"]) == (1, 1) and read["execution_mode"] == "ORT_SEQUENTIAL"
    assert read["enable_cpu_mem_arena"] is False and read["enable_mem_pattern"] is False
    assert read["graph_optimization_level"] == "ORT_ENABLE_EXTENDED"
    assert backend.run({"x": np.array([[-1, 2, -3, 4]], np.float32)})["y"].tolist() == [[0, 2, 0, 4]]
    assert ort_readback(object()) is None
    assert ort.__version__


def test_cpu_kernel_rates_count_each_kernels_flops(monkeypatch):
    monkeypatch.setattr(probe, "_best_seconds", lambda call, repeats: (call(), 0.5)[1])  # each kernel runs, 0.5 s
    rates = probe.cpu_kernel_rates(n=64, repeats=1, side=16, channels=8)
    conv = 2 * 8 * 8 * 9 * 16 * 16 / 0.5 / 1e9
    assert rates["onednn_conv3x3"] == pytest.approx(conv) and rates["mlas_conv3x3"] == pytest.approx(conv)
    assert rates["mlas_sgemm"] == pytest.approx(2 * 64**3 / 0.5 / 1e9)
