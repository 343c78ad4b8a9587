"""The same-run machine probe and the per-case checks that keep a benchmark honest.

* :func:`gemm_probe`: the rate of a dense GEMM (2048 x 2048 x 2048, ``torch.mm``) at the run's thread count,
  measured right before the cases (and again after them). On CPU: FP32; on a CUDA GPU: FP32 (TF32 off) and FP16.
  Every record's TFLOP/s is divided by it (``peak_fraction``); a fraction above 1.0 cannot be true for these
  conv nets (a GEMM is the best case of the kernels they run) and marks the record ``suspect``.
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
    dtypes = ("fp32", "fp16") if str(device).startswith("cuda") else ("fp32",)
    out = {"device": str(device), "n": n, "repeats": repeats, "torch_threads": torch.get_num_threads(),
           "method": f"torch.mm of two {n}x{n} matrices, 2*n^3 FLOPs, best and median of {repeats} after one "
                     "warm-up (CUDA: synchronised, TF32 off)"}
    for name in dtypes:
        out[name] = _gemm_rate(device, torch.float16 if name == "fp16" else torch.float32, n, repeats)
    return out


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
        r.suspect_reasons = judge(r.peak_fraction, r.cpu_per_wall, threads_used(r.threads or {}), device)
        r.suspect = bool(r.suspect_reasons)
