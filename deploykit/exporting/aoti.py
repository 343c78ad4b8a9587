"""AOTInductor packages: the export's module as a compiled ``.pt2`` that C++ loads without Python.

``export_aoti(export_dir)`` takes an existing export (its manifest says which model, weights and forms), rebuilds
the PyTorch FP32 reference, rebuilds the same export-form module the ONNX graph came from, runs ``torch.export``
with dynamic batch / height / width (height and width as multiples of the shape contract's ``multiple_of``; one dim
for both when the model is square-only; only the batch when the export was made with ``--static``), and compiles it
with ``torch._inductor.aoti_compile_and_package``.

The package is compiled to a hidden temp file in the export directory, loaded back with
``torch._inductor.aoti_load_package`` and compared with PyTorch eager at two shapes (max abs <= 1e-4). Only then is
it renamed into place (``os.replace``) and recorded in the manifest (``artifacts`` entry of kind ``aoti``, records
under ``parity``; every other key kept; ``update_manifest``). A failed compile or parity check leaves no package
and the previous one, if any, untouched.

The C++ side is ``cpp/src/aoti_run.cpp`` (``torch::inductor::AOTIModelPackageLoader``), built by
``deploykit cpp build``; see docs/cpp.md.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from deploykit.artifacts.lookup import AOTI_KIND, onnx_artifact
from deploykit.artifacts.manifest import manifest_path, read_manifest, update_manifest
from deploykit.errors import BackendUnavailableError, ExportError, ParityError
from deploykit.exporting.forms import FORMS, build_export_module
from deploykit.runtime.aoti import AotiBackend
from deploykit.runtime.torch_backend import TorchBackend, strict_fp32
from deploykit.util.files import sha256_file, share_mode, sweep_stale, temp_prefix
from deploykit.util.locks import folder_lock
from deploykit.util.progress import Steps
from deploykit.util.text import one_line
from deploykit.verify.parity import check_parity
from deploykit.zoo.factory import build_recorded_model
from deploykit.zoo.sample_inputs import parity_shapes, random_inputs

PACKAGE_SUFFIX = ".pt2"
PACKAGE_MODEL_NAME = "model"  # the name aoti_compile_and_package gives the model inside the package


def _export_dir(result_or_export_dir) -> Path:
    """ExportResult / export directory / its manifest.json -> the export directory."""
    return manifest_path(getattr(result_or_export_dir, "out_dir", result_or_export_dir)).parent


def _form_options(manifest: dict) -> dict[str, str]:
    """The form options the ONNX export used, read back from the manifest (``image-output`` is not an option)."""
    known = {f.name for f in FORMS}
    return {r["name"]: r["option"] for r in manifest.get("forms", []) if r.get("name") in known}


def _stem(manifest: dict, spec) -> str:
    """The export's file stem (``<family>_<variant>[_HxW]``), read off its FP32 ONNX file name."""
    fp32 = onnx_artifact(manifest, "fp32")
    if fp32 and fp32["file"].endswith(".fp32.onnx"):
        return fp32["file"][: -len(".fp32.onnx")]
    return f"{spec.family}_{spec.variant}"


