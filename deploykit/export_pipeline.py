"""``deploykit export``: model -> forms -> ONNX -> simplify -> FP32 + FP16 artifacts -> parity -> manifest.

Every step is timed and reported through ``on_step``; nothing is published unless every check passed, and
then the files are moved into place with the manifest last (see ``deploykit.artifacts``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from deploykit import forms as forms_mod
from deploykit.artifacts import Staging, write_json_atomic
from deploykit.backends import OrtBackend, TorchBackend
from deploykit.checkpoints import sha256_file
from deploykit.errors import DeployKitError, ExportError, ParityError
from deploykit.factory import DEFAULT_SEED, build_model
from deploykit.fp16 import Fp16RoundingEmulation, convert_to_fp16
from deploykit.inputs import Shape, parity_shapes, random_inputs
from deploykit.manifest import MANIFEST_NAME, io_section, new_manifest
from deploykit.onnx_export import (DEFAULT_OPSET, EXPORTERS, check_dims, dim_request, export_onnx,
                                   external_data_file, finalize, graph_io_dims, save_onnx)
from deploykit.parity import ParityRecord, check_parity
from deploykit.simplify import simplify
from deploykit.zoo import ModelSpec, get_spec

StepCallback = Callable[[str, str, float, str], None]  # (step, status 'start'|'done'|'skip', seconds, detail)
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


class _Steps:
    """Times named steps and forwards progress to the caller's callback."""

    def __init__(self, callback: StepCallback | None):
        self.callback = callback or (lambda *a: None)
        self.records: list[dict] = []

    def run(self, name: str, fn: Callable, *args, **kwargs):
        self.callback(name, "start", 0.0, "")
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        seconds = time.perf_counter() - start
        detail = result[-1] if isinstance(result, tuple) and isinstance(result[-1], str) else ""
        self.records.append({"step": name, "seconds": round(seconds, 3), "detail": detail})
        self.callback(name, "done", seconds, detail)
        return result

    def skip(self, name: str, why: str) -> None:
        self.records.append({"step": name, "seconds": 0.0, "detail": f"skipped: {why}"})
        self.callback(name, "skip", 0.0, why)


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
    if static is None or isinstance(static, tuple):
        return static
    try:
        h, w = (int(v) for v in static.lower().split("x"))
    except ValueError as exc:
        raise ExportError(f"--static takes HxW, e.g. 512x768, not '{static}'") from exc
    return h, w


