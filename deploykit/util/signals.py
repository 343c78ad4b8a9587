"""SIGTERM and SIGHUP handled like Ctrl-C: the signal raises :class:`Terminated`, a ``KeyboardInterrupt``, so every
``finally`` / ``except BaseException`` cleanup already in the code runs (staging removed, temp files deleted,
previous artifacts left intact), and the command exits with 128 + the signal number.

Only the console-script entry installs the handlers (:func:`terminate_on_signals`); a library caller keeps its own.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

HANDLED = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """A SIGTERM or SIGHUP turned into an interrupt; ``signum`` says which, ``exit_code`` is 128 + it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        with contextlib.suppress(ValueError):
            return signal.Signals(self.signum).name
        return f"signal {self.signum}"


class Received:
    """What :func:`terminate_on_signals` saw: the first SIGINT / SIGTERM / SIGHUP (None when none came)."""

    def __init__(self):
        self.signum: int | None = None

    def handler(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = int(signum)
        if signum == signal.SIGINT:
            signal.default_int_handler(signum, frame)
        # once: a second TERM/HUP while the cleanup runs must not cut the cleanup short (SIGKILL still ends it)
        for sig in HANDLED:
            signal.signal(sig, signal.SIG_IGN)
        raise Terminated(signum)


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[Received]:
    """Within the block SIGTERM / SIGHUP raise :class:`Terminated` in the main thread and Ctrl-C raises
    KeyboardInterrupt as usual; the yielded :class:`Received` records the first of them (a CLI framework may turn
    the interrupt into an exit code, so the caller asks it, not the exception). The previous handlers come back
    afterwards. Outside the main thread (where Python cannot set handlers) it installs nothing."""
    received = Received()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {sig: signal.signal(sig, received.handler) for sig in (signal.SIGINT, *HANDLED)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def interrupt_exit(signum: int) -> tuple[int, str]:
    """(exit code, one-line message) after a signal: 128 + its number (130 for Ctrl-C, 143 for SIGTERM)."""
    if signum == signal.SIGINT:
        return 130, "interrupted; previous artifacts are left intact"
    return 128 + signum, f"terminated by {Terminated(signum).signal_name}; previous artifacts are left intact"
