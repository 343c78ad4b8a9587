"""AOTInductor packages: the export's module as a compiled ``.pt2`` that C++ loads without Python.

``export_aoti(export_dir)`` takes an existing export (its manifest says which model, weights and forms), rebuilds
the PyTorch FP32 reference, rebuilds the same export-form module the ONNX graph came from, runs ``torch.export``
with dynamic batch / height / width (height and width as multiples of the shape contract's ``multiple_of``; one dim
for both when the model is square-only; only the batch when the export was made with ``--static``), and compiles it
with ``torch._inductor.aoti_compile_and_package``.

The package is compiled to a hidden temp file in the export directory, loaded back with
``torch._inductor.aoti_load_package`` and compared with PyTorch eager at two shapes (max abs <= 1e-4). Only then is
it renamed into place (``os.replace``) and recorded in the manifest (``artifacts`` entry of kind ``aoti``, records
under ``parity``; every other key kept; ``write_json_atomic``). A failed compile or parity check leaves no package
and the previous one, if any, untouched.

The C++ side is ``cpp/src/aoti_run.cpp`` (``torch::inductor::AOTIModelPackageLoader``), built by
``deploykit cpp build``; see docs/cpp.md.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from deploykit.artifacts import share_mode, write_json_atomic
from deploykit.backends.torch_backend import CallableBackend, strict_fp32
from deploykit.errors import ArtifactError, BackendUnavailableError, ExportError, ParityError
from deploykit.factory import build_recorded_model
from deploykit.manifest import MANIFEST_NAME, read_manifest
from deploykit.parity import check_parity

AOTI_KIND = "aoti"
PACKAGE_SUFFIX = ".pt2"
PACKAGE_MODEL_NAME = "model"  # the name aoti_compile_and_package gives the model inside the package


class AotiBackend(CallableBackend):
    """An AOTInductor package behind the common Backend interface (``run(feed)`` -> named float32 arrays)."""

    precision = "fp32"

    def __init__(self, path: str | Path, input_names: list[str], output_names: list[str], *, device: str = "cpu"):
        self.path = Path(path)
        self.name = f"aoti-{device.split(':')[0]}"
        try:
            package = torch._inductor.aoti_load_package(str(self.path))
        except Exception as exc:  # torch raises RuntimeError / zipfile errors for a bad package
            raise ArtifactError(f"cannot load AOTInductor package {self.path}: {' '.join(str(exc).split())[:300]}") \
                from exc
        super().__init__(package, input_names, output_names, device=device)


def _export_dir(result_or_export_dir) -> Path:
    """ExportResult / export directory / its manifest.json -> the export directory."""
    path = Path(getattr(result_or_export_dir, "out_dir", result_or_export_dir))
    return path.parent if path.name == MANIFEST_NAME else path


def _form_options(manifest: dict) -> dict[str, str]:
    """The form options the ONNX export used, read back from the manifest (``image-output`` is not an option)."""
    from deploykit.forms import FORMS

    known = {f.name for f in FORMS}
    return {r["name"]: r["option"] for r in manifest.get("forms", []) if r.get("name") in known}


def _stem(manifest: dict, spec) -> str:
    for artifact in manifest.get("artifacts", []):
        if artifact.get("kind", "onnx") == "onnx" and artifact["file"].endswith(".fp32.onnx"):
            return artifact["file"][: -len(".fp32.onnx")]
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
    from deploykit.inputs import random_inputs

    feed = random_inputs(spec, shape, seed=0)
    return tuple(torch.from_numpy(feed[t.name]).to(device) for t in spec.inputs)


def _one_line(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def export_aoti(result_or_export_dir, *, device: str = "cpu", on_step=None, unsafe_pickle: bool = False) -> dict:
    """Compile the export's module to an AOTInductor package next to the ONNX files, prove it, record it.

    ``result_or_export_dir``: an ``ExportResult`` (its ``manifest`` is refreshed in place), an export directory or
    its ``manifest.json``. ``device``: ``"cpu"``, ``"cuda"`` / ``"cuda:N"`` (the package runs on that device
    only) or ``"auto"`` (CUDA when torch has it, else CPU). ``on_step(step, status, seconds, detail)`` as in ``deploykit.export_pipeline``. ``unsafe_pickle``: as the
    export was run (the recorded weights are loaded again to rebuild the reference).

    Returns the manifest's artifact entry (kind ``aoti``: file, sha256, bytes, device, dynamic dims, torch version,
    ``parity_summary``). Raises ExportError (export / compile), ParityError (> 1e-4 against PyTorch FP32),
    ArtifactError (manifest, weights) or BackendUnavailableError (CUDA asked for, none here).
    """
    from deploykit.backends import TorchBackend
    from deploykit.export_pipeline import _Steps
    from deploykit.forms import ImageOutput, build_export_module
    from deploykit.inputs import parity_shapes

    device = str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError(f"--aoti on {device} needs a CUDA build of PyTorch and a GPU; "
                                      "this machine has none (use the CPU package: device='cpu')")
    if device != "cpu" and not device.startswith("cuda"):
        raise ExportError(f"AOTInductor device must be 'cpu', 'cuda[:N]' or 'auto', not '{device}'")
    export_dir = _export_dir(result_or_export_dir)
    manifest = read_manifest(export_dir)
    steps = _Steps(on_step)
    reference, spec = build_recorded_model(manifest, unsafe_pickle=unsafe_pickle)
    static_hw = manifest.get("export", {}).get("static_hw")
    example, checks = parity_shapes(spec)
    if static_hw:
        example, checks = (2, *static_hw), [(1, *static_hw), (2, *static_hw)]
    inputs = [t.name for t in spec.inputs]
    output = spec.outputs[spec.image_output].name
    kind = device.split(":")[0]
    name = f"{_stem(manifest, spec)}.aoti.{kind}{PACKAGE_SUFFIX}"

    # 1. the same export-form module as the ONNX graph, then torch.export with dynamic N / H / W --------------
    def _export():
        module, _ = build_export_module(reference, spec, [example, *checks], _form_options(manifest))
        module = module.to(device).eval()
        dynamic, described = dynamic_shapes_for(spec, static_hw)
        try:
            with torch.no_grad():
                program = torch.export.export(module, _example_args(spec, example, device), dynamic_shapes=dynamic,
                                              strict=False)
        except Exception as exc:  # UserError / ConstraintViolation / unsupported ops
            raise ExportError(f"torch.export of {spec.name} with dynamic batch/height/width failed: "
                              f"{_one_line(exc)}") from exc
        nodes = sum(1 for n in program.graph.nodes if n.op == "call_function")
        return program, described, nodes, f"{nodes} ops, dynamic {', '.join(described)}"

    program, described, nodes, _ = steps.run("aoti export", _export)

    # 2. compile to a hidden temp file in the export dir; 3. parity; 4. rename into place ---------------------
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=f".tmp{PACKAGE_SUFFIX}", dir=export_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        def _compile():
            try:
                with strict_fp32(device):
                    torch._inductor.aoti_compile_and_package(program, package_path=str(tmp))
            except Exception as exc:
                raise ExportError(f"AOTInductor compile of {spec.name} failed: {_one_line(exc)}") from exc
            return tmp.stat().st_size, f"{tmp.stat().st_size / 2**20:.1f} MiB"

        steps.run("aoti compile", _compile)

        def _parity():
            eager = TorchBackend(ImageOutput(reference, spec.image_output), inputs, [output], device=device,
                                 name=f"torch-{kind}")
            candidate = AotiBackend(tmp, inputs, [output], device=device)
            with strict_fp32(device):
                records = check_parity(spec, eager, candidate, checks, outputs=[output])
            failed = [r for r in records if not r.passed]
            if failed:
                raise ParityError("AOTInductor parity failed: " + "; ".join(r.summary() for r in failed))
            return records, f"max abs {max(r.max_abs for r in records):.1e} at {len(records)} shapes"

        records, _ = steps.run("aoti parity", _parity)
        entry = {
            "kind": AOTI_KIND, "precision": "fp32", "file": name, "bytes": tmp.stat().st_size,
            "sha256": _sha256(tmp), "device": kind, "nodes": nodes, "io_dtype": "float32",
            "inputs": inputs, "outputs": [output], "dynamic_dims": described,
            "example_shape": list(example), "model_name": PACKAGE_MODEL_NAME,
            "torch": torch.__version__, "cxx11_abi": bool(torch._C._GLIBCXX_USE_CXX11_ABI),
            "forms": _form_options(manifest),
            "loader": {"python": "torch._inductor.aoti_load_package",
                       "cpp": "torch::inductor::AOTIModelPackageLoader (cpp/src/aoti_run.cpp)"},
            "parity_summary": {"backend": records[0].backend, "passed": True,
                               "max_abs": max(r.max_abs for r in records),
                               "shapes": [r.shape for r in records], "tolerance": records[0].tolerance},
        }
        share_mode(tmp)
        os.replace(tmp, export_dir / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

    # 5. manifest last: re-read (another step may have written meanwhile), upsert, atomic write ----------------
    manifest = read_manifest(export_dir)
    manifest["artifacts"] = [a for a in manifest.get("artifacts", [])
                             if not (a.get("kind") == AOTI_KIND and a.get("file") == name)] + [entry]
    backend = records[0].backend
    manifest["parity"] = [r for r in manifest.get("parity", []) if r.get("backend") != backend] + \
        [r.to_dict() for r in records]
    step_names = {s["step"] for s in steps.records}
    manifest["steps"] = [s for s in manifest.get("steps", []) if s.get("step") not in step_names] + steps.records
    write_json_atomic(export_dir / MANIFEST_NAME, manifest)
    if hasattr(result_or_export_dir, "manifest"):
        result_or_export_dir.manifest = manifest
    return entry


def _sha256(path: Path) -> str:
    from deploykit.checkpoints import sha256_file

    return sha256_file(path)


def find_aoti_artifact(manifest: dict, device: str = "cpu") -> dict:
    """The manifest's AOTInductor entry for ``device`` (ArtifactError naming the command when there is none)."""
    kind = str(device).split(":")[0]
    for artifact in manifest.get("artifacts", []):
        if artifact.get("kind") == AOTI_KIND and artifact.get("device") == kind:
            return artifact
    raise ArtifactError(f"no {kind} AOTInductor package is recorded in this manifest; run "
                        f"'deploykit export {manifest.get('model', {}).get('name', 'MODEL')} --aoti' first")


__all__ = ["AOTI_KIND", "AotiBackend", "dynamic_shapes_for", "export_aoti", "find_aoti_artifact"]
