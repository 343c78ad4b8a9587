"""The same-run machine probe and the per-case checks that keep a benchmark honest.

* :func:`gemm_probe`: the machine's best dense FP32 rate at the run's thread count, measured right before the
  cases (and again after them). On a CUDA GPU: ``torch.mm`` 2048^3, FP32 (TF32 off) and FP16. On CPU, the best
  of the kernel libraries the runners use, each recorded: MKL's SGEMM (``torch.mm`` 2048^3), oneDNN's 3x3
  convolution (``F.conv2d``, 64 -> 64 channels at 256^2: the layer these nets are made of) and ONNX Runtime's
  MLAS (the same GEMM and convolution in an InferenceSession). One library is not enough: on this AMD EPYC,
  MKL's SGEMM measured 80-84 GFLOP/s on a quiet core while oneDNN's and MLAS's convolutions reach ~100, so an
  MKL-only probe flagged correct records (RCAN, MPRNet, UDVD at 1.03-1.11) as above the peak.
  Every record's TFLOP/s is divided by it (``peak_fraction``); a fraction above 1.0 cannot be true (the model's
  layers are no denser than the best of these kernels) and marks the record ``suspect``.
* :class:`CpuClock`: process CPU time / wall time over the timed runs (``time.process_time`` counts every thread
  of the process), so a one-thread run shows ~1.0 and a run that used more threads than it says is caught.
* :func:`judge`: the record's ``suspect`` flag and its reasons from those two figures and the threads read back.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch

GEMM_N = 2048
GEMM_REPEATS = 5
PEAK_LIMIT = 1.0  # achieved / GEMM rate above this: the record is wrong (threads, clock or FLOP count)
CPU_WALL_SLACK = 1.25  # CPU/wall above threads x this: more threads ran than were read back


def gemm_probe(device: str = "cpu", *, n: int = GEMM_N, repeats: int = GEMM_REPEATS) -> dict:
    """{dtype: {gflops_best, gflops_median, ...}} of ``torch.mm`` on n x n matrices at torch's current threads
    (CPU: fp32; CUDA: fp32 with TF32 off and fp16)."""
    on_cuda = str(device).startswith("cuda")
    dtypes = ("fp32", "fp16") if on_cuda else ("fp32",)
    out = {"device": str(device), "n": n, "repeats": repeats, "torch_threads": torch.get_num_threads(),
           "method": f"torch.mm of two {n}x{n} matrices, 2*n^3 FLOPs, best and median of {repeats} after one "
                     "warm-up (CUDA: synchronised, TF32 off)"}
    for name in dtypes:
        out[name] = _gemm_rate(device, torch.float16 if name == "fp16" else torch.float32, n, repeats)
    if not on_cuda:
        out["bandwidth"] = bandwidth_probe(repeats)
        kernels = {"mkl_sgemm": out["fp32"]["gflops_best"], **cpu_kernel_rates(n, repeats)}
        best = max(kernels, key=kernels.get)
        out["fp32"].update(sgemm_gflops_best=out["fp32"]["gflops_best"], gflops_best=kernels[best],
                           kernels_gflops=kernels, best_kernel=best)
        out["method"] = ("best of: MKL SGEMM (torch.mm of two {n}x{n} matrices, 2*n^3 FLOPs), oneDNN 3x3 conv "
                         "(F.conv2d 1x64x256x256 -> 64, 2*64*64*9*256^2 FLOPs), ONNX Runtime MLAS (MatMul "
                         "{n}^3 and the same Conv in an InferenceSession at the same threads); best of "
                         f"{repeats} after one warm-up each").format(n=n)
    return out


BANDWIDTH_ELEMENTS = 32 * 2**20  # 128 MiB float32 arrays: far past the last-level cache (32 MiB per CCD here)


def bandwidth_probe(repeats: int = GEMM_REPEATS, n: int = BANDWIDTH_ELEMENTS) -> dict:
    """Memory bandwidth at torch's current threads, STREAM-style: ``torch.add(a, b, out=c)`` (12 bytes per
    element) and ``c.copy_(a)`` (8) on n floats, bytes as the kernels name them (no write-allocate), best of
    ``repeats`` after one warm-up each -- the roof for the memory-bound records."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(n, generator=gen), torch.rand(n, generator=gen)
    c = torch.empty(n)
    rates = {"add": 12.0 * n / _best_seconds(lambda: torch.add(a, b, out=c), repeats) / 1e9,
             "copy": 8.0 * n / _best_seconds(lambda: c.copy_(a), repeats) / 1e9}
    best = max(rates, key=rates.get)
    return {"gbps_best": rates[best], "kernels_gbps": rates, "best_kernel": best, "elements": n,
            "torch_threads": torch.get_num_threads(),
            "method": f"torch.add(a, b, out=c) (12 B/element) and c.copy_(a) (8 B/element) on {n} float32, best of "
                      f"{repeats} after one warm-up each (STREAM's byte counts: no write-allocate)"}


