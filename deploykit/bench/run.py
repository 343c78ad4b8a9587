"""``deploykit bench``: latency x resolution x backend x precision, with parity, FLOPs and a memory guard.

Building, running and judging never mix (the Polygraphy split): :mod:`~deploykit.bench.plan` decides *what* runs,
the memory guard (:mod:`~deploykit.bench.guard`) decides *whether* it may run, :mod:`~deploykit.bench.timing`
measures, and :mod:`~deploykit.bench.parity` judges against the PyTorch FP32 reference at the same resolution (run
once per model and resolution, reused by every backend). This module runs the cases in that order.

What each figure means (also written into every JSON file, ``methods``):

* **Latency** (ms): ``time.perf_counter_ns`` around one ``Backend.run(feed)`` call on host numpy arrays, after
  ``--warmup`` runs; the first call is timed separately (``first_run_ms``: lazy initialisation, compilation).
  On a CUDA device the device is synchronised before the clock starts and before it stops, and the figure
  includes the host->device copy of the inputs and the device->host copy of the outputs (like trtexec's
  "Latency" with ``--includeDataTransfers``); PyTorch on CUDA also reports GPU compute alone, timed with CUDA
  events on device-resident tensors. ORT on CPU: ``InferenceSession.run`` on host arrays; PyTorch on CPU: the
  module call under ``inference_mode`` (numpy<->tensor wrapping shares memory, FP16 adds the casts).
  Statistics: min, median, mean, p90, p95, p99 (nearest-rank percentiles), max, stdev over the timed runs.
* **MPix/s**: input megapixels x batch / median latency. **FLOPs per image**: see :mod:`deploykit.bench.flops`
  (counted at 64x64 on the meta device and scaled linearly by pixel count). **TFLOP/s**: FLOPs x batch / median.
* **Memory**: peak resident set size of this process over the case's runs (``VmHWM`` after resetting it through
  ``/proc/self/clear_refs``) minus the RSS just before the first run; on CUDA also the allocator peak (PyTorch)
  or the engine's device memory (TensorRT).
* **Memory guard**: before a case runs, its working memory is estimated from the peak live activation bytes of
  one PyTorch eager forward at that size, traced on the meta device (no arithmetic; exact for PyTorch's tensors,
  also for attention whose memory grows with (H*W)^2): ``estimate = factor x trace + fixed + 2 x output``. When
  the coarse bound (factor 2 for PyTorch, 10 for ONNX Runtime) is above a quarter of the usable memory, or the
  call is 512^2 or more, the factor, fixed bytes and heap factor are calibrated per (model, backend, precision)
  from the peak RSS growth measured at 128^2 and 256^2 in fresh processes, a runner per size (``memory_probe``,
  ``memory.probe_calibration``); the case runs when 1.1 x that estimate fits. A case whose whole frame
  does not fit is tiled automatically (``autotile``: the largest tile whose estimate fits, overlap from the
  receptive field, the tiling's PSNR measured once at 256^2), and skipped only when no tile fits; usable =
  ``MemAvailable`` (cgroup-capped) minus max(1 GiB, 10% of RAM). On CUDA the trace in the run's dtype x 1.5 is
  checked against free device memory.
* **Honesty checks** (:mod:`~deploykit.bench.probe`): the threads are read back from each runner, CPU time /
  wall time is measured over the timed runs, and every TFLOP/s is divided by the same run's GEMM probe
  (``peak_fraction``); a record above 1.0 of the GEMM rate, or using more CPU than its threads, is ``suspect``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch

from deploykit.bench.autotile import auto_overlap, tiled_settings, tiling_check
from deploykit.bench.backends import (
    case_device,
    gpu_compute_times,
    make_backend,
    run_once_fn,
)
from deploykit.bench.guard import memory_guard
from deploykit.bench.memory import MemoryGuard
from deploykit.bench.onnx_memory import min_live_bytes
from deploykit.bench.parity import case_parity, ensure_reference, parity_short
from deploykit.bench.plan import (
    DEFAULT_RES,
    PARITY_SEED,
    BenchSettings,
    Case,
    Event,
    Work,
    check_options,
    parse_choices,
    plan_cases,
    resolve_backends,
)
from deploykit.bench.probe import (
    CpuClock,
    gemm_probe,
    judge_records,
    ort_readback,
    set_torch_threads,
)
from deploykit.bench.records import (
    BenchRecord,
    BenchResult,
    device_info,
    latency_note,
    library_versions,
    memory_summary,
)
from deploykit.bench.resume import Carried, carried_from, record_key
from deploykit.bench.sources import resolve_models
from deploykit.bench.state import ModelState
from deploykit.bench.timing import Timing, latency_stats, time_runs
from deploykit.errors import (
    BackendUnavailableError,
    BenchError,
    DeployKitError,
    ShapeContractError,
)
from deploykit.imaging.tiling import plan_tiles, sample_indices
from deploykit.runtime.base import Backend
from deploykit.runtime.gpu import cuda_available
from deploykit.runtime.open import PRECISIONS
from deploykit.runtime.ort import default_threads
from deploykit.runtime.torch_backend import strict_fp32
from deploykit.util.sizes import fmt_wxh, parse_sizes
from deploykit.util.system import RssMeter, loadavg, release_memory
from deploykit.util.text import one_line
from deploykit.zoo.sample_inputs import random_inputs


def run_bench(models: Sequence[str] | None = None, *, res: str | Iterable[str] = DEFAULT_RES,
              backends: Sequence[str] | str | None = None, precisions: Sequence[str] | str | None = None,
              batch: int = 1, warmup: int = 2, iters: int | None = None, seconds: float | None = None,
              tile: int | None = None, overlap: int = 32, threads: int | None = None,
              exports_root: str | Path = "exports", cache_dir: str | Path | None = None,
              on_event: Event | None = None, command: Sequence[str] | None = None,
              plan_only: bool = False, sample_tiles_over: float | None = None,
              resume: dict | None = None, resume_source: str = "results file",
              on_progress: Callable[[BenchResult], None] | None = None) -> BenchResult:
    """Benchmark every (model, backend, precision, resolution); see the module docstring for what is measured.

    ``sample_tiles_over``: seconds; a tiled case whose one run needs longer than that even at the GEMM probe's
    rate is timed on an evenly spread sample of its tiles (:func:`sample_tiles`).
    ``resume``: a results file of an earlier run (``bench.resume``): its finished cases are carried, not run again.
    ``on_progress``: called with the result so far (``complete`` False) after every case, to save it."""
    event = on_event or (lambda kind, msg: None)
    settings, unavailable = _settings(res, backends, precisions, batch=batch, warmup=warmup, iters=iters,
                                      seconds=seconds, tile=tile, overlap=overlap, threads=threads,
                                      exports_root=exports_root, cache_dir=cache_dir, event=event,
                                      sample_over=sample_tiles_over)
    settings.plan_only = plan_only
    targets = resolve_models(models, exports_root)
    thread_info = {**set_torch_threads(threads), "ort_intra_op": threads or default_threads(),
                   "ort_inter_op": threads or default_threads()}
    machine, versions = device_info(thread_info), library_versions()
    carried = carried_from(resume, resume_source, settings.to_dict(), machine, versions)
    started = _now()
    load_before, mem_before = loadavg(), memory_summary()
    device = "cuda" if cuda_available() else "cpu"
    probes = {"before": gemm_probe(device)}
    event("info", f"GEMM probe ({device}, {thread_info['torch_intra_op']} thread(s)): " + probe_text(probes["before"]))
    cases = plan_cases(targets, settings.sizes, settings.backends, settings.precisions, batch)
    event("info", f"{len(cases)} runs planned: {len(targets)} model(s) x {len(settings.sizes)} size(s) x "
                  f"{len(settings.backends)} backend(s) x {len(settings.precisions)} precision(s); torch on {device}, "
                  f"threads {thread_info}")

    def result(records: list[BenchRecord], flops_info: dict, complete: bool) -> BenchResult:
        own = [r for r in records if r.segment == carried.segment]  # carried records keep their own run's probe
        judge_records(own, list(probes.values()))
        return BenchResult(settings, records, machine, versions,
                           list(command) if command is not None else list(sys.argv), unavailable, started, _now(),
                           load_before, loadavg(), mem_before, memory_summary(), {**carried.flops, **flops_info},
                           probes=dict(probes), segments=carried.segments, complete=complete)

    progress = (lambda records, flops_info: on_progress(result(records, flops_info, False))) if on_progress else None
    gemm_gflops = probes["before"].get("fp32", {}).get("gflops_best")  # FP32: a lower bound on time for FP16 too
    records, flops_info = _run_cases(cases, settings, device, event, carried, progress, gemm_gflops)
    probes["after"] = gemm_probe(device)
    final = result(records, flops_info, True)
    for r in records:
        if r.suspect and r.segment == carried.segment:
            event("error", f"{r.model} {r.backend}/{r.precision} {r.input_wxh}: SUSPECT: "
                           f"{'; '.join(r.suspect_reasons)}")
    return final


def probe_text(probe: dict) -> str:
    return ", ".join(f"{k} {probe[k]['gflops_best']:.0f} GFLOP/s" for k in ("fp32", "fp16") if k in probe)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _settings(res, backends, precisions, *, batch: int, warmup: int, iters: int | None, seconds: float | None,
              tile: int | None, overlap: int, threads: int | None, exports_root, cache_dir,
              event: Event, sample_over: float | None = None) -> tuple[BenchSettings, dict[str, str]]:
    """The options read and checked, and the backends that run here ({backend: why not} for the rest)."""
    sizes = parse_sizes(res, "--res")
    default_prec = ("fp32", "fp16") if cuda_available() else ("fp32",)
    precs = parse_choices(precisions, PRECISIONS, "precision", default_prec)
    check_options(batch=batch, warmup=warmup, iters=iters, seconds=seconds, tile=tile, threads=threads,
                  sample_over=sample_over)
    run_list, unavailable = resolve_backends(backends)
    for name, why in unavailable.items():
        event("skip", f"backend {name} unavailable: {why}")
    if not run_list:
        raise BenchError("none of the requested backends is available here: "
                         + "; ".join(f"{k}: {v}" for k, v in unavailable.items()))
    settings = BenchSettings(sizes, run_list, precs, batch, warmup, iters, seconds, tile, overlap, threads,
                             str(exports_root), str(cache_dir) if cache_dir else None, sample_over=sample_over)
    return settings, unavailable


def _run_cases(cases: Sequence[Case], settings: BenchSettings, device: str, event: Event,
               carried: Carried | None = None,
               progress: Callable[[list[BenchRecord], dict], None] | None = None,
               gemm_gflops: float | None = None) -> tuple[list[BenchRecord], dict]:
    """Every case in plan order; one model is built (and its FLOPs counted) at a time, dropped before the next.
    A case ``carried`` from an earlier run is taken as it was; the carried records of cases not planned now follow
    the plan's, so a resumed file never loses a result."""
    carried = carried or Carried.none()
    records: list[BenchRecord] = []
    flops_info: dict = {}
    state: ModelState | None = None
    keys = [record_key(c.target.name, c.backend, c.precision, c.hw, c.batch) for c in cases]
    planned = set(keys)
    unplanned = [r for key, r in carried.records.items() if key not in planned]
    for case, key in zip(cases, keys):
        done = carried.records.get(key)
        if done is not None:
            event("info", f"{case.label}: {done.status} in run {done.segment + 1} of the file, carried (--resume)")
            records.append(done)
            continue
        if key in carried.interrupted:
            event("error", f"{case.label}: {carried.interrupted[key].reason.split(';')[0]} and never finished (the "
                           "run was killed, or ran out of memory): running it again")
        record = contract_skip(case, event)  # decided from the spec alone: no model is built for it
        if record is None:
            if progress is not None:  # a run killed during the case leaves it marked in the file
                progress(records + [running_record(case, settings, carried.segment)] + unplanned, flops_info)
            if state is None or state.target is not case.target:
                if state is not None:
                    state = None
                    release_memory()
                state = ModelState(case.target, device)
                flops_info[state.spec.name] = state.flops.to_dict()
            record = run_case(case, state, settings, device, event, gemm_gflops)
        record.segment = carried.segment
        records.append(record)
        if progress is not None:
            progress(records + unplanned, flops_info)
    del state
    release_memory()
    return records + unplanned, flops_info


