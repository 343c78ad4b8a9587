"""``deploykit export``: model -> forms -> ONNX -> simplify -> FP32 + FP16 artifacts -> parity -> manifest.

One small function per step, each timed and reported through ``on_step`` (``deploykit.util.progress``); an
:class:`_ExportRun` carries what one step hands the next. Nothing is published unless every check passed, and
then the files are moved into place with the manifest last (``deploykit.util.files.Staging``). The optional
AOTInductor package and TensorRT engine come after publishing and update the manifest in place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from deploykit.artifacts.lookup import export_dir
from deploykit.artifacts.manifest import (
    MANIFEST_NAME,
    io_section,
    new_manifest,
    read_manifest,
    write_manifest,
)
from deploykit.errors import DeployKitError, ExportError, ParityError
from deploykit.exporting import forms as forms_mod
from deploykit.exporting.aoti import export_aoti
from deploykit.exporting.fp16 import Fp16RoundingEmulation, convert_to_fp16
from deploykit.exporting.fp16_policy import AUTO_MIN_PSNR, auto_convert
from deploykit.exporting.onnx_export import (
    DEFAULT_OPSET,
    EXPORTERS,
    DimRequest,
    check_dims,
    dim_request,
    export_onnx,
    external_data_file,
    finalize,
    graph_io_dims,
    save_onnx,
)
from deploykit.exporting.simplify import simplify
from deploykit.runtime.ort import OrtBackend, cpu_session_recipe
from deploykit.runtime.torch_backend import TorchBackend
from deploykit.trt.build import maybe_build_after_export
from deploykit.util.files import Staging, sha256_file
from deploykit.util.locks import folder_lock
from deploykit.util.progress import StepCallback, Steps
from deploykit.util.sizes import parse_size
from deploykit.verify.parity import ParityRecord, check_parity
from deploykit.zoo.factory import DEFAULT_SEED, build_model
from deploykit.zoo.registry import get_spec
from deploykit.zoo.sample_inputs import Shape, parity_shapes, random_inputs
from deploykit.zoo.spec import ModelSpec

SIMPLIFY_MAX_ABS = 1e-5


@dataclass
class ExportResult:
    spec: ModelSpec
    out_dir: Path
    manifest: dict
    files: list[Path]
    steps: list[dict] = field(default_factory=list)

    @property
    def parity(self) -> list[dict]:
        return self.manifest.get("parity", [])


@dataclass
class ExportOptions:
    """Everything ``deploykit export`` can be asked (the keyword arguments of :func:`export`)."""

    weights: str | Path | None = None
    out: str | Path = "exports"
    opset: int = DEFAULT_OPSET
    static: str | tuple[int, int] | None = None
    fp16: bool = True
    simplify_graph: bool = True
    simplifier: str = "onnxslim"
    exporter: str = "auto"
    forms: list[str] | dict[str, str] | None = None
    seed: int = DEFAULT_SEED
    unsafe_pickle: bool = False
    trt: dict | None = None
    aoti: bool | str = False
    fp16_policy: str = "spec"  # "spec": the zoo's op-type policy; "auto": deploykit.exporting.fp16_policy
    calib: list[str | Path] | None = None  # --calib images for "auto" (None: a synthetic stand-in)
    fp16_max_res: int = 2048  # "auto": the policy is proven up to this square input side
    min_psnr: float | None = None  # "auto": PSNR floor vs FP32 on the calibration images (None: 50 dB)


@dataclass
class _ExportRun:
    """What one export step hands the next."""

    spec: ModelSpec
    opts: ExportOptions
    steps: Steps
    static_hw: tuple[int, int] | None
    exporters: list[str]
    form_options: dict[str, str]
    example: Shape
    checks: list[Shape]
    out_dir: Path
    stem: str
    manifest: dict
    request: DimRequest
    reference: torch.nn.Module | None = None  # the PyTorch model, weights loaded
    torch_ref: TorchBackend | None = None  # its FP32 runner: what every artifact is judged against
    module: torch.nn.Module | None = None  # the export-form module the graph is exported from
    parity: list[ParityRecord] = field(default_factory=list)
    artifacts: list[dict] = field(default_factory=list)

    @property
    def out_names(self) -> list[str]:
        return [self.spec.outputs[self.spec.image_output].name]


def export(name: str, *, weights: str | Path | None = None, out: str | Path = "exports",
           opset: int = DEFAULT_OPSET, static: str | tuple[int, int] | None = None, fp16: bool = True,
           simplify_graph: bool = True, simplifier: str = "onnxslim", exporter: str = "auto",
           forms: list[str] | dict[str, str] | None = None, seed: int = DEFAULT_SEED,
           unsafe_pickle: bool = False, trt: dict | None = None, aoti: bool | str = False,
           fp16_policy: str = "spec", calib: list[str | Path] | None = None, fp16_max_res: int = 2048,
           min_psnr: float | None = None, on_step: StepCallback | None = None) -> ExportResult:
    """Export a zoo model to verified ONNX artifacts + manifest under ``out/<family>/<variant>/``."""
    opts = ExportOptions(weights, out, opset, static, fp16, simplify_graph, simplifier, exporter, forms, seed,
                         unsafe_pickle, trt, aoti, fp16_policy, calib, fp16_max_res, min_psnr)
    if fp16_policy not in ("spec", "auto"):
        raise ExportError(f"unknown --fp16-policy '{fp16_policy}' (use spec or auto)")
    run = _plan(get_spec(name), opts, Steps(on_step))
    run.steps.run("load model", _load_model, run)  # bad weights fail before the folder is even created
    with folder_lock(run.out_dir, f"deploykit export {run.spec.name}"):  # one writer per export folder
        with Staging(run.out_dir) as stage:
            run.steps.run("export forms", _apply_forms, run)
            raw_model, raw_path, _ = run.steps.run("export onnx", _export_graph, run, stage)
            fp32_model, fp32_path = _simplified(run, stage, raw_model, raw_path)
            run.steps.run("parity fp32", _prove_fp32, run, fp32_model, fp32_path)
            if opts.fp16:
                run.steps.run("fp16", _make_fp16, run, stage, fp32_model)
            else:
                run.steps.skip("fp16", "--no-fp16")
            files = _publish(run, stage)
        result = ExportResult(run.spec, run.out_dir, run.manifest, files, run.steps.records)
        _after_publish(run, result, on_step)
    return result


def _plan(spec: ModelSpec, opts: ExportOptions, steps: Steps) -> _ExportRun:
    """Check the options and decide names, shapes and exporters before any work is done."""
    static_hw = _parse_static(opts.static)
    exporters = list(spec_exporters(spec)) if opts.exporter == "auto" else [opts.exporter]
    if any(e not in EXPORTERS for e in exporters):
        raise ExportError(f"unknown exporter '{opts.exporter}' (use auto, {', '.join(EXPORTERS)})")
    form_options = opts.forms if isinstance(opts.forms, dict) else forms_mod.parse_form_options(opts.forms)
    if static_hw is not None:
        spec.check_size(*static_hw)
    example, checks = parity_shapes(spec, static_hw=static_hw)
    request = dim_request([(t.name, t.channels) for t in spec.inputs],
                          [(spec.outputs[spec.image_output].name, spec.out_channels)], static_hw, spec.scale)
    stem = f"{spec.family}_{spec.variant}" + (f"_{static_hw[0]}x{static_hw[1]}" if static_hw else "")
    return _ExportRun(spec, opts, steps, static_hw, exporters, form_options, example, checks,
                      export_dir(spec, opts.out), stem, new_manifest(spec), request)


def _load_model(run: _ExportRun) -> tuple[None, str]:
    spec, opts = run.spec, run.opts
    model, _, report = build_model(spec, opts.weights, seed=opts.seed, unsafe_pickle=opts.unsafe_pickle)
    run.reference = model
    run.torch_ref = TorchBackend.for_image(model, spec)
    run.manifest["weights"] = ({"source": "file", **report.to_dict()} if report
                               else {"source": "random-init", "seed": opts.seed,
                                     "note": "no weights given: seeded random initialisation"})
    how = f"weights {Path(opts.weights).name} ({report.layout} layout)" if report else \
        f"RANDOM INIT (seed {opts.seed}): no --weights given, outputs are not meaningful images"
    return None, how


def _apply_forms(run: _ExportRun) -> tuple[None, str]:
    run.module, records = forms_mod.build_export_module(run.reference, run.spec, [run.example, *run.checks],
                                                        run.form_options)
    run.manifest["forms"] = [r.to_dict() for r in records]
    return None, ("; ".join(f"{r.name}={r.option}: max abs {max(c['max_abs'] for c in r.checks):.1e}"
                            for r in records) or "none needed")


def _export_graph(run: _ExportRun, stage: Staging) -> tuple[onnx.ModelProto, Path, str]:
    """The raw ONNX graph from the first exporter whose graph passes the FP32 check."""
    raw_path = stage.path(f"{run.stem}.raw.onnx")
    attempts = []
    for name in run.exporters:
        start = time.perf_counter()
        try:
            model, record = export_onnx(run.module, _torch_args(run.spec, run.example, run.opts.seed), raw_path,
                                        run.request, exporter=name, opset=run.opts.opset)
            save_onnx(model, raw_path)
            with OrtBackend(raw_path) as ort_raw:
                _require(check_parity(run.spec, run.torch_ref, ort_raw, run.checks[:1]), f"{name} export")
        except DeployKitError as exc:
            attempts.append({"exporter": name, "ok": False, "error": str(exc)[:400],
                             "seconds": round(time.perf_counter() - start, 2)})
            continue
        attempts.append({"exporter": name, "ok": True, "seconds": round(time.perf_counter() - start, 2)})
        run.manifest["export"] = {
            "exporter": record.exporter, "opset": record.opset, "ir_version": record.ir_version,
            "attempts": attempts, "example_shape": list(run.example),
            "static_hw": list(run.static_hw) if run.static_hw else None,
            "exporter_notes": record.warnings, "torch": torch.__version__,
        }
        return model, raw_path, f"{name}, opset {record.opset}, {record.nodes} nodes"
    raise ExportError("no exporter produced a graph that passes the checks: " +
                      " | ".join(f"{a['exporter']}: {a['error']}" for a in attempts))


def _simplified(run: _ExportRun, stage: Staging, raw_model: onnx.ModelProto,
                raw_path: Path) -> tuple[onnx.ModelProto, Path]:
    """The FP32 artifact: the simplified graph when it matches the raw one, else the raw graph."""
    fp32_path = stage.path(f"{run.stem}.fp32.onnx")
    if run.opts.simplify_graph:
        fp32_model, info, _ = run.steps.run("simplify", _simplify, run, raw_model, raw_path, fp32_path)
    else:
        save_onnx(raw_model, fp32_path)
        fp32_model, info = raw_model, {"simplifier": None, "applied": False, "reason": "--no-simplify"}
        run.steps.skip("simplify", "--no-simplify")
    info.update(nodes_before=len(raw_model.graph.node), nodes_after=len(fp32_model.graph.node))
    run.manifest["simplify"] = info
    return fp32_model, fp32_path


def _simplify(run: _ExportRun, raw_model: onnx.ModelProto, raw_path: Path,
              fp32_path: Path) -> tuple[onnx.ModelProto, dict, str]:
    simplifier = run.opts.simplifier
    slim = simplify(raw_model, simplifier)
    try:
        check_dims(slim, run.request, simplifier)
        finalize(slim)
        save_onnx(slim, fp32_path)
        with OrtBackend(raw_path) as a, OrtBackend(fp32_path) as b:
            diff = _max_abs_between(a, b, run.spec, run.checks)
        if diff > SIMPLIFY_MAX_ABS:
            raise ExportError(f"{simplifier} changed outputs by {diff:.2e} (> {SIMPLIFY_MAX_ABS:g})")
    except DeployKitError as exc:
        save_onnx(raw_model, fp32_path)
        return raw_model, {"simplifier": simplifier, "applied": False, "reason": str(exc)[:300]}, \
            f"kept the unsimplified graph: {exc}"
    info = {"simplifier": simplifier, "applied": True, "max_abs_vs_unsimplified": diff}
    return slim, info, f"{len(raw_model.graph.node)} -> {len(slim.graph.node)} nodes, max abs {diff:.1e}"


def _prove_fp32(run: _ExportRun, fp32_model: onnx.ModelProto, fp32_path: Path) -> tuple[None, str]:
    with OrtBackend(fp32_path) as backend:
        records = check_parity(run.spec, run.torch_ref, backend, run.checks)
    _require(records, "FP32 ONNX Runtime")
    run.parity += records
    dims_in, dims_out = graph_io_dims(fp32_model)
    run.manifest["io"] = io_section(run.spec, dims_in, dims_out)
    run.artifacts.append(_artifact(fp32_path, "fp32", fp32_model))
    return None, f"max abs {max(r.max_abs for r in records):.1e} at {len(run.checks)} shapes"


def _make_fp16(run: _ExportRun, stage: Staging, fp32_model: onnx.ModelProto) -> tuple[None, str]:
    """The mixed-precision FP16 artifact, gated by ORT FP16 parity; the PyTorch FP16 emulation is recorded."""
    spec, fp16_path, opts = run.spec, stage.path(f"{run.stem}.fp16.onnx"), run.opts
    if opts.fp16_policy == "auto":
        model16, record, policy = auto_convert(fp32_model, spec, calib=opts.calib, max_res=opts.fp16_max_res,
                                               min_psnr_db=AUTO_MIN_PSNR if opts.min_psnr is None else opts.min_psnr)
    else:
        model16, record = convert_to_fp16(fp32_model, spec.fp16)
        policy = {"mode": "spec", "keep_fp32_ops": list(spec.fp16.keep_fp32_ops),
                  "min_psnr_db": spec.fp16.min_psnr_db, "notes": spec.fp16.notes}
    check_dims(model16, run.request, "fp16 conversion")
    finalize(model16)
    save_onnx(model16, fp16_path)
    with OrtBackend(fp16_path, precision="fp16") as backend:
        ort16 = check_parity(spec, run.torch_ref, backend, run.checks)
    with Fp16RoundingEmulation(run.module) as emulated:  # real .half() convs are ~100x slower on CPU
        half = TorchBackend(emulated.module, [t.name for t in spec.inputs], run.out_names, precision="fp16",
                            compute_dtype=torch.float32, name="torch-fp16-emulation")
        torch16 = check_parity(spec, run.torch_ref, half, run.checks)
    _require(ort16, "FP16 ONNX Runtime")
    run.parity += ort16
    run.artifacts.append(_artifact(fp16_path, "fp16", model16, record.to_dict()))
    run.manifest["fp16"] = {"policy": policy,
                            "torch_fp16_emulation": [r.to_dict() for r in torch16],
                            "torch_fp16_emulation_note": "weights and every module output rounded to float16, "
                                                         "float32 arithmetic (deploykit.exporting.fp16)"}
    return None, (f"ORT PSNR {min(r.psnr_db for r in ort16):.1f} dB, torch FP16-emulation PSNR "
                  f"{min(r.psnr_db for r in torch16):.1f} dB, {len(record.fp32_nodes)} nodes kept FP32 "
                  f"({policy['mode']} policy)")


def _publish(run: _ExportRun, stage: Staging) -> list[Path]:
    run.manifest["parity"] = [r.to_dict() for r in run.parity]
    run.manifest["artifacts"] = run.artifacts
    run.manifest["onnxruntime_cpu"] = cpu_session_recipe(arena=run.spec.ort_arena)
    run.manifest["steps"] = run.steps.records
    write_manifest(stage.path(MANIFEST_NAME), run.manifest)
    return stage.publish([f for a in run.artifacts for f in (a["file"], a.get("external_data")) if f]
                         + [MANIFEST_NAME])


def _after_publish(run: _ExportRun, result: ExportResult, on_step: StepCallback | None) -> None:
    """AOTInductor package and TensorRT engine: each updates the published manifest in place. A failed AOTI
    compile raises (the ONNX artifacts stay published); a missing TensorRT/GPU is a skipped step."""
    opts = run.opts
    if opts.aoti:
        export_aoti(result, device="auto" if opts.aoti is True else str(opts.aoti), on_step=on_step,
                    unsafe_pickle=opts.unsafe_pickle)  # refreshes result.manifest
        run.steps.records.extend(s for s in result.manifest["steps"] if s["step"].startswith("aoti "))
    if opts.trt is not None:

        engine = maybe_build_after_export(result, on_step=on_step, **opts.trt)
        if "skipped" in engine:
            run.steps.skip("tensorrt engine", engine["skipped"])
        result.manifest = read_manifest(run.out_dir)


def _torch_args(spec: ModelSpec, shape: Shape, seed: int) -> tuple[torch.Tensor, ...]:
    feed = random_inputs(spec, shape, seed=seed)
    return tuple(torch.from_numpy(feed[t.name]) for t in spec.inputs)


def _max_abs_between(a: OrtBackend, b: OrtBackend, spec: ModelSpec, shapes: list[Shape]) -> float:
    worst = 0.0
    for k, shape in enumerate(shapes):
        feed = random_inputs(spec, shape, seed=100 + k)
        out_a, out_b = a.run(feed), b.run(feed)
        worst = max(worst, max(float(np.abs(out_a[n] - out_b[n]).max()) for n in out_a))
    return worst


def _require(records: list[ParityRecord], what: str) -> None:
    failed = [r for r in records if not r.passed]
    if failed:
        raise ParityError(f"{what} parity failed: " + "; ".join(r.summary() for r in failed[:3]))


def _parse_static(static: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``--static HxW`` (height x width, unlike --res): a fixed size for the graph."""
    if static is None or isinstance(static, tuple):
        return static
    if "x" not in str(static).lower():
        raise ExportError(f"--static takes HxW, e.g. 512x768, not '{static}'")
    try:
        width_first = parse_size(static)  # parse_size reads WxH: swap back to H x W
    except DeployKitError as exc:
        raise ExportError(f"--static takes HxW, e.g. 512x768, not '{static}'") from exc
    return width_first[1], width_first[0]


def spec_exporters(spec: ModelSpec) -> tuple[str, ...]:
    """Exporter preference per model (first that passes the checks wins); see README 'Exporter choice'."""
    return spec.exporters


def _artifact(path: Path, precision: str, model: onnx.ModelProto, extra: dict | None = None) -> dict:
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    record = {"kind": "onnx", "precision": precision, "file": path.name, "bytes": path.stat().st_size,
              "sha256": sha256_file(path), "nodes": len(model.graph.node), "op_types": dict(sorted(ops.items())),
              "io_dtype": "float32", **(extra or {})}
    data = external_data_file(path)
    if data.exists():  # graphs over 2 GB: TensorRT, ORT and Triton must see both files
        record.update(external_data=data.name, external_data_sha256=sha256_file(data),
                      external_data_bytes=data.stat().st_size)
    return record
