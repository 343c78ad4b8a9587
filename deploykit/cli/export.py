"""``deploykit export``: parse, call deploykit.exporting, print (``deploykit parity`` lives in cli/parity.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from deploykit.cli.console import console, print_step


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
    fp16_policy: Annotated[str, typer.Option(help="FP32 islands of the FP16 ONNX: spec (the zoo's op types) or "
                                                  "auto (measured on --calib images)")] = "spec",
    calib: Annotated[Optional[list[Path]], typer.Option(help="--fp16-policy auto: calibration photo or folder "
                                                             "(repeatable; default a synthetic image)")] = None,
    fp16_max_res: Annotated[int, typer.Option(help="--fp16-policy auto: prove no overflow up to this input side")] = 2048,
    min_psnr: Annotated[Optional[float], typer.Option(help="--fp16-policy auto: PSNR floor vs FP32 in dB "
                                                           "(default 50)")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="fail at once if another run is writing the "
                                                            "export folder (default: wait for it)")] = False,
) -> None:
    """Export to ONNX (FP32 + FP16), simplify, prove parity against PyTorch, write the manifest."""
    from deploykit.exporting.pipeline import export
    from deploykit.util.locks import lock_policy

    if weights is None:
        console.print("[bold yellow]note:[/] no --weights: exporting a seeded random initialisation "
                      f"(seed {seed}); the graph is real, its outputs are not meaningful images.")
    with lock_policy(wait=not no_wait):
        result = export(name, weights=weights, out=out, opset=opset, static=static, fp16=fp16,
                        simplify_graph=simplify, simplifier=simplifier, exporter=exporter, forms=form, seed=seed,
                        unsafe_pickle=unsafe_pickle, trt={"precision": "fp16", "res": trt_res} if trt else None,
                        aoti=aoti_device if aoti else False, fp16_policy=fp16_policy, calib=calib,
                        fp16_max_res=fp16_max_res, min_psnr=min_psnr, on_step=print_step)
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


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