# --- one case ------------------------------------------------------------------------------------------------------

def running_record(case: Case, settings: BenchSettings, segment: int) -> BenchRecord:
    """The case as saved while it runs (--resume): a file left with it says that run ended during the case."""
    record = new_record(case, settings.warmup)
    record.status, record.segment = "running", segment
    record.reason = f"started at {_now()} in run {segment + 1}; still running when the file was saved"
    return record


def new_record(case: Case, warmup: int) -> BenchRecord:
    spec = case.target.spec
    h, w = case.hw
    return BenchRecord(spec.name, spec.family, spec.variant, case.backend, case.precision, case.batch,
                       [h, w], list(spec.output_size(h, w)), warmup=warmup)


def contract_skip(case: Case, event: Event) -> BenchRecord | None:
    """A skipped record when the size breaks the model's shape contract (multiple_of, min size, square)."""
    try:
        case.target.spec.check_size(*case.hw)
    except ShapeContractError as exc:
        record = new_record(case, 0)
        record.stop("skipped", str(exc), event, case.label)
        return record
    return None


def plan_work(case: Case, state: ModelState, settings: BenchSettings, record: BenchRecord) -> Work:
    """Tiling plan (with --tile) and FLOPs per image, written into the record."""
    spec, (h, w) = state.spec, case.hw
    work = Work((h, w), case.batch, case.batch, 0)
    if settings.tile:
        plan = plan_tiles(h, w, spec, settings.tile, settings.overlap)
        work.hw, work.images = tuple(plan.tile_shape), 1
        record.batch = 1
        record.tile = {"tile": settings.tile, "overlap": settings.overlap, "tiles": plan.count,
                       "tile_hw": list(plan.tile_shape), "tiles_per_run": case.batch,
                       "tile_runs": math.ceil(plan.count / case.batch), "plan": plan.describe()}
        tile_flops, record.flops_method = state.flops_at(work.hw)
        record.flops_per_image = tile_flops * plan.count
        record.flops_method += f"; {plan.count} tiles incl. overlap"
        traffic = state.traffic_at(work.hw)
        record.traffic_bytes_per_image = traffic * plan.count if traffic else None
    else:
        record.flops_per_image, record.flops_method = state.flops_at((h, w))
        record.traffic_bytes_per_image = state.traffic_at((h, w))
    out_h, out_w = record.output_hw
    work.held_bytes = 4 * spec.out_channels * out_h * out_w * work.images  # output kept for parity / tile canvas
    return work


