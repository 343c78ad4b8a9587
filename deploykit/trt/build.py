"""Building TensorRT engines: parse the planned ONNX, configure the builder, build, write and record the engine.

``deploykit.trt.plan`` decides *what* to build (pure Python); this module talks to TensorRT, imported lazily
through ``deploykit.runtime.gpu.import_tensorrt`` so that importing it never needs a GPU. After a build the engine
is proven against PyTorch FP32 by ``deploykit.verify.engine_parity``.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from deploykit.artifacts import engines
from deploykit.artifacts.lookup import verified_file
from deploykit.artifacts.manifest import read_manifest
from deploykit.errors import EngineError
from deploykit.runtime.gpu import gpu_free_memory, gpu_info, import_tensorrt, tensorrt_unavailable_reason
from deploykit.runtime.profiles import engine_parity_shapes
from deploykit.trt.plan import (
    BuildPlan,
    onnx_node_names,
    plan_build,
    resolve_profile,
    select_fp32_layers,
    validate_build_options,
)
from deploykit.util.files import write_bytes_atomic
from deploykit.util.locks import folder_lock
from deploykit.util.progress import StepCallback
from deploykit.verify.engine_parity import run_engine_parity
from deploykit.zoo.registry import get_spec


def _verify_onnx(plan: BuildPlan) -> None:
    """The planned ONNX file (and its external weights) as the manifest lists it: present, sha256 unchanged."""
    verified_file(plan.export_dir, plan.onnx, error=EngineError)


def _dtype_name(dtype) -> str:
    return getattr(dtype, "name", str(dtype)).split(".")[-1]


def _trt_build(trt, plan: BuildPlan, workspace_bytes: int | None, opt_level: int) -> tuple[bytes, dict]:
    """Parse, configure, build. Returns (plan bytes, build record). Raises EngineError with TensorRT's words."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, parser, used_network_flags = _parse_network(trt, builder, logger, plan)  # parser owns the weights
    config, cleared = _configure(trt, builder, plan, workspace_bytes, opt_level)
    selection = _pin_fp32_layers(trt, network, plan) if plan.path.layer_precisions else None
    cache_loaded, cache_note = _load_timing_cache(config, plan)

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    del parser
    if serialized is None:
        raise EngineError(f"TensorRT {trt.__version__} could not build {plan.engine_file} (see the TensorRT log "
                          "above); try a smaller --profile maximum or a larger --workspace")
    write_bytes_atomic(plan.timing_cache, memoryview(config.get_timing_cache().serialize()))
    record = {**plan.path.to_dict(), "network_flags": used_network_flags, "cleared_flags": cleared,
              "optimization_level": opt_level, "workspace_bytes": workspace_bytes, "seconds": round(seconds, 2),
              "timing_cache": {"file": plan.timing_cache.name if plan.timing_cache.parent == plan.export_dir
                               else str(plan.timing_cache), "state": cache_note, "loaded": cache_loaded},
              "hardware_compatibility": "none", "version_compatible": False,
              "prebuild": plan.prebuild}
    if selection is not None:
        record["fp32_layers"] = selection.to_dict()
    return bytes(serialized), record


def _parse_network(trt, builder, logger, plan: BuildPlan):
    """(network parsed from the planned ONNX file, its parser — which must outlive the build: it owns the parsed
    weights — and the creation flags this TensorRT has and got)."""
    flags = 0
    used_network_flags = []
    for name in plan.path.network_flags:
        member = getattr(trt.NetworkDefinitionCreationFlag, name, None)
        if member is not None:
            flags |= 1 << int(member)
            used_network_flags.append(name)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(plan.onnx_path)):  # from file so external weights resolve
        errors = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            errors.append(err.desc() if hasattr(err, "desc") else str(err))
        detail = "; ".join(errors[:3]) or "no parser message"
        raise EngineError(f"TensorRT {trt.__version__} cannot parse {plan.onnx['file']}: {detail}")
    expected = {t.name for t in plan.spec.inputs}
    found = {network.get_input(i).name for i in range(network.num_inputs)}
    if found != expected:
        raise EngineError(f"{plan.onnx['file']} has inputs {sorted(found)}, the zoo expects {sorted(expected)}")
    return network, parser, used_network_flags


