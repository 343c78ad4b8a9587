"""``deploykit parity``: the parity gate (deploykit.verify.gate) -- parse, run, print, write the reports.

Exit codes: 0 every case passed, 1 a case failed, 2 bad input or a case that could not run here (one line)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from deploykit.cli.console import console, fail


def _split(values: Optional[list[str]]) -> list[str] | None:
    return [p.strip() for v in values for p in v.split(",") if p.strip()] if values else None


def _table(report) -> Table:
    table = Table(title=f"parity of {report.model} ({report.inputs})")
    for col in ("case", "backend", "max abs", "mean abs", "PSNR dB", "NaN/Inf", "worst (x,y)", "plan", "result"):
        table.add_column(col, no_wrap=True)
    for c in report.cases:
        if c.status == "skipped":
            table.add_row(c.key, f"{c.backend}/{c.precision}", "", "", "", "", "", "", "[yellow]skipped[/]")
            continue
        y, x, _, _ = c.worst_box
        table.add_row(c.key, f"{c.backend}/{c.precision}", f"{c.max_abs:.2e}", f"{c.mean_abs:.2e}",
                      f"{c.psnr_db:.2f}", str(c.nonfinite), f"{x},{y}", c.plan,
                      "[green]pass[/]" if c.passed else "[red]FAIL[/]")
    return table


def _writable(path: Optional[Path], option: str) -> None:
    from deploykit.errors import InputError

    if path is not None and not path.resolve().parent.is_dir():
        raise InputError(f"{option} {path}: the folder {path.parent} does not exist")


def parity_cmd(
    path: Annotated[Path, typer.Argument(help="an export directory, its manifest.json, or one of its .onnx files")],
    images: Annotated[Optional[list[str]], typer.Option(help="image files or folders (default: seeded random)")] = None,
    res: Annotated[Optional[list[str]], typer.Option(help="input sizes, e.g. 512,1920x1080,2048")] = None,
    batch: Annotated[int, typer.Option(help="images per run (the image and its flips)")] = 1,
    backend: Annotated[Optional[list[str]], typer.Option(help="ort, ort-cuda, ort-tensorrt, trt, aoti")] = None,
    precision: Annotated[Optional[list[str]], typer.Option(help="fp32,fp16 (default: the export's)")] = None,
    min_psnr: Annotated[Optional[float], typer.Option(help="PSNR floor in dB for every case")] = None,
    max_abs: Annotated[Optional[float], typer.Option(help="max abs difference for every case")] = None,
    tile: Annotated[str, typer.Option(help="'auto' (tiles when a size does not fit whole), a size, 'none'")] = "auto",
    junit: Annotated[Optional[Path], typer.Option(help="write a JUnit XML report")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the JSON report")] = None,
    html_out: Annotated[Optional[Path], typer.Option("--html", help="write the self-contained HTML report")] = None,
    save_golden: Annotated[Optional[Path], typer.Option(help="write inputs + PyTorch FP32 outputs as a golden")] = None,
    golden: Annotated[Optional[Path], typer.Option(help="check against a golden instead of PyTorch (no torch)")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="checkpoint to use instead of the one recorded")] = None,
    unsafe_pickle: Annotated[bool, typer.Option(help="allow pickled code in the weights file")] = False,
    seed: Annotated[int, typer.Option(help="seed of the random inputs (without --images)")] = 1,
) -> None:
    """Parity gate: every input x resolution x backend x precision against PyTorch FP32 (or a golden)."""
    from deploykit.errors import BackendUnavailableError
    from deploykit.verify.gate import check
    from deploykit.verify.reports import write_json, write_junit

    for value, option in ((junit, "--junit"), (json_out, "--json"), (html_out, "--html")):
        _writable(value, option)
    report = check(path, images=_split(images), res=_split(res), batch=batch, backends=_split(backend) or ["ort"],
                   precisions=_split(precision), min_psnr=min_psnr, max_abs=max_abs, tile=tile,
                   save_golden=save_golden, golden=golden, weights=weights, unsafe_pickle=unsafe_pickle, seed=seed)
    console.print(_table(report))
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)
    written = [write_junit(report, junit) if junit else None, write_json(report, json_out) if json_out else None]
    if html_out:
        from deploykit.verify.html import write_html

        written.append(write_html(report, html_out))
    if report.golden_saved:
        written.append(report.golden_saved)
    for item in filter(None, written):
        console.print(f"wrote {item}", highlight=False)
    if report.exit_code == 1:
        fail(report.verdict())
    if report.exit_code == 2:
        raise BackendUnavailableError(report.verdict())
    console.print(f"[green]{report.verdict()}[/]", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("parity")(parity_cmd)
