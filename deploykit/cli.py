"""The ``deploykit`` command: parse, call the library, print with rich. No logic of its own."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from deploykit.cli_common import console, err_console, print_step
from deploykit.errors import DeployKitError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Export PyTorch image-restoration models to ONNX / TensorRT with proven parity.")

# commands that live next to their library module register themselves here
from deploykit import cli_bench, cli_cpp, cli_infer, cli_triton, cli_trt  # noqa: E402

cli_infer.register(app)
cli_bench.register(app)
cli_trt.register(app)
cli_cpp.register(app)
cli_triton.register(app)


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} K"


@app.command("list")
def list_cmd() -> None:
    """Table of every model family and its variants."""
    from deploykit.zoo import families

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


@app.command("info")
def info_cmd(name: Annotated[str, typer.Argument(help="NAME or NAME:VARIANT")]) -> None:
    """Everything the zoo knows about one variant (shape contract, I/O, checkpoint, FP16 policy)."""
    from deploykit.zoo import get_spec

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
    if spec.notes:
        rows.append(("notes", spec.notes))
    for key, value in rows:
        table.add_row(key, escape(value))
    console.print(table)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


def _parity_table(records: list[dict], title: str) -> Table:
    table = Table(title=title)
    for col in ("backend", "prec", "output shape", "max abs", "mean abs", "PSNR dB", "NaN/Inf", "result"):
        table.add_column(col, no_wrap=True)
    for r in records:
        table.add_row(r["backend"], r["precision"], "x".join(map(str, r["shape"])),
                      f"{r['max_abs']:.2e}", f"{r['mean_abs']:.2e}", f"{r['psnr_db']:.1f}", str(r["nonfinite"]),
                      "[green]pass[/]" if r["passed"] else "[red]FAIL[/]")
    return table


@app.command("export")
def export_cmd(
    name: Annotated[str, typer.Argument(help="NAME or NAME:VARIANT (see 'deploykit list')")],
    weights: Annotated[Optional[Path], typer.Option(help="official checkpoint file (.pth/.pt)")] = None,
    out: Annotated[Path, typer.Option(help="output root; files go to OUT/<model>/<variant>/")] = Path("exports"),
    opset: Annotated[int, typer.Option(help="ONNX opset to write (checked after export)")] = 18,
    static: Annotated[Optional[str], typer.Option(help="fixed HxW instead of dynamic height/width")] = None,
    fp16: Annotated[bool, typer.Option("--fp16/--no-fp16", help="also write the mixed-precision FP16 ONNX")] = True,
    simplify: Annotated[bool, typer.Option("--simplify/--no-simplify", help="simplify the graph")] = True,
    simplifier: Annotated[str, typer.Option(help="onnxslim or onnxsim")] = "onnxslim",
    exporter: Annotated[str, typer.Option(help="auto (per-model choice), dynamo or legacy")] = "auto",
    form: Annotated[Optional[list[str]], typer.Option(help="export form option, e.g. pixelconv=unfold")] = None,
    seed: Annotated[int, typer.Option(help="seed for random init when no --weights")] = 0,
    unsafe_pickle: Annotated[bool, typer.Option(help="allow pickled code in --weights (only for trusted files)")] = False,
    trt: Annotated[bool, typer.Option("--trt/--no-trt", help="also build a TensorRT engine (needs TensorRT + GPU)")] = False,
    trt_res: Annotated[Optional[str], typer.Option(help="engine resolutions for --trt, e.g. 512,1024,2048")] = None,
    aoti: Annotated[bool, typer.Option("--aoti/--no-aoti",
                                       help="also compile an AOTInductor package for the C++ runner")] = False,
    aoti_device: Annotated[str, typer.Option(help="--aoti package device: auto, cpu or cuda")] = "auto",
) -> None:
    """Export to ONNX (FP32 + FP16), simplify, prove parity against PyTorch, write the manifest."""
    from deploykit.export_pipeline import export

    if weights is None:
        console.print("[bold yellow]note:[/] no --weights: exporting a seeded random initialisation "
                      f"(seed {seed}); the graph is real, its outputs are not meaningful images.")
    result = export(name, weights=weights, out=out, opset=opset, static=static, fp16=fp16, simplify_graph=simplify,
                    simplifier=simplifier, exporter=exporter, forms=form, seed=seed, unsafe_pickle=unsafe_pickle,
                    trt={"precision": "fp16", "res": trt_res} if trt else None,
                    aoti=aoti_device if aoti else False, on_step=print_step)
    m = result.manifest
    files = Table(title=f"{result.spec.name} -> {result.out_dir}")
    for col in ("file", "precision", "size", "nodes", "sha256"):
        files.add_column(col)
    for a in m["artifacts"]:
        files.add_row(a["file"], a["precision"], _size(a["bytes"]), str(a["nodes"]), a["sha256"][:12])
    files.add_row("manifest.json", "", "", "", "")
    console.print(files)
    s = m["simplify"]
    console.print(f"exporter {m['export']['exporter']}, opset {m['export']['opset']}; nodes {s['nodes_before']} -> "
                  f"{s['nodes_after']} ({s['simplifier'] or 'not simplified'}"
                  f"{'' if s['applied'] else ', kept unsimplified'})", highlight=False)
    console.print(_parity_table(m["parity"], "parity vs PyTorch FP32"))
    console.print("steps: " + ", ".join(f"{st['step']} {st['seconds']:.1f}s" for st in result.steps), highlight=False)


@app.command("parity")
def parity_cmd(
    path: Annotated[Path, typer.Argument(help="an export directory, its manifest.json, or one of its .onnx files")],
    weights: Annotated[Optional[Path], typer.Option(help="checkpoint to use instead of the one recorded")] = None,
    unsafe_pickle: Annotated[bool, typer.Option(help="allow pickled code in the weights file")] = False,
) -> None:
    """Re-run parity on existing artifacts against a freshly built PyTorch FP32 reference."""
    from deploykit.reparity import rerun_parity

    records = rerun_parity(path, weights=weights, unsafe_pickle=unsafe_pickle)
    console.print(_parity_table([r.to_dict() for r in records], f"parity of {path}"))
    if not all(r.passed for r in records):
        err_console.print("[bold red]error:[/] parity failed")
        raise typer.Exit(1)


@app.command("doctor")
def doctor_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="print the checks as JSON")] = False,
) -> None:
    """What this machine can run (export, ONNX Runtime CPU/GPU, TensorRT, C++ runners, Triton) and what to install."""
    import json

    from deploykit.doctor import MISSING, OK, run_checks

    checks = run_checks()
    if as_json:
        typer.echo(json.dumps([c.to_dict() for c in checks], indent=2))  # plain: no markup, no wrapping
        return
    table = Table(title="deploykit doctor")
    for col in ("area", "check", "status", "detail", "to fix"):
        table.add_column(col, overflow="fold")
    colour = {OK: "green", MISSING: "yellow"}
    for c in checks:
        table.add_row(c.area, c.name, f"[{colour.get(c.status, 'red')}]{c.status}[/]", escape(c.detail),
                      escape(c.fix) if c.status != OK else "")
    console.print(table)


def _usage_error_type() -> type[Exception]:
    """typer's usage-error base (``ClickException``): typer 0.29+ carries its own copy of click as ``typer._click``,
    older releases re-export click's; ``typer.BadParameter`` derives from it on both, so no click import."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def main() -> None:
    """Console-script entry: one-line errors and a non-zero exit code instead of tracebacks; usage errors print
    typer's usage line and reason and exit 2."""
    try:
        code = app(standalone_mode=False)
    except DeployKitError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Exit, SystemExit) as exc:
        sys.exit(getattr(exc, "exit_code", getattr(exc, "code", 0)))
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted; previous artifacts are left intact")
        sys.exit(130)
    except _usage_error_type() as exc:  # unknown option/command, bad value, missing argument
        exc.show()
        sys.exit(exc.exit_code)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
