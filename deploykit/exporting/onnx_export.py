"""ONNX export that checks what it wrote.

Exporters lie quietly: a dim asked to be dynamic can come out fixed (or H and W merged into one symbol), and
dynamo may keep opset 18 when 17 was asked. After every export the graph's I/O dims and opset are read back and
compared with what was requested; ``onnx.checker`` and shape inference run on the file.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch

from deploykit.errors import ExportError

EXPORTERS = ("legacy", "dynamo")
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
DEFAULT_OPSET = 18
TWO_GB = 2**31 - 1
# onnxruntime 1.31 reads IR versions up to 11; onnx 1.23 may stamp newer ones on freshly built models.
MAX_ORT_IR_VERSION = 11


@dataclass
class DimRequest:
    """What each graph input/output axis must be: an int (static) or a symbol name (dynamic)."""

    inputs: dict[str, list[int | str]]
    outputs: dict[str, list[int | str]]


@dataclass
class ExportRecord:
    exporter: str
    opset: int
    ir_version: int
    nodes: int
    warnings: list[str] = field(default_factory=list)


def dim_request(input_specs: list[tuple[str, int]], output_specs: list[tuple[str, int]],
                static_hw: tuple[int, int] | None, scale: int) -> DimRequest:
    """Dynamic N/H/W for every input and output (or fixed H, W with --static; batch stays dynamic)."""
    h, w = ("height", "width") if static_hw is None else static_hw
    oh, ow = ("out_height", "out_width") if static_hw is None else (static_hw[0] * scale, static_hw[1] * scale)
    if static_hw is None and scale == 1:
        oh, ow = h, w
    return DimRequest(
        inputs={name: ["batch", c, h, w] for name, c in input_specs},
        outputs={name: ["batch", c, oh, ow] for name, c in output_specs},
    )


def _dims(value_info) -> list[int | str | None]:
    out = []
    for d in value_info.type.tensor_type.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return out


def graph_io_dims(model: onnx.ModelProto) -> tuple[dict[str, list], dict[str, list]]:
    inits = {i.name for i in model.graph.initializer}
    ins = {v.name: _dims(v) for v in model.graph.input if v.name not in inits}
    outs = {v.name: _dims(v) for v in model.graph.output}
    return ins, outs


def check_dims(model: onnx.ModelProto, request: DimRequest, stage: str) -> None:
    """Fail when a requested dynamic dim came out fixed, a static dim differs, or H and W were merged."""
    got_in, got_out = graph_io_dims(model)
    problems = []
    for kind, wanted, got in (("input", request.inputs, got_in), ("output", request.outputs, got_out)):
        if list(wanted) != list(got):
            problems.append(f"{kind} names {list(got)} != requested {list(wanted)}")
            continue
        for name, dims in wanted.items():
            actual = got[name]
            if len(actual) != len(dims):
                problems.append(f"{kind} {name} has rank {len(actual)}, expected {len(dims)}")
                continue
            for axis, (want, have) in enumerate(zip(dims, actual)):
                if isinstance(want, str) and not isinstance(have, str):
                    problems.append(f"{kind} {name} axis {axis} ({want}) came out fixed to {have}")
                elif isinstance(want, int) and have != want and not (axis == 0 and isinstance(have, str)):
                    problems.append(f"{kind} {name} axis {axis} is {have}, expected {want}")
            if isinstance(dims[2], str) and isinstance(dims[3], str) and isinstance(actual[2], str) \
                    and actual[2] == actual[3]:
                problems.append(f"{kind} {name}: height and width were merged into one symbol '{actual[2]}'")
    if problems:
        raise ExportError(f"{stage}: the graph's dims are not what was requested: " + "; ".join(problems[:6]))


def opset_of(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def rename_dims(model: onnx.ModelProto, request: DimRequest) -> None:
    """Give dynamic axes the requested symbol names (dynamo writes s0, s1, …) so the manifest reads well."""
    wanted = {**request.inputs, **request.outputs}
    for value in list(model.graph.input) + list(model.graph.output):
        dims = wanted.get(value.name)
        if dims is None:
            continue
        for d, want in zip(value.type.tensor_type.shape.dim, dims):
            if isinstance(want, str) and d.HasField("dim_param"):
                d.dim_param = want


def _export_legacy(module, args, path, request: DimRequest, opset: int) -> list[str]:
    axes = {}
    for name, dims in {**request.inputs, **request.outputs}.items():
        axes[name] = {k: d for k, d in enumerate(dims) if isinstance(d, str)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset,
                          input_names=list(request.inputs), output_names=list(request.outputs),
                          dynamic_axes=axes, do_constant_folding=True)
    return sorted({str(w.message).splitlines()[0][:200] for w in caught
                   if "TracerWarning" in type(w.message).__name__ or "Tracer" in str(w.category)})


def _param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _shapes_for(module: torch.nn.Module, shapes: list[dict]) -> tuple:
    """torch.export matches dynamic_shapes to forward's signature: ``*inputs`` takes one nested tuple."""
    params = inspect.signature(module.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return (tuple(shapes),)
    return tuple(shapes)


def _first_error_line(exc: Exception) -> str:
    """The informative line of an exporter error (torch.export wraps the cause in a long preamble)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("<class"):
            return re.sub(r"\x1b\[[0-9;]*m", "", ln)
    return re.sub(r"\x1b\[[0-9;]*m", "", lines[0]) if lines else type(exc).__name__


def _export_dynamo(module, args, path, request: DimRequest, opset: int) -> list[str]:
    from torch.export import Dim

    dims: dict[str, Dim] = {}
    shapes = []
    for name, want in request.inputs.items():
        spec = {}
        for axis, d in enumerate(want):
            if isinstance(d, str):
                spec[axis] = dims.setdefault(d, Dim(d, min=1) if d == "batch" else Dim(d, min=2))
        shapes.append(spec)
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    onnx_logger = logging.getLogger("torch.onnx")
    onnx_logger.addHandler(handler)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, args, dynamo=True, opset_version=opset,
                                        input_names=list(request.inputs), output_names=list(request.outputs),
                                        dynamic_shapes=_shapes_for(module, shapes), optimize=True, verbose=False)
        program.save(str(path), external_data=_param_bytes(module) >= TWO_GB)
    finally:
        onnx_logger.removeHandler(handler)
    return [line for line in log.getvalue().splitlines()
            if line.strip() and "torchvision is not installed" not in line][:20]


def export_onnx(module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: str | Path, request: DimRequest, *,
                exporter: str, opset: int = DEFAULT_OPSET) -> tuple[onnx.ModelProto, ExportRecord]:
    """Export, then load and verify: dims as requested, opset as asked, checker and shape inference pass."""
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter '{exporter}' (use one of {', '.join(EXPORTERS)})")
    path = Path(path)
    try:
        with torch.inference_mode(False), torch.no_grad():
            notes = (_export_legacy if exporter == "legacy" else _export_dynamo)(module, args, path, request, opset)
    except ExportError:
        raise
    except Exception as exc:  # exporters raise anything from TypeError to torch._dynamo errors
        raise ExportError(f"{exporter} exporter failed: {type(exc).__name__}: {_first_error_line(exc)[:300]}") from exc
    model = onnx.load(str(path))
    written = opset_of(model)
    if written != opset:
        raise ExportError(f"{exporter} exporter wrote opset {written} although {opset} was asked")
    rename_dims(model, request)
    check_dims(model, request, f"{exporter} export")
    finalize(model)
    return model, ExportRecord(exporter, written, model.ir_version, len(model.graph.node), notes)


def finalize(model: onnx.ModelProto) -> None:
    """Checker + typed shape inference, and an IR version the pinned onnxruntime loads.

    Not strict mode: it rejects symbolic dims that are equal but written differently (MIRNet-v2 dynamo graphs
    concat `((H-1)//2)+1` with `2*((H-1)//4)+2`, equal for every H the contract allows).
    """
    model.ir_version = min(model.ir_version, MAX_ORT_IR_VERSION)
    try:
        if model.ByteSize() < TWO_GB:
            onnx.checker.check_model(model)
            onnx.shape_inference.infer_shapes(model, check_type=True)
    except Exception as exc:
        raise ExportError(f"onnx checker / shape inference rejected the graph: {str(exc)[:300]}") from exc


def external_data_file(path: str | Path) -> Path:
    """The sidecar that holds the weights of a graph over protobuf's 2 GB limit."""
    path = Path(path)
    return path.with_name(path.name + ".data")


def save_onnx(model: onnx.ModelProto, path: str | Path) -> list[Path]:
    """Save in one file when it fits protobuf's 2 GB limit, else with a ``.data`` sidecar; returns the files."""
    path = Path(path)
    data = external_data_file(path)
    data.unlink(missing_ok=True)
    if model.ByteSize() < TWO_GB:
        onnx.save_model(model, str(path))
        return [path]
    # saving with external data rewrites the proto in place (tensors become file references): save a copy so
    # the caller's model stays self-contained for the next step
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    onnx.save_model(copy, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=1024)
    try:  # in-memory checks cannot see past 2 GB; the path-based checker reads the sidecar
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise ExportError(f"onnx checker rejected {path.name}: {str(exc)[:300]}") from exc
    return [path, data]
