"""``deploykit bench``: thin command over :func:`deploykit.bench.run.run_bench` and :mod:`deploykit.bench.report`.

``deploykit.cli.app`` adds it with ``register(app)``. The bench library (torch, ONNX Runtime) is imported inside
the command only, so ``deploykit --help`` stays light.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from deploykit.cli.console import console, fail

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
        plan_only: Annotated[bool, typer.Option(
            "--plan-only", help="estimate memory (calibrated), pick whole frame or tiles for every case, time none")] = False,
        sample_tiles_over: Annotated[Optional[float], typer.Option(
            "--sample-tiles-over", metavar="SECONDS",
            help="a tiled case whose one run needs longer than SECONDS even at the GEMM probe's rate is timed on an "
                 "evenly spread sample of its tiles (same shape and work), scaled to all tiles and labelled "
                 "(default: every tile)", show_default=False)] = None,
        resume: Annotated[bool, typer.Option(
            "--resume", help="with --name: save OUT/<device-slug>/NAME.json after every case and, when it exists, "
                             "measure only the cases it does not hold yet (same options and machine)")] = False,
    ) -> None:
        """Latency x resolution x backend x precision with FLOPs, memory and parity vs PyTorch FP32 -> table, JSON,
        CSV, PNG. A whole frame that does not fit in memory runs automatically tiled (labelled); a case is skipped,
        with the figures, only when no tile fits."""
        from deploykit.bench.plan import DEFAULT_RES  # the bench library imports torch: only when the command runs
        from deploykit.bench.run import run_bench

        previous, source = _resume_file(out, name, resume, plan_only)
        on_progress = (lambda partial: _write(partial.to_dict(), out, name)) if resume else None
        result = run_bench(models, res=res or DEFAULT_RES, backends=backend, precisions=precision, batch=batch,
                           warmup=warmup, iters=iters, seconds=seconds, tile=tile, overlap=overlap, threads=threads,
                           exports_root=exports, cache_dir=cache_dir, on_event=_print_event, command=_command(),
                           plan_only=plan_only, sample_tiles_over=sample_tiles_over, resume=previous,
                           resume_source=source, on_progress=on_progress)
        _show_and_write(result, out, name)


def _resume_file(out: Path, name: str | None, resume: bool, plan_only: bool) -> tuple[dict | None, str]:
    """With --resume: the results file to continue (None when it does not exist yet) and its path as text."""
    if not resume:
        return None, ""
    if not name:
        fail("--resume needs --name: the results file to save after every case and to continue from")
    if plan_only:
        fail("--resume saves measurements; --plan-only measures none (drop one of them)")
    from deploykit.bench.records import device_info
    from deploykit.bench.report import load, results_path
    from deploykit.bench.resume import DONE_STATUSES

    path = results_path(out, device_info(), name, "json")
    if not path.exists():
        console.print(f"[cyan]•[/] --resume: {path} does not exist yet; it is saved after every case",
                      highlight=False)
        return None, str(path)
    try:
        previous = load(path)
    except (ValueError, OSError) as exc:
        fail(f"cannot resume {path}: {exc}")
    done = sum(r.get("status") in DONE_STATUSES for r in previous.get("records", []))
    console.print(f"[cyan]•[/] --resume: {path} holds {done} finished case(s); they are not run again",
                  highlight=False)
    return previous, str(path)


def _write(data: dict, out: Path, name: str | None) -> dict:
    from deploykit.bench.report import write_all

    return write_all(data, out, name)


def _command() -> list[str]:
    """The command line as typed: ``deploykit ...`` when run as the console script (or ``cli/app.py``)."""
    return ["deploykit", *sys.argv[1:]] if Path(sys.argv[0]).name in ("deploykit", "app.py") else list(sys.argv)


def _show_and_write(result, out: Path, name: str | None) -> None:
    """The table and the methods line, then OUT/<device-slug>/NAME.json/.csv/.png; exit 1 when a run failed or
    broke parity."""
    from deploykit.bench.report import plot_missing_reason, rich_table

    data = result.to_dict()
    console.print(rich_table(data))
    load = data["load"]
    console.print(f"latency = {data['methods']['latency']}. FLOPs: {data['methods']['flops']}. "
                  f"Load average before {load['loadavg_before']}, after {load['loadavg_after']}.",
                  highlight=False, soft_wrap=True, style="dim")
    paths = _write(data, out, name)
    console.print("wrote " + ", ".join(str(p) for p in paths.values()), highlight=False)
    if "png" not in paths:
        console.print(f"[yellow]no plot:[/] {plot_missing_reason(data)}", highlight=False)
    failed = [r for r in result.records if r.status == "error"
              or (r.parity and r.parity.get("checked") and not r.parity.get("passed"))]
    if failed:
        fail(f"{len(failed)} run(s) failed or broke parity")
