"""``deploykit cpp build`` / ``deploykit cpp run``: the C++ runners, registered onto the main app by ``register(app)``.

Thin like every command module: parse, call deploykit.serve.cpp_build, print with rich. Failures (CppBuildError
names the missing tool, header or source directory) reach ``cli.app.main``, which prints one escaped line and exits
non-zero; a runner's own exit code passes through ``fail``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from deploykit.cli.console import console, fail

cpp_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                      help="Build and run the C++ runners: aoti_run (AOTInductor package) and trt_run (TensorRT "
                           "engine). See docs/cpp.md.")


@cpp_app.command("build")
def build_cmd(
    build_dir: Annotated[Optional[Path], typer.Option(help="CMake build directory (default: <repo>/build/cpp)")] = None,
    trt: Annotated[Optional[bool], typer.Option(
        "--with-trt/--without-trt", help="require / skip trt_run (default: build it when TensorRT and CUDA are found)",
        show_default=False)] = None,
    aoti: Annotated[Optional[bool], typer.Option(
        "--with-aoti/--without-aoti", help="require / skip aoti_run (default: build it when libtorch is found)",
        show_default=False)] = None,
    tensorrt_root: Annotated[Optional[Path], typer.Option(help="TensorRT install root (tar / SDK)")] = None,
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", help="parallel compile jobs (default: CPU count)")]
    = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="stream CMake's output")] = False,
) -> None:
    """Configure (Release, with the torch wheel's libtorch) and build cpp/; print where the binaries are."""
    from deploykit.serve.cpp_build import build_cpp

    console.print("[cyan]•[/] cmake configure + build …", highlight=False)
    result = build_cpp(build_dir, trt=trt, aoti=aoti, tensorrt_root=tensorrt_root, jobs=jobs,
                       on_line=(lambda line: console.print(f"  [dim]{escape(line)}[/]", highlight=False))
                       if verbose else None)
    table = Table(title=f"C++ runners in {result.build_dir}")
    for col in ("binary", "status"):
        table.add_column(col, overflow="fold")
    for name in ("aoti_run", "trt_run", "dk_selftest"):
        if name in result.binaries:
            table.add_row(name, escape(str(result.binaries[name])))
        else:
            table.add_row(name, f"[yellow]skipped[/]: {escape(result.skipped.get(name, 'not built'))}")
    console.print(table)
    console.print(f"configure {result.configure_seconds:.1f} s, build {result.build_seconds:.1f} s", highlight=False)
    for name in ("aoti_run", "trt_run"):
        if name in result.binaries:
            console.print(f"run: {escape(str(result.binaries[name]))} --manifest exports/MODEL/VARIANT/manifest.json "
                          "--input in.png --output out.png   (or: deploykit cpp run "
                          f"{name.split('_')[0]} ...)", highlight=False)


@cpp_app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run_cmd(
    ctx: typer.Context,
    runner: Annotated[str, typer.Argument(help="aoti or trt; every further argument goes to the runner "
                                               "(--manifest M --input IN --output OUT ...)")],
    build_dir: Annotated[Optional[Path], typer.Option(help="where 'deploykit cpp build' put the binaries")] = None,
) -> None:
    """Run a built C++ runner: deploykit cpp run aoti --manifest M --input in.png --output out.png"""
    from deploykit.serve.cpp_build import run_binary

    code = run_binary(runner, list(ctx.args), build_dir)
    if code:
        fail(code=code)  # the runner printed its own error line


def register(app: typer.Typer) -> None:
    """Add the ``cpp`` command group to the main app (idempotent: a second call does nothing)."""
    if any(getattr(g, "name", None) == "cpp" for g in app.registered_groups):
        return
    app.add_typer(cpp_app, name="cpp")
