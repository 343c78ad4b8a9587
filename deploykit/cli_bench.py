"""``deploykit bench``: thin command over :func:`deploykit.bench.run_bench` and :mod:`deploykit.bench_report`.

``cli.py`` adds it with ``from deploykit.cli_bench import register; register(app)``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

console = Console(width=None if sys.stdout.isatty() else 220)  # logs and pipes get the whole table
err_console = Console(stderr=True)

_STYLE = {"info": "cyan", "export": "magenta", "start": "cyan", "done": "green", "skip": "yellow", "error": "red"}
_MARK = {"info": "•", "export": "⇢", "start": "…", "done": "✓", "skip": "–", "error": "✗"}


def _print_event(kind: str, message: str) -> None:
    style = _STYLE.get(kind, "white")
    console.print(f"[{style}]{_MARK.get(kind, '•')}[/] {escape(message)}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command to ``app``."""

    @app.command("bench")
    def bench_cmd(
        models: Annotated[Optional[list[str]], typer.Argument(
            help="MODEL[:VARIANT] ... (default: every export under --exports)", show_default=False)] = None,
        res: Annotated[Optional[list[str]], typer.Option(
            "--res", help="input sizes: N (NxN) or WIDTHxHEIGHT, comma-separated or repeated "
                          "(default: 256,512,1024,2048)", show_default=False)] = None,
        backend: Annotated[Optional[list[str]], typer.Option(
            "--backend", help="auto|torch|torch-compile|ort|ort-cuda|trt, comma-separated or repeated; auto = every "
                              "backend available here (default: auto)", show_default=False)] = None,
        precision: Annotated[Optional[list[str]], typer.Option(
            "--precision", help="fp32,fp16 (default: fp32 on CPU, fp32,fp16 with a CUDA GPU)",
            show_default=False)] = None,
        batch: Annotated[int, typer.Option(help="images per run (with --tile: tiles per run)")] = 1,
        warmup: Annotated[int, typer.Option(help="warm-up runs (the first run is also reported on its own)")] = 2,
        iters: Annotated[Optional[int], typer.Option(help="timed runs (with --seconds: whichever ends first)")] = None,
        seconds: Annotated[Optional[float], typer.Option(
            help="time budget for the timed runs, at least one run (default: 3 s when --iters is not given)",
            show_default=False)] = None,
        tile: Annotated[Optional[int], typer.Option(help="run each image in tiles of this size (input pixels)")] = None,
        overlap: Annotated[int, typer.Option(help="tile overlap in input pixels (with --tile)")] = 32,
        threads: Annotated[Optional[int], typer.Option(
            help="intra-op threads for PyTorch and ONNX Runtime (default: the visible CPUs)", show_default=False)] = None,
        out: Annotated[Path, typer.Option(help="results root; files go to OUT/<device-slug>/")] = Path("benchmarks/results"),
        name: Annotated[Optional[str], typer.Option(help="file stem for the JSON/CSV/PNG (default: bench-<UTC time>)",
                                                    show_default=False)] = None,
        exports: Annotated[Path, typer.Option(help="where exported models are looked up")] = Path("exports"),
        cache_dir: Annotated[Optional[Path], typer.Option(
            help="where models without an export are exported on the fly (default: ~/.cache/deploykit/bench-exports)",
            show_default=False)] = None,
    ) -> None:
        """Latency x resolution x backend x precision with FLOPs, memory and parity vs PyTorch FP32 -> table, JSON,
        CSV, PNG. Resolutions that cannot fit in memory are skipped with the estimate and a --tile hint."""
        from deploykit.bench import DEFAULT_RES, run_bench
        from deploykit.bench_report import rich_table, write_all

        command = ["deploykit", *sys.argv[1:]] if Path(sys.argv[0]).name in ("deploykit", "cli.py") else list(sys.argv)
        result = run_bench(models, res=res or DEFAULT_RES, backends=backend, precisions=precision, batch=batch,
                           warmup=warmup, iters=iters, seconds=seconds, tile=tile, overlap=overlap, threads=threads,
                           exports_root=exports, cache_dir=cache_dir, on_event=_print_event, command=command)
        data = result.to_dict()
        console.print(rich_table(data))
        load = data["load"]
        console.print(f"latency = {data['methods']['latency']}. FLOPs: {data['methods']['flops']}. "
                      f"Load average before {load['loadavg_before']}, after {load['loadavg_after']}.",
                      highlight=False, soft_wrap=True, style="dim")
        paths = write_all(data, out, name)
        console.print("wrote " + ", ".join(str(p) for p in paths.values()), highlight=False)
        if "png" not in paths:
            console.print("[yellow]no plot:[/] matplotlib is not installed (pip install 'deploykit[plot]') "
                          "or nothing ran", highlight=False)
        failed = [r for r in result.records if r.status == "error"
                  or (r.parity and r.parity.get("checked") and not r.parity.get("passed"))]
        if failed:
            err_console.print(f"[bold red]error:[/] {len(failed)} run(s) failed or broke parity", highlight=False)
            raise typer.Exit(1)
