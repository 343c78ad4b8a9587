"""Each case judged against the PyTorch FP32 reference at the same resolution and input: the reference runs once
per model and size (the torch/fp32 case itself, or an untimed run), and every backend is compared with it through
``verify.parity.compare``.
"""

from __future__ import annotations

import time

import numpy as np

from deploykit.bench.backends import run_once_fn
from deploykit.bench.memory import FIXED_OVERHEAD, HOST_FACTORS, PROBE_MARGIN, check_memory
from deploykit.bench.plan import BenchSettings, Case, Event, Work
from deploykit.bench.state import ModelState
from deploykit.runtime.torch_backend import strict_fp32
from deploykit.util.sizes import fmt_wxh
from deploykit.verify.parity import compare


def ensure_reference(case: Case, state: ModelState, feed: dict, settings: BenchSettings, work: Work,
                     event: Event) -> str | None:
    """Run the PyTorch FP32 reference at this size once (untimed) when no torch/fp32 case produced it.

    Returns why there is no reference (None when there is one)."""
    key = ref_key(case, settings)
    if case.is_reference or key in state.ref_outputs:
        return None
    device_is_cuda = str(state.reference.device).startswith("cuda")
    trace = state.trace(work.hw, work.run_batch, "fp32")
    cal = state.calibrations.get(("torch", "fp32", work.run_batch, None))  # guard.calibration's key
    heap = cal.get("heap_factor", 1.0) if cal else 1.0
    guard = check_memory(0 if device_is_cuda else trace.effective_bytes(heap), pool="host", spec=state.spec,
                         batch=work.run_batch, extra_bytes=2 * work.held_bytes,
                         factor=cal["factor"] if cal else HOST_FACTORS["torch"],
                         fixed=cal["fixed_bytes"] if cal else FIXED_OVERHEAD,
                         trace_at=state.trace_at(work.run_batch, heap_factor=heap),
                         margin=PROBE_MARGIN if cal else 1.0)
    if not guard.fits:
        return "the PyTorch FP32 reference " + guard.reason(fmt_wxh(case.hw)).replace("skipped by", "was skipped by")
    start = time.perf_counter()
    with strict_fp32():
        output = run_once_fn(state.reference, state, feed, settings, work.run_batch)()
    state.ref_outputs = {key: output}
    event("info", f"{case.label}: ran the PyTorch FP32 reference for parity "
                  f"({time.perf_counter() - start:.1f} s, untimed)")
    return None


def ref_key(case: Case, settings: BenchSettings) -> tuple:
    """What a reference output is kept under: size, batch and tiling (a tiled run is judged against the same
    tiling of the PyTorch FP32 model, a sampled one against the same tiles)."""
    sample = tuple(settings.tile_sample) if settings.tile and settings.tile_sample else None
    return (case.hw, case.batch, settings.tile, settings.overlap if settings.tile else None, sample)


def case_parity(case: Case, state: ModelState, output: np.ndarray | None, event: Event,
                missing_reason: str | None = None, settings: BenchSettings | None = None) -> dict | None:
    """Compare with the PyTorch FP32 output at this size (this case's own output when it is that reference)."""
    key = ref_key(case, settings) if settings is not None else (case.hw, case.batch, None, None, None)
    if output is None:
        return None
    if case.is_reference:
        state.ref_outputs = {key: output}  # only the current size is kept
        return {"reference": True, "note": "this run is the PyTorch FP32 reference for its resolution"}
    ref = state.ref_outputs.get(key)
    if ref is None:
        return {"checked": False, "reason": missing_reason or "no PyTorch FP32 reference at this size"}
    rec = compare(ref, output, backend=case.backend, precision=case.precision, output=state.output_name,
                  min_psnr_db=state.spec.fp16.min_psnr_db)
    if not rec.passed:
        event("error", f"{case.label}: parity FAIL: {rec.summary()}")
    return {"checked": True, "reference": False, "max_abs": rec.max_abs, "mean_abs": rec.mean_abs,
            "psnr_db": rec.psnr_db, "nonfinite": rec.nonfinite, "passed": rec.passed, "tolerance": rec.tolerance,
            "reference_backend": f"torch/fp32 ({state.reference.device})"}


def parity_short(parity: dict) -> str:
    """A record's parity in a few words for the 'done' line."""
    if parity.get("reference"):
        return "reference"
    if not parity.get("checked", True):
        return "not checked"
    return (f"{'pass' if parity['passed'] else 'FAIL'} (max abs {parity['max_abs']:.1e}, "
            f"PSNR {parity['psnr_db']:.1f} dB, NaN/Inf {parity['nonfinite']})")