def dynamic_shapes_for(spec, static_hw: list[int] | tuple[int, int] | None):
    """torch.export ``dynamic_shapes`` for every input in the zoo's order (batch, height, width shared by all inputs)
    and their description for the manifest."""
    from torch.export import Dim

    batch = Dim("batch", min=1)
    dims: dict[int, object] = {0: batch}
    described = {"batch": {"axis": 0, "min": 1, "max": None}}
    if static_hw is None:
        m = max(1, int(spec.multiple_of))
        low = max(2, spec.min_size)  # 0/1 sizes specialise in torch.export
        if m > 1:
            # at least 2 blocks: a model that down-samples by multiple_of would otherwise see a 1-pixel map,
            # which torch.export specialises (guard "H // m != 1")
            low = max(low, 2 * m)
            blocks = Dim("hw_blocks" if spec.square else "h_blocks", min=-(-low // m))
            height = m * blocks
            width = height if spec.square else m * Dim("w_blocks", min=-(-low // m))
        else:
            height = Dim("hw" if spec.square else "height", min=low)
            width = height if spec.square else Dim("width", min=low)
        dims.update({2: height, 3: width})
        for name, axis in (("height", 2), ("width", 3)):
            described[name] = {"axis": axis, "min": -(-low // m) * m, "max": None, "multiple_of": m,
                               **({"same_as": "height"} if spec.square and name == "width" else {})}
    # one positional parameter, ImageOutput.forward(*inputs): a tuple with one entry per input inside it
    return [tuple(dict(dims) for _ in spec.inputs)], described


def _example_args(spec, shape, device: str) -> tuple[torch.Tensor, ...]:
    feed = random_inputs(spec, shape, seed=0)
    return tuple(torch.from_numpy(feed[t.name]).to(device) for t in spec.inputs)


def export_aoti(result_or_export_dir, *, device: str = "cpu", on_step=None, unsafe_pickle: bool = False) -> dict:
    """Compile the export's module to an AOTInductor package next to the ONNX files, prove it, record it.

    ``result_or_export_dir``: an ``ExportResult`` (its ``manifest`` is refreshed in place), an export directory or
    its ``manifest.json``. ``device``: ``"cpu"``, ``"cuda"`` / ``"cuda:N"`` (the package runs on that device
    only) or ``"auto"`` (CUDA when torch has it, else CPU). ``on_step(step, status, seconds, detail)`` as in ``deploykit.util.progress``.
    ``unsafe_pickle``: as the export was run (the recorded weights are loaded again to rebuild the reference).

    Returns the manifest's artifact entry (kind ``aoti``: file, sha256, bytes, device, dynamic dims, torch version,
    ``parity_summary``). Raises ExportError (export / compile), ParityError (> 1e-4 against PyTorch FP32),
    ArtifactError (manifest, weights) or BackendUnavailableError (CUDA asked for, none here).
    """
    device = _resolve_device(device)
    export_dir = _export_dir(result_or_export_dir)
    manifest = read_manifest(export_dir)
    reference, spec = build_recorded_model(manifest, unsafe_pickle=unsafe_pickle)
    job = _AotiJob(spec, reference, manifest, export_dir, device, Steps(on_step))
    program, described, nodes, _ = job.steps.run("aoti export", _torch_export, job)
    # compile to a hidden temp file in the export dir, prove it, rename it into place; nothing left on failure
    sweep_stale(export_dir)  # temp packages of killed runs (their names carry the writer's pid and start time)
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(export_dir / job.name), suffix=f".tmp{PACKAGE_SUFFIX}",
                                    dir=export_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        job.steps.run("aoti compile", _compile, job, program, tmp)
        records, _ = job.steps.run("aoti parity", _prove, job, tmp)
        entry = _entry(job, tmp, nodes, described, records)
        share_mode(tmp)
        with folder_lock(export_dir, "deploykit export --aoti"):  # the package and its entry land together
            os.replace(tmp, export_dir / job.name)
            manifest = _record(job, entry, records)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if hasattr(result_or_export_dir, "manifest"):
        result_or_export_dir.manifest = manifest
    return entry


def _resolve_device(device: str) -> str:
    device = str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError(f"--aoti on {device} needs a CUDA build of PyTorch and a GPU; "
                                      "this machine has none (use the CPU package: device='cpu')")
    if device != "cpu" and not device.startswith("cuda"):
        raise ExportError(f"AOTInductor device must be 'cpu', 'cuda[:N]' or 'auto', not '{device}'")
    return device


class _AotiJob:
    """What the AOTI steps share: the model, its export, the device, the shapes and the package name."""

    def __init__(self, spec, reference, manifest: dict, export_dir: Path, device: str, steps: Steps):
        self.spec, self.reference, self.manifest, self.export_dir = spec, reference, manifest, export_dir
        self.device, self.kind, self.steps = device, device.split(":")[0], steps
        self.static_hw = manifest.get("export", {}).get("static_hw")
        self.example, self.checks = parity_shapes(spec, static_hw=self.static_hw)
        self.inputs = [t.name for t in spec.inputs]
        self.output = spec.outputs[spec.image_output].name
        self.name = f"{_stem(manifest, spec)}.aoti.{self.kind}{PACKAGE_SUFFIX}"


def _torch_export(job: _AotiJob):
    """The same export-form module as the ONNX graph, through torch.export with dynamic N / H / W."""
    spec = job.spec
    module, _ = build_export_module(job.reference, spec, [job.example, *job.checks], _form_options(job.manifest))
    module = module.to(job.device).eval()
    dynamic, described = dynamic_shapes_for(spec, job.static_hw)
    try:
        with torch.no_grad():
            program = torch.export.export(module, _example_args(spec, job.example, job.device),
                                          dynamic_shapes=dynamic, strict=False)
    except Exception as exc:  # UserError / ConstraintViolation / unsupported ops
        raise ExportError(f"torch.export of {spec.name} with dynamic batch/height/width failed: "
                          f"{one_line(exc)}") from exc
    nodes = sum(1 for n in program.graph.nodes if n.op == "call_function")
    return program, described, nodes, f"{nodes} ops, dynamic {', '.join(described)}"


def _compile(job: _AotiJob, program, tmp: Path) -> tuple[int, str]:
    try:
        with strict_fp32(job.device):
            torch._inductor.aoti_compile_and_package(program, package_path=str(tmp))
    except Exception as exc:
        raise ExportError(f"AOTInductor compile of {job.spec.name} failed: {one_line(exc)}") from exc
    return tmp.stat().st_size, f"{tmp.stat().st_size / 2**20:.1f} MiB"


def _prove(job: _AotiJob, tmp: Path):
    """The compiled package against PyTorch eager FP32 on the same device (max abs <= 1e-4)."""
    eager = TorchBackend.for_image(job.reference, job.spec, device=job.device, name=f"torch-{job.kind}")
    candidate = AotiBackend(tmp, job.inputs, [job.output], device=job.device)
    with strict_fp32(job.device):
        records = check_parity(job.spec, eager, candidate, job.checks, outputs=[job.output])
    failed = [r for r in records if not r.passed]
    if failed:
        raise ParityError("AOTInductor parity failed: " + "; ".join(r.summary() for r in failed))
    return records, f"max abs {max(r.max_abs for r in records):.1e} at {len(records)} shapes"


def _entry(job: _AotiJob, tmp: Path, nodes: int, described: dict, records) -> dict:
    """The manifest's artifact entry of the package (what aoti_run reads)."""
    return {
        "kind": AOTI_KIND, "precision": "fp32", "file": job.name, "bytes": tmp.stat().st_size,
        "sha256": sha256_file(tmp), "device": job.kind, "nodes": nodes, "io_dtype": "float32",
        "inputs": job.inputs, "outputs": [job.output], "dynamic_dims": described,
        "example_shape": list(job.example), "model_name": PACKAGE_MODEL_NAME,
        "torch": torch.__version__, "cxx11_abi": bool(torch._C._GLIBCXX_USE_CXX11_ABI),
        "forms": _form_options(job.manifest),
        "loader": {"python": "torch._inductor.aoti_load_package",
                   "cpp": "torch::inductor::AOTIModelPackageLoader (cpp/src/aoti_run.cpp)"},
        "parity_summary": {"backend": records[0].backend, "passed": True,
                           "max_abs": max(r.max_abs for r in records),
                           "shapes": [r.shape for r in records], "tolerance": records[0].tolerance},
    }


def _record(job: _AotiJob, entry: dict, records) -> dict:
    """Manifest last, updated in place (another step may have written meanwhile): entry, parity, steps."""
    backend, step_names = records[0].backend, {s["step"] for s in job.steps.records}

    def record(manifest: dict) -> None:
        manifest["artifacts"] = [a for a in manifest.get("artifacts", [])
                                 if not (a.get("kind") == AOTI_KIND and a.get("file") == job.name)] + [entry]
        manifest["parity"] = [r for r in manifest.get("parity", []) if r.get("backend") != backend] + \
            [r.to_dict() for r in records]
        manifest["steps"] = [s for s in manifest.get("steps", []) if s.get("step") not in step_names] + \
            job.steps.records

    return update_manifest(job.export_dir, record)


__all__ = ["dynamic_shapes_for", "export_aoti"]