def _configure(trt, builder, plan: BuildPlan, workspace_bytes: int | None, opt_level: int):
    """(builder config with the path's flags and the optimisation profile, the flags cleared)."""
    config = builder.create_builder_config()
    if workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    config.builder_optimization_level = opt_level
    for name in plan.path.builder_flags:
        member = getattr(trt.BuilderFlag, name, None)
        if member is None:
            raise EngineError(f"TensorRT {trt.__version__} has no BuilderFlag.{name}; the {plan.path.name} path "
                              "needs TensorRT 10.x (use --typing strong)")
        config.set_flag(member)
    cleared = []
    for name in plan.path.clear_flags:
        member = getattr(trt.BuilderFlag, name, None)
        if member is not None:
            config.clear_flag(member)
            cleared.append(name)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in plan.profile.shapes(plan.spec).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    return config, cleared


def _pin_fp32_layers(trt, network, plan: BuildPlan):
    """Weak typing (TensorRT 10): pin the FP32 islands' layers to FLOAT; returns the Fp32Selection."""
    node_names = onnx_node_names(plan.onnx_path)
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    triples = [(layer.name, _dtype_name(layer.type), str(getattr(layer, "metadata", "") or "")) for layer in layers]
    selection = select_fp32_layers(triples, plan.fp32_nodes, plan.spec.fp16.keep_fp32_ops, node_names)
    pinned = set(selection.layers)
    float_types = (trt.DataType.FLOAT, trt.DataType.HALF)
    for layer in layers:
        if layer.name not in pinned:
            continue
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not all(t.dtype in float_types for t in outputs):
            # shape arithmetic of the island (Shape/Gather/Min on ints): FLOAT precision would fail the build
            # under OBEY_PRECISION_CONSTRAINTS, and it computes nothing in FP16 anyway
            selection.layers.remove(layer.name)
            if layer.name in selection.by_op_type:
                selection.by_op_type.remove(layer.name)
            selection.integer_layers.append(layer.name)
            continue
        layer.precision = trt.DataType.FLOAT
        for j in range(len(outputs)):
            layer.set_output_type(j, trt.DataType.FLOAT)
    return selection


def _load_timing_cache(config, plan: BuildPlan) -> tuple[bool, str]:
    """Reuse the timing cache next to the engine when TensorRT accepts it; (loaded, what happened)."""
    cache_loaded, cache_note = False, "new"
    data = plan.timing_cache.read_bytes() if plan.timing_cache.exists() else b""
    if data:
        try:
            # ignore_mismatch=False: a cache from another device / TensorRT version is refused, not trusted
            cache_loaded = config.set_timing_cache(config.create_timing_cache(data), ignore_mismatch=False) \
                is not False
        except Exception:  # noqa: BLE001 (a corrupt cache file must not stop the build)
            cache_loaded = False
        cache_note = "loaded" if cache_loaded else "rejected (other device, version or corrupt): started a new one"
    if not cache_loaded:
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    return cache_loaded, cache_note


def _engine_io(trt, engine_bytes: bytes) -> list[dict]:
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None:
        raise EngineError("the freshly built engine does not deserialize; rebuild with a clean timing cache")
    io = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        item = {"name": name, "mode": "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output",
                "dtype": _dtype_name(engine.get_tensor_dtype(name)).lower(), "shape": list(engine.get_tensor_shape(name))}
        if item["mode"] == "input":
            lo, opt, hi = engine.get_tensor_profile_shape(name, 0)
            item["profile"] = {"min": list(lo), "opt": list(opt), "max": list(hi)}
        io.append(item)
    return io


