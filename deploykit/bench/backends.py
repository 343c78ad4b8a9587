"""The runner of each case, opened through ``runtime.open.open_backend`` (the one backend factory) from the
model, the ONNX file or a TensorRT engine it needs, and the zero-argument call the timing loop wraps.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import torch

from deploykit.artifacts.lookup import onnx_artifact
from deploykit.artifacts.manifest import read_manifest
from deploykit.bench.plan import BenchSettings, Case, work_hw
from deploykit.bench.sources import default_cache_dir, onnx_for
from deploykit.bench.state import ModelState
from deploykit.errors import BenchError, ShapeContractError
from deploykit.imaging.tiling import run_tile_sample, run_tiled
from deploykit.runtime.base import Backend
from deploykit.runtime.gpu import gpu_info, import_tensorrt
from deploykit.runtime.open import open_backend
from deploykit.runtime.ort import cpu_session_options
from deploykit.runtime.profiles import Profile
from deploykit.trt.build import build_engine
from deploykit.util.sizes import Size, fmt_wxh

Notify = Callable[[str], None]
OnnxSource = tuple[Path, Path, dict, dict]  # ONNX path, export dir, manifest, artifact info for the record


def make_backend(case: Case, state: ModelState, settings: BenchSettings, device: str,
                 notify: Notify) -> tuple[Backend, dict | None]:
    """(backend, artifact info) for a case, opened through ``runtime.open.open_backend``; raises
    BackendUnavailableError / BenchError / DeployKitError."""
    spec = state.spec
    if case.is_reference:
        return state.reference, None
    if case.backend in ("torch", "torch-compile"):
        runner = open_backend(case.backend, spec, model=copy.deepcopy(state.model), precision=case.precision,
                              torch_device=device)
        runner.name = f"torch-{device}" if case.backend == "torch" else runner.name
        return runner, None
    path, export_dir, manifest, artifact = onnx_source(case, state, settings, notify)
    if case.backend == "ort":
        return open_backend("ort", spec, onnx=path, precision=case.precision, threads=settings.threads,
                            session_options=cpu_session_options(settings.threads, settings.ort_graph,
                                                                 spec.ort_arena)), artifact
    hw = work_hw(case.hw, settings, spec)
    if case.backend == "ort-cuda":
        return open_backend("ort-cuda", spec, export_dir=export_dir, manifest=manifest, precision=case.precision,
                            profile=Profile(hw, hw, hw, case.batch)), artifact
    if case.backend == "trt":
        entry = engine_for(case, settings, export_dir, hw, notify)
        artifact = {"file": str(Path(export_dir) / entry["file"]), "source": "engine", "sha256": entry.get("sha256"),
                    "tensorrt": entry.get("tensorrt"), "onnx": str(path)}
        return open_backend("trt", spec, export_dir=export_dir, engine=entry), artifact
    raise BenchError(f"unknown backend '{case.backend}'")


def onnx_source(case: Case, state: ModelState, settings: BenchSettings, notify: Notify) -> OnnxSource:
    """(ONNX path, export dir, manifest, artifact info) of the case's precision, found or exported once per
    model; ShapeContractError when the export has a fixed size other than the case's."""
    cache_dir = Path(settings.cache_dir) if settings.cache_dir else default_cache_dir()
    if case.precision not in state.onnx:
        state.onnx[case.precision] = onnx_for(state.target, case.precision, cache_dir,
                                              want_fp16="fp16" in settings.precisions, notify=notify)
    path, export_dir, manifest, source = state.onnx[case.precision]
    static_hw = (manifest.get("export") or {}).get("static_hw")
    if static_hw and tuple(static_hw) != tuple(case.hw):
        raise ShapeContractError(f"{export_dir} was exported with a fixed size {fmt_wxh(static_hw)}; "
                                 "bench it at that size or re-export without --static")
    sha256 = (onnx_artifact(manifest, case.precision) or {}).get("sha256")
    return path, export_dir, manifest, {"file": str(path), "source": source, "sha256": sha256}


def engine_for(case: Case, settings: BenchSettings, export_dir: Path, hw: Size, notify: Notify) -> dict:
    """An engine of this export that runs the case here (TensorRT version, GPU, profile), built when missing."""
    spec = case.target.spec
    trt, gpu = import_tensorrt(), gpu_info(0)
    for e in reversed(read_manifest(export_dir).get("engines", [])):
        if (e.get("precision") == case.precision and str(e.get("tensorrt")) == trt.__version__
                and str(e.get("compute_capability")) == gpu.compute_capability
                and Profile.from_dict(e["profile"]).contains(case.batch, *hw)):
            return e
    sizes = sorted({work_hw(c, settings, spec) for c in settings.sizes
                    if all(v % spec.multiple_of == 0 for v in c)} | {hw}, key=lambda s: s[0] * s[1])
    notify(f"building a TensorRT {case.precision} engine for {spec.name} "
           f"({', '.join(fmt_wxh(s) for s in sizes)}, batch {case.batch}) in {export_dir}")
    return build_engine(export_dir, precision=case.precision, res=[fmt_wxh(s) for s in sizes],
                        max_batch=case.batch, parity=False)


def case_device(backend: Backend) -> str:
    """Where a runner computes: 'cpu', 'cuda', 'cuda:0' …"""
    return str(getattr(backend, "device", "cpu"))


def run_once_fn(backend: Backend, state: ModelState, feed: dict, settings: BenchSettings,
                batch: int) -> Callable[[], object]:
    """A zero-argument callable running one image (tiled when --tile), returning the image output array; a
    sampled tiled case (``settings.tile_sample``) runs only those tiles and returns their stacked outputs."""
    out_name = state.output_name
    if settings.tile and settings.tile_sample:
        def run_sample_once():
            return run_tile_sample(lambda tiles: backend.run(tiles)[out_name], feed, state.spec,
                                   settings.tile_sample, tile=settings.tile, overlap=settings.overlap, batch=batch)

        return run_sample_once
    if settings.tile:
        def run_tiled_once():
            return run_tiled(lambda tiles: backend.run(tiles)[out_name], feed, state.spec, tile=settings.tile,
                             overlap=settings.overlap, batch=batch)

        return run_tiled_once
    return lambda: backend.run(feed)[out_name]


def gpu_compute_times(module, feed: dict, names: list[str], precision: str, iters: int) -> list[float]:
    """PyTorch on CUDA only: CUDA-event time of the forward on device-resident tensors (no copies)."""
    dtype = torch.float16 if precision == "fp16" else torch.float32
    args = [torch.from_numpy(feed[n]).to("cuda", dtype) for n in names]
    times = []
    with torch.inference_mode():
        module(*args)
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            module(*args)
            end.record()
            end.synchronize()
            times.append(float(start.elapsed_time(end)))
    return times
