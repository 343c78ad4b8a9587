"""``deploykit doctor``: what this machine can run and what to install."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from deploykit.cli.console import console


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



def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_cmd)