def run_case(case: Case, state: ModelState, settings: BenchSettings, device: str, event: Event,
             gemm_gflops: float | None = None) -> BenchRecord:
    """One case: plan its work, ask the guard, then open, time, measure and judge it (skips and errors end up in
    the record, never end the benchmark). ``gemm_gflops``: the run's probe rate (for ``--sample-tiles-over``)."""
    record = new_record(case, settings.warmup)
    start = time.perf_counter()
    work = plan_work(case, state, settings, record)
    guard = memory_guard(case, state, settings, device, work, record, event)
    if guard is not None and not guard.fits and settings.tile is None and case.backend == "ort":
        settings, guard = _lean_ort_graph(case, state, settings, device, work, guard, record, event)
    if guard is not None and not guard.fits and settings.tile is None and guard.tile_hint:
        settings, work, guard = _auto_tile(case, state, settings, device, guard, record, event)
    if guard is not None and guard.fits and settings.plan_only:
        record.status = "planned"
        record.reason = (f"would run {record.tile['plan'] if record.tile else 'whole frame'}: estimate "
                         f"{guard.estimate_bytes / 2**30:.1f} GiB of "
                         f"{(guard.available_bytes - guard.reserve_bytes) / 2**30:.1f} GiB usable")
        event("info", f"{case.label}: {record.reason}")
    elif guard is not None and guard.fits:
        settings = sample_tiles(case, settings, record, gemm_gflops, event)
        _run_guarded(case, state, settings, device, work, guard, record, event)
    elif guard is not None:
        record.stop("skipped", guard.reason(fmt_wxh(case.hw)), event, case.label)
    record.seconds = round(time.perf_counter() - start, 3)
    if record.status == "ok":
        event("done", _done_message(case, record))
    return record