def peak_bandwidth(probes: list[dict]) -> float | None:
    """The best memory bandwidth (GB/s) of the run's CPU probes."""
    rates = [p["bandwidth"]["gbps_best"] for p in probes if p and "bandwidth" in p]
    return max(rates) if rates else None


def _best_seconds(call, repeats: int) -> float:
    call()
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - t0)
    return min(seconds)


def cpu_kernel_rates(n: int = GEMM_N, repeats: int = GEMM_REPEATS, side: int = 256, channels: int = 64) -> dict:
    """GFLOP/s of oneDNN's and ONNX Runtime MLAS's FP32 kernels at torch's current thread count."""
    import numpy as np

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, channels, side, side, generator=gen)
    w = torch.rand(channels, channels, 3, 3, generator=gen) - 0.5
    conv_flops = 2.0 * channels * channels * 9 * side * side
    with torch.inference_mode():
        rates = {"onednn_conv3x3": conv_flops / _best_seconds(
            lambda: torch.nn.functional.conv2d(x, w, padding=1), repeats) / 1e9}
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:  # the bench without ONNX Runtime: its runners are not measured either
        return rates
    threads = torch.get_num_threads()
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    graphs = {
        "mlas_sgemm": (helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "mm",
                                         [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "ab"],
                                         [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])]),
                       {"a": a, "b": a}, 2.0 * n ** 3),
        "mlas_conv3x3": (helper.make_graph(  # weights as an initializer: prepacked, NCHWc, as in an export
            [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
            [numpy_helper.from_array(w.numpy(), "w")]), {"x": x.numpy()}, conv_flops),
    }
    for name, (graph, feed, flops) in graphs.items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = threads
        opts.log_severity_level = 3
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
        session = ort.InferenceSession(model.SerializeToString(), sess_options=opts,
                                       providers=["CPUExecutionProvider"])
        rates[name] = flops / _best_seconds(lambda: session.run(None, feed), repeats) / 1e9
    return rates


def _gemm_rate(device: str, dtype: torch.dtype, n: int, repeats: int) -> dict:
    on_cuda = str(device).startswith("cuda")
    sync = torch.cuda.synchronize if on_cuda else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(n, n, generator=gen).to(device, dtype)
    b = torch.rand(n, n, generator=gen).to(device, dtype)
    tf32 = torch.backends.cuda.matmul.allow_tf32 if on_cuda else None
    if on_cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
    try:
        torch.mm(a, b)
        sync()
        seconds, cpu = [], []
        for _ in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            torch.mm(a, b)
            sync()
            seconds.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    finally:
        if on_cuda:
            torch.backends.cuda.matmul.allow_tf32 = tf32
    flops = 2.0 * n ** 3
    out = {"gflops_best": flops / min(seconds) / 1e9, "gflops_median": flops / statistics.median(seconds) / 1e9}
    if not on_cuda and min(cpu) > 0:  # per CPU-second: what the threads did while they had a CPU (shared machines)
        out["gflops_per_cpu_s_best"] = flops / min(cpu) / 1e9
    return out


def peak_gflops(probes: list[dict], precision: str, device: str) -> float | None:
    """The best GEMM rate of the run's probes for a case's precision (CPU cases: FP32)."""
    key = precision if str(device).startswith("cuda") else "fp32"
    rates = [p[key]["gflops_best"] for p in probes if p and key in p
             and str(p.get("device", "cpu")).startswith("cuda") == str(device).startswith("cuda")]
    return max(rates) if rates else None


class CpuClock:
    """Process CPU time and wall time over a block: ``with CpuClock() as c: ...``, then ``c.ratio``."""

    def __enter__(self) -> CpuClock:
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        self.cpu_s = self.wall_s = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.cpu_s = time.process_time() - self.cpu0
        self.wall_s = time.perf_counter() - self.wall0

    @property
    def ratio(self) -> float | None:
        return self.cpu_s / self.wall_s if self.wall_s > 0 else None


