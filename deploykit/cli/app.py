"""The ``deploykit`` command: one typer app, every command module registered on it, and the console-script entry.

Commands parse, call the library and print; they end unsuccessfully only through ``console.fail`` (exit 1, a
failed check) or by letting a DeployKitError reach :func:`main` (one ``error:`` line, exit 2).
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from deploykit.cli import bench, cpp, doctor, export, infer, parity, triton, trt, zoo
from deploykit.cli.console import err_console
from deploykit.errors import DeployKitError
from deploykit.util.signals import interrupt_exit, terminate_on_signals

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Export PyTorch image-restoration models to ONNX / TensorRT with proven parity.")

for _module in (zoo, export, parity, infer, bench, trt, cpp, triton, doctor):
    _module.register(app)


def _usage_error_type() -> type[Exception]:
    """typer's usage-error base (``ClickException``): typer 0.29+ carries its own copy of click as ``typer._click``,
    older releases re-export click's; ``typer.BadParameter`` derives from it on both, so no click import."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def main() -> None:
    """Console-script entry: one-line errors and a non-zero exit code instead of tracebacks; usage errors print
    typer's usage line and reason and exit 2. Ctrl-C, SIGTERM and SIGHUP run every cleanup (staging removed,
    previous artifacts intact) and exit 128 + the signal with one line (``deploykit.util.signals``)."""
    with terminate_on_signals() as received:
        code = _run_app()
    if received.signum is not None:  # however the command framework reported the interrupt
        code, message = interrupt_exit(received.signum)
        err_console.print(message, highlight=False)
    if isinstance(code, int) and code:
        sys.exit(code)


def _run_app() -> int | None:
    try:
        return app(standalone_mode=False)
    except DeployKitError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except (typer.Exit, SystemExit) as exc:
        return getattr(exc, "exit_code", getattr(exc, "code", 0))
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except KeyboardInterrupt:
        return 130  # the message comes from main(), which knows which signal it was
    except _usage_error_type() as exc:  # unknown option/command, bad value, missing argument
        exc.show()
        return exc.exit_code


if __name__ == "__main__":
    main()