def _lean_ort_graph(case: Case, state: ModelState, settings: BenchSettings, device: str, work: Work,
                    whole: MemoryGuard, record: BenchRecord, event: Event) -> tuple[BenchSettings, MemoryGuard | None]:
    """ONNX Runtime's whole frame does not fit with its fastest graph (NCHWc layout): guard it again with the
    plain-layout graph (``extended``: no reorder copies, 8-30 % less memory), calibrated on its own. When that
    fits, the case runs whole with it; otherwise the original verdict goes on to tiling."""
    lean = dataclasses.replace(settings, ort_graph="extended")
    fast_memory = dict(record.memory)
    guard = memory_guard(case, state, lean, device, work, record, event)
    if guard is None or not guard.fits:
        record.memory = fast_memory
        return settings, whole
    usable = (whole.available_bytes - whole.reserve_bytes) / 2**30
    record.memory["ort_graph"] = {
        "level": "extended", "fast_level_estimate_bytes": whole.estimate_bytes,
        "why": f"whole frame needs about {whole.estimate_bytes / 2**30:.1f} GiB with ORT_ENABLE_ALL (NCHWc), "
               f"{guard.estimate_bytes / 2**30:.1f} GiB with ORT_ENABLE_EXTENDED; {usable:.1f} GiB usable"}
    event("info", f"{case.label}: {record.memory['ort_graph']['why']}: runs whole with the plain-layout graph")
    return lean, guard