def build_engine(export_dir: str | Path, *, precision: str = "fp16", res: str | Iterable[str] | None = None,
                 profile: str | None = None, max_batch: int = 1, workspace_gb: float | None = None,
                 opt_level: int | None = None, timing_cache: str | Path | None = None, typing: str = "auto",
                 device: int = 0, parity: bool = True, parity_backends: Sequence[str] = ("tensorrt",),
                 on_step: StepCallback | None = None) -> dict:
    """Build one engine for an export directory, write it atomically, record it in the manifest (and its parity).

    Returns the manifest's engine entry. Raises BackendUnavailableError without TensorRT or a GPU, EngineError for
    a build that cannot happen, ShapeContractError for a profile the model cannot take.
    """
    step = on_step or (lambda *a: None)
    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    spec = get_spec(manifest["model"]["name"])
    static_hw = manifest.get("export", {}).get("static_hw")
    prof = resolve_profile(spec, res=res, profile=profile, max_batch=max_batch, static_hw=static_hw)
    workspace_bytes, level = validate_build_options(workspace_gb, opt_level)
    trt = import_tensorrt()
    gpu = gpu_info(device)
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(device)
    except Exception:  # noqa: BLE001
        pass
    plan = plan_build(export_dir, manifest, spec, precision=precision, profile=prof, tensorrt_version=trt.__version__,
                      gpu=gpu, typing=typing, timing_cache=timing_cache, gpu_memory_bytes=gpu_free_memory(device))
    _verify_onnx(plan)

    with folder_lock(export_dir, "deploykit build"):  # one writer per export folder; engine and entry together
        step("build engine", "start", 0.0, "")
        start = time.perf_counter()
        engine_bytes, record = _trt_build(trt, plan, workspace_bytes, level)
        write_bytes_atomic(plan.engine_path, engine_bytes)
        io = _engine_io(trt, engine_bytes)
        step("build engine", "done", time.perf_counter() - start,
             f"{plan.engine_file} ({len(engine_bytes) / 2**20:.1f} MiB, {plan.path.name}, TensorRT "
             f"{trt.__version__}, {gpu.name} sm{gpu.compute_capability})")
        entry = engines.engine_entry(identity=plan.identity, key=plan.key, file=plan.engine_file,
                                     engine_path=plan.engine_path, profile=prof.to_dict(spec), build=record, io=io,
                                     created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        engines.upsert_engine_entry(export_dir, entry)
    if parity:
        step("engine parity", "start", 0.0, "")
        start = time.perf_counter()
        results = run_engine_parity(export_dir, entry, backends=parity_backends, device=device)
        worst = min((r["psnr_db"] for recs in results.values() for r in recs if r["psnr_db"] is not None),
                    default=float("nan"))
        step("engine parity", "done", time.perf_counter() - start,
             f"{', '.join(results)}: min PSNR {worst:.1f} dB at {len(engine_parity_shapes(prof))} shapes")
        entry = engines.find_engine(read_manifest(export_dir), key=plan.key)
    else:
        step("engine parity", "skip", 0.0, "--no-parity")
    return entry


def maybe_build_after_export(result, **opts) -> dict:
    """For ``deploykit export --trt``: the engine's manifest entry, or ``{"skipped": reason}`` when TensorRT or a
    GPU is absent (a skipped step, not a failure). A real build failure still raises EngineError.

    ``result`` is an ExportResult (``out_dir``); ``opts`` are build_engine's keyword arguments (precision, res,
    profile, max_batch, workspace_gb, opt_level, timing_cache, typing, device, parity, parity_backends, on_step).
    The engine entry is written into the manifest on disk: re-read it if you keep ``result.manifest`` around.
    """
    reason = tensorrt_unavailable_reason(int(opts.get("device", 0)))
    if reason is not None:
        return {"skipped": reason}
    return build_engine(result.out_dir, **opts)