def ort_readback(backend) -> dict | None:
    """The session settings read back from an ONNX Runtime backend's session: threads (intra-/inter-op, execution
    mode) and memory (CPU arena, memory pattern), None for other runners."""
    session = getattr(backend, "session", None)
    if session is None or not hasattr(session, "get_session_options"):
        return None
    opts = session.get_session_options()
    read = {"ort_intra_op": opts.intra_op_num_threads, "ort_inter_op": opts.inter_op_num_threads,
            "execution_mode": str(opts.execution_mode).rsplit(".", 1)[-1],
            "enable_cpu_mem_arena": opts.enable_cpu_mem_arena, "enable_mem_pattern": opts.enable_mem_pattern,
            "graph_optimization_level": str(opts.graph_optimization_level).rsplit(".", 1)[-1]}
    if isinstance(getattr(backend, "arena", None), str):
        read["cpu_arena"] = backend.arena
    threads = getattr(backend, "threads", None)
    if isinstance(threads, int):
        read["ort_threads_property"] = threads
    return read


def threads_used(record_threads: dict) -> int:
    """The compute threads a case ran with, from what was read back (ORT intra-op, else torch's)."""
    ort = record_threads.get("ort_intra_op")
    return int(ort) if ort else int(record_threads.get("torch_intra_op") or 1)


def judge(peak_fraction: float | None, cpu_per_wall: float | None, threads: int, device: str) -> list[str]:
    """Why a record cannot be published as it is (empty when it can)."""
    reasons = []
    if peak_fraction is not None and peak_fraction > PEAK_LIMIT:
        reasons.append(f"achieved {peak_fraction:.2f} x the same-run GEMM rate (above {PEAK_LIMIT:g}: wrong "
                       "thread count, clock or FLOP count)")
    if (cpu_per_wall is not None and not str(device).startswith("cuda")
            and cpu_per_wall > CPU_WALL_SLACK * threads):
        reasons.append(f"CPU time / wall time {cpu_per_wall:.2f} over the timed runs is above {threads} thread(s)"
                       f" x {CPU_WALL_SLACK:g}: more threads ran than were read back")
    return reasons


def set_torch_threads(threads: int | None) -> dict:
    """Apply ``--threads`` to PyTorch (intra-op; inter-op too while that is still allowed) and read both back."""
    if threads is not None:
        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):  # only allowed before the first inter-op parallel work
            torch.set_num_interop_threads(threads)
    return {"torch_intra_op": torch.get_num_threads(), "torch_inter_op": torch.get_num_interop_threads()}


def judge_records(records, probes: list[dict]) -> None:
    """Each timed record's ``peak_gflops`` / ``peak_fraction`` from the run's probes, and its ``suspect`` flag."""
    for r in records:
        if r.status != "ok" or r.tflops is None:
            continue
        device = r.device or "cpu"
        r.peak_gflops = peak_gflops(probes, r.precision, device)
        r.peak_fraction = r.tflops * 1e3 / r.peak_gflops if r.peak_gflops else None
        cpu_peak = max((p["fp32"].get("gflops_per_cpu_s_best", 0) for p in probes
                        if p and "fp32" in p and not str(p.get("device", "cpu")).startswith("cuda")), default=0)
        if r.cpu_seconds and r.clock_runs and cpu_peak and not str(device).startswith("cuda"):
            flops_per_run = r.tflops * 1e12 * r.latency_ms["median"] / 1e3
            r.cpu_peak_fraction = flops_per_run * r.clock_runs / r.cpu_seconds / 1e9 / cpu_peak
        roofline(r, peak_bandwidth(probes) if not str(device).startswith("cuda") else None)
        r.suspect_reasons = judge(r.peak_fraction, r.cpu_per_wall, threads_used(r.threads or {}), device)
        r.suspect = bool(r.suspect_reasons)


def roofline(record, bandwidth_gbps: float | None) -> None:
    """The record against the roofline ``min(GEMM peak, intensity x bandwidth)``, intensity = FLOPs / traffic
    bytes (``flops.TRAFFIC_METHOD``): ``bound`` says which roof is lower, ``roofline_fraction`` how close the run
    came to it. For an unfused runtime it is at most ~1; a fusing one moves fewer bytes than counted and may pass
    1 on a memory-bound model (its fusions are then what the figure shows)."""
    traffic = record.traffic_bytes_per_image
    if not (traffic and bandwidth_gbps and record.peak_gflops and record.tflops):
        return
    achieved_gflops = record.tflops * 1e3
    intensity = record.flops_per_image / traffic
    roof = min(record.peak_gflops, intensity * bandwidth_gbps)
    record.roofline = {
        "arithmetic_intensity": intensity, "peak_bandwidth_gbps": bandwidth_gbps,
        "bandwidth_gbps": achieved_gflops / intensity,  # the traffic per second the FLOP rate implies
        "roof_gflops": roof, "bound": "memory" if roof < record.peak_gflops else "compute",
        "roofline_fraction": achieved_gflops / roof}