def _auto_tile(case: Case, state: ModelState, settings: BenchSettings, device: str, whole: MemoryGuard,
               record: BenchRecord, event: Event) -> tuple[BenchSettings, Work, MemoryGuard | None]:
    """The whole frame does not fit: re-plan the case tiled with the largest tile the (calibrated) estimate allows
    and an overlap from the receptive field, guard it again, and measure the tiling's PSNR once per model."""
    spec, tile = state.spec, whole.tile_hint
    radius = state.receptive_radius
    overlap = auto_overlap(radius, tile, spec.multiple_of)
    tiled = tiled_settings(settings, tile, overlap)
    whole_memory = dict(record.memory)
    work = plan_work(case, state, tiled, record)
    guard = memory_guard(case, state, tiled, device, work, record, event)
    check = None
    if guard is not None and guard.fits and not settings.plan_only:
        try:
            check = tiling_check(state, max(case.hw), tile, overlap)
        except (RuntimeError, MemoryError) as exc:  # the check is a figure beside the case, never its end
            check = {"size": None, "psnr_db": None, "error": one_line(exc, 200, name_type=True)}
    record.tile.update(auto=True, receptive_radius=radius, whole_frame_estimate_bytes=whole.estimate_bytes,
                       whole_frame_memory=whole_memory, psnr_check=check,
                       why=f"whole frame needs about {whole.estimate_bytes / 2**30:.1f} GiB, "
                           f"{(whole.available_bytes - whole.reserve_bytes) / 2**30:.1f} GiB usable")
    event("info", f"{case.label}: whole frame does not fit ({record.tile['why']}): automatically tiled, "
                  f"{record.tile['plan']}, overlap {overlap} (receptive radius bound {radius} px)"
                  + (f"; tiled vs whole at {check['size']}²: {check['psnr_db']:.1f} dB"
                     if check and check.get("psnr_db") is not None else ""))
    return tiled, work, guard


MIN_TILE_SAMPLE = 8


