"""The memory guard's verdict for one case: host memory from the traced activations, calibrated per (model,
backend, precision) by a probe run at two small sizes whenever the coarse bound is a sizeable share of the memory
available; device memory for CUDA backends; all written into the record. A case that does not fit is tiled
automatically by the caller (``run``) with the largest tile that fits, or skipped with the figures.
"""

from __future__ import annotations

from deploykit.bench.backends import Notify, onnx_source
from deploykit.bench.flops import MemoryTrace
from deploykit.bench.memory import (
    CAL_FLOOR,
    CALIBRATE_ABOVE,
    CALIBRATE_FROM_PIXELS,
    HOST_FACTORS,
    PROBE_MARGIN,
    PROBE_REPEATS,
    PROBED_BACKENDS,
    MemoryGuard,
    check_memory,
    probe_calibration,
    probe_sizes,
)
from deploykit.bench.memory_probe import ProbeRequest, run_probe
from deploykit.bench.plan import PARITY_SEED, BenchSettings, Case, Event, Work
from deploykit.bench.records import BenchRecord
from deploykit.bench.state import ModelState
from deploykit.errors import BackendUnavailableError, DeployKitError
from deploykit.runtime.open import require_available
from deploykit.util.text import one_line


def memory_guard(case: Case, state: ModelState, settings: BenchSettings, device: str, work: Work,
                 record: BenchRecord, event: Event) -> MemoryGuard | None:
    """The guard's verdict for the case (host memory; plus device memory for CUDA backends).

    Returns None when the case already ended (its probe failed or the backend is unavailable)."""
    trace = state.trace(work.hw, work.run_batch, "fp32")
    guard = check_memory(trace.peak_bytes, pool="host", spec=state.spec, batch=work.run_batch,
                         extra_bytes=2 * work.held_bytes,
                         factor=HOST_FACTORS.get(case.backend, max(HOST_FACTORS.values())),
                         trace_at=state.trace_at(work.run_batch))
    record.memory = {"estimate_bytes": guard.estimate_bytes, "available_bytes": guard.available_bytes,
                     "reserve_bytes": guard.reserve_bytes, "trace_peak_bytes": trace.peak_bytes,
                     "guard_factor": guard.factor, "estimate_method": "coarse upper bound (not calibrated: far "
                                                                       "below the memory available)"}
    if case.backend in ("ort-cuda", "trt") or (device == "cuda" and case.backend.startswith("torch")):
        return _device_guard(case, state, work, record)
    usable = guard.available_bytes - guard.reserve_bytes
    big = work.hw[0] * work.hw[1] * work.run_batch >= CALIBRATE_FROM_PIXELS
    if case.backend in PROBED_BACKENDS and (big or guard.estimate_bytes > CALIBRATE_ABOVE * usable):
        return _probed_guard(case, state, settings, device, work, record, event, trace)
    return guard


def _device_guard(case: Case, state: ModelState, work: Work, record: BenchRecord) -> MemoryGuard:
    """CUDA backends: the trace in the run's dtype against free device memory; the host keeps the I/O copies only.
    Returns the device verdict when it does not fit, else the host one."""
    spec, (h, w) = state.spec, case.hw
    gtrace = state.trace(work.hw, work.run_batch, case.precision)
    gpu_guard = check_memory(gtrace.peak_bytes, pool="cuda", spec=spec, batch=work.run_batch,
                             trace_at=state.trace_at(work.run_batch, case.precision))
    host_bytes = 2 * work.held_bytes + 4 * sum(t.channels for t in spec.inputs) * h * w * work.images
    guard = check_memory(0, pool="host", spec=spec, extra_bytes=host_bytes)
    record.memory.update(estimate_bytes=guard.estimate_bytes, gpu_estimate_bytes=gpu_guard.estimate_bytes,
                         gpu_available_bytes=gpu_guard.available_bytes, gpu_trace_peak_bytes=gtrace.peak_bytes)
    return guard if gpu_guard.fits else gpu_guard


