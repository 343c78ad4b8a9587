"""``deploykit list`` and ``deploykit info``: the zoo as tables."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from deploykit.cli.console import console


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} K"


def list_cmd() -> None:
    """Table of every model family and its variants."""
    from deploykit.zoo.registry import families

    table = Table(title="deploykit model zoo (* = default variant)")
    for col in ("model", "variants", "task", "scale", "params", "mult.", "inputs"):
        table.add_column(col, overflow="fold")
    total = 0
    for fam in families().values():
        default = fam.variants[fam.default]
        variants = [v + ("*" if v == fam.default else "") for v in fam.variants]
        total += len(variants)
        scales = sorted({s.scale for s in fam.variants.values()})
        params = sorted({s.params for s in fam.variants.values()})
        table.add_row(
            fam.name, "\n".join(variants), fam.task,
            "/".join(f"x{s}" for s in scales),
            "–".join(_fmt_params(p) for p in (params[0], params[-1])) if len(params) > 1
            else _fmt_params(params[0]),
            str(default.multiple_of),
            ", ".join(f"{i.name}[{i.channels}]" for i in default.inputs),
        )
    console.print(table)
    console.print(f"{len(families())} families, {total} variants. Use NAME or NAME:VARIANT, "
                  "e.g. 'deploykit info vapsr:s_x4'.")


def info_cmd(name: Annotated[str, typer.Argument(help="NAME or NAME:VARIANT")]) -> None:
    """Everything the zoo knows about one variant (shape contract, I/O, checkpoint, FP16 policy)."""
    from deploykit.zoo.registry import get_spec

    spec = get_spec(name)
    table = Table(title=spec.name, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("task", spec.task),
        ("source", spec.source),
        ("parameters", f"{spec.params:,}"),
        ("scale", f"x{spec.scale}"),
        ("inputs", "; ".join(f"{i.name} [N,{i.channels},H,W] {i.description}" for i in spec.inputs)),
        ("outputs", "; ".join(f"{o.name} [N,{o.channels},{spec.scale}H,{spec.scale}W]"
                              + (" (the image)" if k == spec.image_output else "")
                              for k, o in enumerate(spec.outputs))),
        ("shape contract", f"multiple_of {spec.multiple_of}, min {spec.min_size}, "
                           f"{'square only' if spec.square else 'any aspect'}"),
        ("value range", f"{spec.value_range[0]:g}..{spec.value_range[1]:g}"),
        ("checkpoint", f"keys {'/'.join(spec.checkpoint.keys)}"
                       + (f"; legacy layouts: {', '.join(spec.checkpoint.legacy)}" if spec.checkpoint.legacy else "")
                       + (f"; {spec.checkpoint.notes}" if spec.checkpoint.notes else "")),
        ("fp16", (f"FP32 islands: {', '.join(spec.fp16.keep_fp32_ops) or 'none'}; "
                  f"PSNR floor {spec.fp16.min_psnr_db:g} dB") + (f"; {spec.fp16.notes}" if spec.fp16.notes else "")),
    ]
    rows.append(("TensorRT sizes", _size_row(spec)))
    if spec.notes:
        rows.append(("notes", spec.notes))
    for key, value in rows:
        table.add_row(key, escape(value))
    console.print(table)



def _size_row(spec) -> str:
    """TensorRT's 2^31 elements per tensor at 2560^2 and 8192^2, and the largest safe square input (batch 1), from
    the exported FP32 graph under ./exports when there is one, else from a PyTorch meta-device trace."""
    from deploykit.artifacts.lookup import export_dir, onnx_artifact
    from deploykit.artifacts.manifest import read_manifest
    from deploykit.trt.plan import REPORT_SIDES, TRT_MAX_ELEMENTS, onnx_tensor_sizes

    sizes = None
    try:
        folder = export_dir(spec, "exports")
        art = onnx_artifact(read_manifest(folder), "fp32") if (folder / "manifest.json").is_file() else None
        if art and (folder / art["file"]).is_file():
            sizes = onnx_tensor_sizes(folder / art["file"])
            sizes.source = f"shape inference on {folder / art['file']}"
    except Exception:  # a damaged export: fall back to the trace
        sizes = None
    if sizes is None:
        from deploykit.exporting.tensor_sizes import traced_tensor_sizes

        sizes = traced_tensor_sizes(spec)
    parts = []
    for side in REPORT_SIDES:
        count = sizes.largest((side, side))[1]
        parts.append(f"largest tensor at {side}x{side}: {count:,} elements"
                     f" ({'ok' if count <= TRT_MAX_ELEMENTS else 'over 2^31-1: cannot build'})")
    safe = sizes.largest_safe_side(multiple_of=spec.multiple_of)
    return "; ".join(parts) + f"; largest safe square input {safe}x{safe} (batch 1; {sizes.source})"


def register(app: typer.Typer) -> None:
    app.command("list")(list_cmd)
    app.command("info")(info_cmd)
