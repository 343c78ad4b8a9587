"""The memory guard's calibration probe, run in a fresh Python process: the model's runner is opened there and its
peak RSS growth measured at the probe sizes (``util.system.probe_peak_rss``), so nothing the benchmark process
already holds (a heap grown by earlier cases, another session's arena) is counted or reused.

Why a process of its own, with glibc's mmap threshold fixed at 128 KiB: under glibc's default the threshold rises
to the largest freed block (up to 32 MiB), so the tensors of a 128^2-256^2 probe live on the heap, where
fragmentation adds 1.3-2.5x to their bytes (VapSR x4 eager 256^2: 2.45x the traced bytes), while at 512^2 and above
each full-size tensor is its own mapping (1.2x). Fixed low, the probe sees the large-frame regime at small sizes:
VapSR 1.39 / 1.22 x traced bytes at 128^2 / 256^2, 1.23x measured at 512^2 under the default. The probe also runs
the sizes under the default, in another fresh process (``heap_peaks``): the ratio of the two gives the model's heap
fragmentation, which the guard applies to the tensors under 32 MiB that a large frame still has
(``flops.HEAP_MAX_BLOCK``; MIRNet-v2 at 512^2: 137 of 966 MB). The fixed threshold makes the probe's runs slower (page faults); it never
applies to the benchmark process.

Each size gets a runner of its own (opened, warmed at ``warm``, measured, closed), as each bench case opens its
own: a session's arena keeps what a smaller size grew, so a second size measured on the same session grows by
only the difference (MIRNet-v2 ORT at 256^2: 236 MB after a 128^2 run on the same session, 318 MB on a new one,
1,266 MB at 512^2 = 1.37x traced bytes at both sizes).

    python -m deploykit.bench.memory_probe '{"kind": "torch", "model": "vapsr:x4", "sizes": [128, 256], ...}' [default]

prints one JSON line: ``{"peaks": [bytes per size], "mmap_threshold": … (None: glibc's default), "process_seconds":
…}``; :func:`run_probe` runs both regimes and returns the default's peaks as ``heap_peaks``.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from deploykit.errors import BenchError

MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, kept fixed (no dynamic raise)
_M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)


@dataclass
class ProbeRequest:
    """What the probe process opens and runs: ``kind`` torch (a random-init build of ``model``: the weights'
    values do not change memory) or ort (the ONNX file ``onnx`` with deploykit's CPU session)."""

    kind: str
    model: str
    sizes: list[int]
    warm: int
    repeats: int = 1
    precision: str = "fp32"
    batch: int = 1
    threads: int | None = None
    onnx: str | None = None
    graph: str = "all"
    seed: int = 0


def fix_mmap_threshold(value: int = MMAP_THRESHOLD) -> int | None:
    """Fix glibc's mmap threshold (disables its dynamic raise); the value set, or None off glibc."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        ok = ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, value)
    except (OSError, AttributeError):
        return None
    return value if ok == 1 else None


def probe_in_process(request: ProbeRequest, fixed: bool) -> dict:
    """Open a runner per size and measure, with the mmap threshold ``fixed`` (``peaks``: the tensors' own bytes, as
    large frames take them) or under glibc's default (what small frames take, heap fragmentation included). Call only in
    a process of its own: fixing changes the allocator for good, and one regime's heap or arena would be reused by
    the other (measured: ORT's session arena then shows ~0 growth)."""
    start = time.perf_counter()
    threshold = fix_mmap_threshold() if fixed else None
    from deploykit.runtime.open import open_backend
    from deploykit.runtime.ort import cpu_session_options
    from deploykit.util.system import probe_peak_rss, release_memory
    from deploykit.zoo.registry import get_spec
    from deploykit.zoo.sample_inputs import random_inputs

    spec = get_spec(request.model)
    if request.kind not in ("torch", "ort"):
        raise BenchError(f"the memory probe runs torch or ort, not {request.kind!r}")

    def open_runner():
        if request.kind == "ort":
            return open_backend("ort", spec, onnx=request.onnx, precision=request.precision,
                                threads=request.threads,
                                session_options=cpu_session_options(request.threads, request.graph, spec.ort_arena))
        import torch

        from deploykit.zoo.factory import build_model

        if request.threads:
            torch.set_num_threads(request.threads)
        return open_backend("torch", spec, model=build_model(spec)[0], precision=request.precision)

    peaks = []
    for size in request.sizes:  # a runner per size, as each bench case opens its own (see the module docstring)
        backend = open_runner()
        peaks += probe_peak_rss(
            lambda side, b=backend: b.run(random_inputs(spec, (request.batch, side, side), seed=request.seed)),
            [size], request.warm, repeats=request.repeats)
        backend.close()
        del backend
        release_memory()
    return {"peaks": peaks, "mmap_threshold": threshold, "process_seconds": round(time.perf_counter() - start, 2)}


def run_probe(request: ProbeRequest) -> dict:
    """The probe in two fresh ``python -m deploykit.bench.memory_probe`` processes, the mmap threshold fixed
    (``peaks``) and glibc's default (``heap_peaks``; skipped off glibc, where it equals ``peaks``); BenchError with
    the last stderr line when one fails (out of memory, a runner that does not open)."""
    fixed = _one_process(request, "fixed")
    if fixed["mmap_threshold"] is None:
        return {**fixed, "heap_peaks": fixed["peaks"]}
    default = _one_process(request, "default")
    return {**fixed, "heap_peaks": default["peaks"],
            "process_seconds": round(fixed["process_seconds"] + default["process_seconds"], 2)}


def _one_process(request: ProbeRequest, mode: str) -> dict:
    root = str(Path(__file__).resolve().parents[2])  # this deploykit, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", __name__, json.dumps(asdict(request)), mode],
                          capture_output=True, text=True, check=False, env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        why = tail[-1] if tail else f"exit status {proc.returncode}"
        if proc.returncode < 0:
            why = f"killed by signal {-proc.returncode} (out of memory?)"
        raise BenchError(f"memory probe of {request.model} ({request.kind}) failed: {why}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(json.dumps(probe_in_process(ProbeRequest(**json.loads(args[0])), fixed=args[1:] != ["default"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