def export(name: str, *, weights: str | Path | None = None, out: str | Path = "exports",
           opset: int = DEFAULT_OPSET, static: str | tuple[int, int] | None = None, fp16: bool = True,
           simplify_graph: bool = True, simplifier: str = "onnxslim", exporter: str = "auto",
           forms: list[str] | dict[str, str] | None = None, seed: int = DEFAULT_SEED,
           unsafe_pickle: bool = False, trt: dict | None = None, aoti: bool | str = False,
           on_step: StepCallback | None = None) -> ExportResult:
    """Export a zoo model to verified ONNX artifacts + manifest under ``out/<family>/<variant>/``."""
    spec = get_spec(name)
    static_hw = _parse_static(static)
    options = forms if isinstance(forms, dict) else forms_mod.parse_form_options(forms)
    exporters = list(spec_exporters(spec)) if exporter == "auto" else [exporter]
    if any(e not in EXPORTERS for e in exporters):
        raise ExportError(f"unknown exporter '{exporter}' (use auto, {', '.join(EXPORTERS)})")
    example, checks = parity_shapes(spec)
    if static_hw is not None:
        spec.check_size(*static_hw)
        example = (2, *static_hw)
        checks = [(1, *static_hw), (2, *static_hw)]
    steps = _Steps(on_step)
    out_dir = Path(out) / spec.family / spec.variant
    stem = f"{spec.family}_{spec.variant}" + (f"_{static_hw[0]}x{static_hw[1]}" if static_hw else "")
    manifest = new_manifest(spec)

    # 1. model ---------------------------------------------------------------------------------------------
    def _build():
        model, _, report = build_model(spec, weights, seed=seed, unsafe_pickle=unsafe_pickle)
        how = f"weights {Path(weights).name} ({report.layout} layout)" if report else \
            f"RANDOM INIT (seed {seed}): no --weights given, outputs are not meaningful images"
        return model, report, how

    reference, report, _ = steps.run("load model", _build)
    manifest["weights"] = ({"source": "file", **report.to_dict()} if report
                           else {"source": "random-init", "seed": seed,
                                 "note": "no weights given: seeded random initialisation"})

    with Staging(out_dir) as stage:
        # 2. export forms ----------------------------------------------------------------------------------
        form_shapes = [example, *checks]

        def _forms():
            module, records = forms_mod.build_export_module(reference, spec, form_shapes, options)
            detail = "; ".join(f"{r.name}={r.option}: max abs {max(c['max_abs'] for c in r.checks):.1e}"
                               for r in records) or "none needed"
            return module, records, detail

        module, form_records, _ = steps.run("export forms", _forms)
        manifest["forms"] = [r.to_dict() for r in form_records]

        # 3. ONNX export, exporter chosen by what passes the checks -------------------------------------
        out_names = [spec.outputs[spec.image_output].name]
        request = dim_request([(t.name, t.channels) for t in spec.inputs],
                              [(out_names[0], spec.out_channels)], static_hw, spec.scale)
        raw_path = stage.path(f"{stem}.raw.onnx")
        torch_ref = TorchBackend(forms_mod.ImageOutput(reference, spec.image_output),
                                 [t.name for t in spec.inputs], out_names)

        def _export():
            attempts = []
            for name_ in exporters:
                start = time.perf_counter()
                try:
                    model, record = export_onnx(module, _torch_args(spec, example, seed), raw_path, request,
                                                exporter=name_, opset=opset)
                    save_onnx(model, raw_path)
                    with OrtBackend(raw_path) as ort_raw:
                        parity = check_parity(spec, torch_ref, ort_raw, checks[:1])
                    _require(parity, f"{name_} export")
                    attempts.append({"exporter": name_, "ok": True, "seconds": round(time.perf_counter() - start, 2)})
                    return model, record, attempts, f"{name_}, opset {record.opset}, {record.nodes} nodes"
                except DeployKitError as exc:
                    attempts.append({"exporter": name_, "ok": False, "error": str(exc)[:400],
                                     "seconds": round(time.perf_counter() - start, 2)})
            raise ExportError("no exporter produced a graph that passes the checks: " +
                              " | ".join(f"{a['exporter']}: {a['error']}" for a in attempts))

        raw_model, export_record, attempts, _ = steps.run("export onnx", _export)
        manifest["export"] = {
            "exporter": export_record.exporter, "opset": export_record.opset, "ir_version": export_record.ir_version,
            "attempts": attempts, "example_shape": list(example), "static_hw": list(static_hw) if static_hw else None,
            "exporter_notes": export_record.warnings, "torch": torch.__version__,
        }

        # 4. simplify ------------------------------------------------------------------------------------
        fp32_path = stage.path(f"{stem}.fp32.onnx")
        nodes_before = len(raw_model.graph.node)

        def _simplify():
            slim = simplify(raw_model, simplifier)
            try:
                check_dims(slim, request, simplifier)
                finalize(slim)
                save_onnx(slim, fp32_path)
                with OrtBackend(raw_path) as a, OrtBackend(fp32_path) as b:
                    diff = _max_abs_between(a, b, spec, checks)
                if diff > SIMPLIFY_MAX_ABS:
                    raise ExportError(f"{simplifier} changed outputs by {diff:.2e} (> {SIMPLIFY_MAX_ABS:g})")
            except DeployKitError as exc:
                save_onnx(raw_model, fp32_path)
                return raw_model, {"simplifier": simplifier, "applied": False, "reason": str(exc)[:300]}, \
                    f"kept the unsimplified graph: {exc}"
            info = {"simplifier": simplifier, "applied": True, "max_abs_vs_unsimplified": diff}
            return slim, info, f"{nodes_before} -> {len(slim.graph.node)} nodes, max abs {diff:.1e}"

        if simplify_graph:
            fp32_model, simplify_info, _ = steps.run("simplify", _simplify)
        else:
            save_onnx(raw_model, fp32_path)
            fp32_model, simplify_info = raw_model, {"simplifier": None, "applied": False, "reason": "--no-simplify"}
            steps.skip("simplify", "--no-simplify")
        simplify_info.update(nodes_before=nodes_before, nodes_after=len(fp32_model.graph.node))
        manifest["simplify"] = simplify_info

        # 5. FP32 parity vs PyTorch FP32 ------------------------------------------------------------------
        def _parity32():
            with OrtBackend(fp32_path) as backend:
                records = check_parity(spec, torch_ref, backend, checks)
            _require(records, "FP32 ONNX Runtime")
            return records, f"max abs {max(r.max_abs for r in records):.1e} at {len(checks)} shapes"

        parity, _ = steps.run("parity fp32", _parity32)
        dims_in, dims_out = graph_io_dims(fp32_model)
        manifest["io"] = io_section(spec, dims_in, dims_out)
        artifacts = [_artifact(fp32_path, "fp32", fp32_model)]

        # 6. FP16 artifact + two CPU checks ----------------------------------------------------------------
        if fp16:
            fp16_path = stage.path(f"{stem}.fp16.onnx")

            def _fp16():
                model16, record = convert_to_fp16(fp32_model, spec.fp16)
                check_dims(model16, request, "fp16 conversion")
                finalize(model16)
                save_onnx(model16, fp16_path)
                with OrtBackend(fp16_path, precision="fp16") as backend:
                    ort16 = check_parity(spec, torch_ref, backend, checks)
                with Fp16RoundingEmulation(module) as emulated:  # real .half() convs are ~100x slower on CPU
                    half = TorchBackend(emulated.module, [t.name for t in spec.inputs], out_names,
                                        precision="fp16", compute_dtype=torch.float32, name="torch-fp16-emulation")
                    torch16 = check_parity(spec, torch_ref, half, checks)
                _require(ort16, "FP16 ONNX Runtime")
                detail = (f"ORT PSNR {min(r.psnr_db for r in ort16):.1f} dB, torch FP16-emulation PSNR "
                          f"{min(r.psnr_db for r in torch16):.1f} dB, {len(record.fp32_nodes)} nodes kept FP32")
                return model16, record, ort16, torch16, detail

            model16, fp16_record, ort16, torch16, _ = steps.run("fp16", _fp16)
            parity += ort16
            artifacts.append(_artifact(fp16_path, "fp16", model16, fp16_record.to_dict()))
            manifest["fp16"] = {"policy": {"keep_fp32_ops": list(spec.fp16.keep_fp32_ops),
                                           "min_psnr_db": spec.fp16.min_psnr_db, "notes": spec.fp16.notes},
                                "torch_fp16_emulation": [r.to_dict() for r in torch16],
                                "torch_fp16_emulation_note": "weights and every module output rounded to float16, "
                                                             "float32 arithmetic (deploykit.fp16)"}
        else:
            steps.skip("fp16", "--no-fp16")

        manifest["parity"] = [r.to_dict() for r in parity]
        manifest["artifacts"] = artifacts
        manifest["steps"] = steps.records
        write_json_atomic(stage.path(MANIFEST_NAME), manifest)
        files = stage.publish([f for a in artifacts for f in (a["file"], a.get("external_data")) if f]
                              + [MANIFEST_NAME])
    result = ExportResult(spec, out_dir, manifest, files, steps.records)
    if aoti:  # AOTInductor package for aoti_run (docs/cpp.md); a failure raises, the ONNX artifacts stay published
        from deploykit.aoti import export_aoti

        export_aoti(result, device="auto" if aoti is True else str(aoti), on_step=on_step,
                    unsafe_pickle=unsafe_pickle)  # refreshes result.manifest
        steps.records.extend(s for s in result.manifest["steps"] if s["step"].startswith("aoti "))
    if trt is not None:  # optional engine build: a missing TensorRT/GPU is a skipped step, not a failure
        from deploykit.manifest import read_manifest
        from deploykit.trt_build import maybe_build_after_export

        engine = maybe_build_after_export(result, on_step=on_step, **trt)
        if "skipped" in engine:
            steps.skip("tensorrt engine", engine["skipped"])
        result.manifest = read_manifest(out_dir)
    return result


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
