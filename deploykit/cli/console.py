"""What the ``deploykit`` command modules share: the consoles, the one way to fail, progress and step printers.

Errors are not printed here: every DeployKitError reaches ``cli.main``, which prints it as one escaped line and
exits with its code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

# piped output (CI logs) gets 200 columns instead of rich's 80 so wide tables (bench) keep their figures readable;
# both streams follow the same rule
PIPED_WIDTH = 200
console = Console() if sys.stdout.isatty() else Console(width=PIPED_WIDTH)
err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=PIPED_WIDTH)


def fail(message: str | None = None, code: int = 1) -> NoReturn:
    """The one way a command ends unsuccessfully after it ran (a failed check): an optional one-line ``error:``
    and exit ``code``. Bad input is a DeployKitError instead, which ``cli.app.main`` prints and exits 2 on."""
    if message:
        err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def print_step(step: str, status: str, seconds: float, detail: str) -> None:
    """``on_step`` callback of the export and build pipelines: start / skip / done lines."""
    if status == "start":
        console.print(f"[cyan]•[/] {step} …", highlight=False)
    elif status == "skip":
        console.print(f"  [yellow]skipped[/] {step}: {escape(detail)}", highlight=False)
    else:
        console.print(f"  [green]✓[/] {step} [dim]({seconds:.1f} s)[/] {escape(detail)}", highlight=False)


class RichProgress:
    """A files bar and a tiles bar; finished files print one line above them."""

    def __init__(self, console: Console, err_console: Console):
        self.console, self.err_console = console, err_console
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=console, transient=True)
        self.files_task = self.tiles_task = None

    def __enter__(self) -> "RichProgress":
        self.bars.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.__exit__(*exc)

    def run_started(self, report, files: int) -> None:
        b = report.backend
        self.console.print(f"[bold]{report.model}[/] on {b['backend']} ({b['device']}, {b['precision']}), "
                           f"tile {report.tile}; {files} file{'s' if files != 1 else ''}", highlight=False)
        for note in report.notes:
            self.console.print(f"[bold yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
        self.files_task = self.bars.add_task("files", total=files)
        self.tiles_task = self.bars.add_task("tiles", total=1)

    def file_started(self, index: int, total: int, path: Path, tiles: int) -> None:
        self.bars.update(self.files_task, description=f"files ({escape(path.name)})")
        self.bars.reset(self.tiles_task, total=max(tiles, 1))

    def tile_done(self, done: int, total: int) -> None:
        self.bars.update(self.tiles_task, completed=done, total=total)

    def file_done(self, result) -> None:
        self.bars.advance(self.files_task)
        if result.ok:
            self.bars.console.print(f"[green]✓[/] {escape(result.summary())}", highlight=False, soft_wrap=True)
        else:
            self.err_console.print(f"[bold red]error:[/] {escape(result.summary())}", highlight=False,
                                   soft_wrap=True)