def _probed_guard(case: Case, state: ModelState, settings: BenchSettings, device: str, work: Work,
                  record: BenchRecord, event: Event, trace: MemoryTrace) -> MemoryGuard | None:
    """ONNX Runtime: the host guard again with the factor and fixed bytes its probe measured for this model."""
    try:
        cal = calibration(case, state, settings, device, lambda m: event("info", m))
    except BackendUnavailableError as exc:
        record.stop("skipped", f"backend unavailable: {exc}", event, case.label)
        return None
    except Exception as exc:  # noqa: BLE001 (an export or probe failure ends this case, not the benchmark)
        reason = one_line(exc, 300, name_type=not isinstance(exc, DeployKitError))
        record.stop("error", f"memory probe failed: {reason}", event, case.label)
        return None
    heap = cal.get("heap_factor", 1.0)
    guard = check_memory(trace.effective_bytes(heap), pool="host", spec=state.spec, batch=work.run_batch,
                         extra_bytes=2 * work.held_bytes, factor=cal["factor"], fixed=cal["fixed_bytes"],
                         trace_at=state.trace_at(work.run_batch, heap_factor=heap), margin=PROBE_MARGIN)
    record.memory.update(estimate_bytes=guard.estimate_bytes, available_bytes=guard.available_bytes,
                         guard_factor=guard.factor, guard_margin=guard.margin, calibration=cal,
                         trace_heap_bytes=trace.heap_peak_bytes, estimate_method=(
                             f"calibrated: {cal['fixed_bytes'] / 2**20:.0f} MiB + {guard.factor:.3g} x (traced bytes"
                             f" + {heap - 1:.2f} x the {trace.heap_peak_bytes / 2**20:.0f} MiB of them under 32 MiB "
                             f"a tensor) + 2 x held output (probe at {cal['sizes'][0]}^2, {cal['sizes'][1]}^2 in a "
                             f"fresh process); runs when {guard.margin:g} x estimate fits"))
    return guard


def calibration(case: Case, state: ModelState, settings: BenchSettings, device: str, notify: Notify) -> dict:
    """Per (backend, precision, batch), once per model: the runner in a fresh process at the probe sizes
    (``memory_probe``), and the guard's line fitted to what it took (``memory.probe_calibration``)."""
    kind = "torch" if case.backend.startswith("torch") else case.backend  # torch-compile: eager's memory, no compiles
    key = (kind, case.precision, case.batch, settings.ort_graph if kind == "ort" else None)
    if key in state.calibrations:
        return state.calibrations[key]
    spec = state.spec
    require_available(kind)
    onnx = None
    if kind == "ort":
        onnx = str(onnx_source(Case(case.target, kind, case.precision, case.hw, case.batch), state, settings,
                               notify)[0])
    notify(f"memory probe {spec.name} {case.backend}/{case.precision}: a fresh process at "
           f"{' and '.join(f'{s}²' for s in probe_sizes(spec))} …")

    def measure(sizes: list[int], warm: int, repeats: int) -> dict:
        return run_probe(ProbeRequest(kind, spec.name, sizes, warm, repeats, case.precision, case.batch,
                                      settings.threads, onnx, settings.ort_graph, PARITY_SEED))

    result = probe_calibration(measure, spec, lambda size: state.trace((size, size), case.batch),
                               CAL_FLOOR, repeats=PROBE_REPEATS if kind == "ort" else 1)
    sizes = result["sizes"]
    notify(f"memory probe {spec.name} {case.backend}/{case.precision} at {sizes[0]}² and {sizes[1]}²: "
           f"{result['ratio']:.2f} x traced bytes + {result['fixed_bytes'] / 2**20:.0f} MiB, heap-resident "
           f"tensors x {result['heap_factor']:.2f} ({result['seconds']:.0f} s)")
    state.calibrations[key] = result
    return result
