"""What the ``deploykit`` command modules share: the consoles and the printer of pipeline steps.

Errors are not printed here: every DeployKitError reaches ``cli.main``, which prints it as one escaped line and
exits with its code.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

# piped output (CI logs) gets 120 columns instead of rich's 80 so tables keep their figures readable
console = Console() if sys.stdout.isatty() else Console(width=120)
err_console = Console(stderr=True)


def print_step(step: str, status: str, seconds: float, detail: str) -> None:
    """``on_step`` callback of the export and build pipelines: start / skip / done lines."""
    if status == "start":
        console.print(f"[cyan]•[/] {step} …", highlight=False)
    elif status == "skip":
        console.print(f"  [yellow]skipped[/] {step}: {escape(detail)}", highlight=False)
    else:
        console.print(f"  [green]✓[/] {step} [dim]({seconds:.1f} s)[/] {escape(detail)}", highlight=False)