def sample_tiles(case: Case, settings: BenchSettings, record: BenchRecord, gemm_gflops: float | None,
                 event: Event) -> BenchSettings:
    """``--sample-tiles-over S``: a tiled case whose one run needs more than S seconds even at the run's GEMM rate
    (its FLOPs / the probe: a lower bound) runs an evenly spread sample of its tiles, as many as S seconds hold at
    that rate (at least MIN_TILE_SAMPLE), when that skips at least half of them (else every tile runs). Every tile has the same shape and work, so the sample's time x tiles /
    sample is the run's; the record says so (``tile.sampled``, ``latency_includes``) and parity covers the sample."""
    tile = record.tile
    if not (settings.sample_over and tile and gemm_gflops):
        return settings
    count = tile["tiles"]
    at_peak_s = record.flops_per_image / (gemm_gflops * 1e9)
    n = max(MIN_TILE_SAMPLE, math.floor(settings.sample_over / at_peak_s * count))
    if at_peak_s <= settings.sample_over or n > count // 2:
        return settings
    indices = sample_indices(count, n)
    tile["sampled"] = {
        "tiles_timed": len(indices), "indices": indices, "scale": count / len(indices),
        "why": f"one run is {record.flops_per_image / 1e12:,.0f} TFLOP: at least {at_peak_s / 60:,.0f} min at the "
               f"run's GEMM rate ({gemm_gflops:.0f} GFLOP/s), over --sample-tiles-over {settings.sample_over:g} s"}
    event("info", f"{case.label}: {tile['sampled']['why']}: timing {len(indices)} of the {count} tiles (same shape "
                  f"and work), latency x {count / len(indices):.2f}")
    return dataclasses.replace(settings, tile_sample=indices)


def _run_guarded(case: Case, state: ModelState, settings: BenchSettings, device: str, work: Work,
                 guard: MemoryGuard, record: BenchRecord, event: Event) -> None:
    """The case past the guard: reference, backend, timed runs, figures, parity; any failure becomes the record's
    error, and the backend is closed (unless it is the reference) and its memory released."""
    feed = random_inputs(state.spec, (work.images, *case.hw), seed=PARITY_SEED)
    backend = None
    try:
        reference_note = ensure_reference(case, state, feed, settings, work, event)
        backend = _open(case, state, settings, device, record, event)
        if backend is not None:
            _measure(case, state, settings, feed, work, backend, record, event, guard, reference_note)
    except DeployKitError as exc:
        record.stop("error", str(exc), event, case.label)
    except MemoryError as exc:
        record.stop("error", f"out of memory despite the guard ({exc}); use --tile", event, case.label)
    except Exception as exc:  # noqa: BLE001 (one failing backend must not end the whole benchmark)
        record.stop("error", one_line(exc, 300, name_type=True), event, case.label)
    finally:
        if backend is not None and backend is not state.reference:
            with contextlib.suppress(Exception):
                backend.close()
        backend = None
        release_memory()


def _open(case: Case, state: ModelState, settings: BenchSettings, device: str, record: BenchRecord,
          event: Event) -> Backend | None:
    """The case's runner, its artifact, runtime and device in the record; None (a skip) when unavailable here."""
    try:
        backend, record.artifact = make_backend(case, state, settings, device, lambda m: event("export", m))
    except BackendUnavailableError as exc:
        record.stop("skipped", f"backend unavailable: {exc}", event, case.label)
        return None
    record.runtime, record.device = getattr(backend, "name", case.backend), case_device(backend)
    record.latency_includes = latency_note(case.backend, record.device)
    return backend


def _measure(case: Case, state: ModelState, settings: BenchSettings, feed: dict, work: Work, backend: Backend,
             record: BenchRecord, event: Event, guard: MemoryGuard, reference_note: str | None) -> None:
    """Timed runs under the RSS meter, then the CUDA figures, throughput and parity, all into the record."""
    run = run_once_fn(backend, state, feed, settings, work.run_batch)
    on_cuda = record.device.startswith("cuda")
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    event("start", f"{case.label}: est. {guard.estimate_bytes / 2**30:.2f} GiB, "
                   f"{record.flops_per_image / 1e12:.3g} TFLOP/image"
                   + (f", {record.tile['plan']}" if record.tile else ""))
    load_start = loadavg()
    meter = RssMeter().start()
    with strict_fp32(), CpuClock() as clock:  # TF32 off: PyTorch FP32 on CUDA is real FP32
        timing = time_runs(run, warmup=settings.warmup, iters=settings.iters, seconds=settings.seconds,
                           sync=torch.cuda.synchronize if on_cuda else None)
    record.memory.update(meter.stop())
    scale = (record.tile or {}).get("sampled", {}).get("scale", 1.0)
    record.cpu_per_wall, record.cpu_seconds = clock.ratio, clock.cpu_s * scale
    runs = len(timing.samples_ms)
    record.clock_runs = runs + settings.warmup  # warm-up runs include the first; warmup 0: the first is a sample
    session = ort_readback(backend)
    record.threads = {**set_torch_threads(None), **{k: v for k, v in (session or {}).items() if "_op" in k}}
    record.session_options = session
    record.loadavg = {"start": load_start, "end": loadavg()}
    if on_cuda:
        gpu_figures(record, backend, case, state, settings, feed, len(timing.samples_ms))
    graph_floor(record, work)
    fill_timing(record, timing, work.images, *case.hw, scale=scale)
    if scale != 1.0:
        record.latency_includes += (f"; extrapolated: {record.tile['sampled']['tiles_timed']} of "
                                    f"{record.tile['tiles']} tiles timed (same shape) x {scale:.2f}, blending not "
                                    "included")
    record.parity = case_parity(case, state, timing.output, event, reference_note, settings)
    timing.output = None


def graph_floor(record: BenchRecord, work: Work) -> None:
    """An ONNX case's graph floor next to its measured peak: the liveness peak of its ONNX file in node order at
    the shape one call runs (``onnx_memory.min_live_bytes``; tensors only, no weights or workspaces)."""
    onnx_file = (record.artifact or {}).get("onnx") or (record.artifact or {}).get("file")
    if not onnx_file or not str(onnx_file).endswith(".onnx"):
        return
    try:
        floor = min_live_bytes(onnx_file, *work.hw, batch=work.run_batch)
    except Exception as exc:  # noqa: BLE001 (a figure beside the result, never the end of the case)
        record.memory["graph_floor_error"] = one_line(exc, 200, name_type=True)
        return
    record.memory["graph_floor_bytes"] = floor["peak_bytes"]
    record.memory["graph_floor_method"] = floor["method"] + f" at {fmt_wxh(work.hw)} x batch {work.run_batch}"


def gpu_figures(record: BenchRecord, backend: Backend, case: Case, state: ModelState, settings: BenchSettings,
                feed: dict, runs: int) -> None:
    """CUDA only: allocator peak, TensorRT engine device memory, PyTorch's device-only compute time."""
    record.memory["gpu_peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
    engine = getattr(backend, "engine", None)
    for attr in ("device_memory_size_v2", "device_memory_size"):
        if engine is not None and hasattr(engine, attr):
            record.memory["engine_device_memory_bytes"] = int(getattr(engine, attr))
            break
    if case.backend == "torch" and not settings.tile:
        record.gpu_compute_ms = latency_stats(gpu_compute_times(backend.module, feed, state.input_names,
                                                                case.precision, max(1, runs)))


def fill_timing(record: BenchRecord, timing: Timing, images: int, h: int, w: int, scale: float = 1.0) -> None:
    """Latency statistics, MPix/s (input and output) and TFLOP/s from the timed runs (each x ``scale``: a sampled
    tiled case's whole-run figure)."""
    stats = latency_stats([s * scale for s in timing.samples_ms])
    record.first_run_ms = timing.first_run_ms * scale
    record.latency_ms = stats
    record.iterations = stats["count"]
    median_s = stats["median"] / 1e3
    if median_s > 0:
        out_h, out_w = record.output_hw
        record.megapixels_per_s = images * h * w / 1e6 / median_s
        record.output_megapixels_per_s = images * out_h * out_w / 1e6 / median_s
        record.tflops = record.flops_per_image * images / median_s / 1e12


def _done_message(case: Case, record: BenchRecord) -> str:
    lat = record.latency_ms
    return (f"{case.label}: median {lat['median']:.1f} ms over {lat['count']} runs (first {record.first_run_ms:.0f} "
            f"ms), {record.megapixels_per_s:.3g} MPix/s, {record.tflops:.3g} TFLOP/s, "
            f"peak RSS +{record.memory['rss_peak_delta_bytes'] / 2**20:.0f} MiB"
            + (f", parity {parity_short(record.parity)}" if record.parity else ""))
