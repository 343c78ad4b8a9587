"""The one shape of step progress: ``on_step(step, status, seconds, detail)`` with status 'start', 'done' or
'skip', and :class:`Steps`, which times named steps, records them for the manifest and reports them."""

from __future__ import annotations

import time
from collections.abc import Callable

StepCallback = Callable[[str, str, float, str], None]  # (step, 'start'|'done'|'skip', seconds, detail)


class Steps:
    """Times named steps and forwards progress to the caller's callback; ``records`` go into the manifest."""

    def __init__(self, callback: StepCallback | None = None):
        self.callback = callback or (lambda *a: None)
        self.records: list[dict] = []

    def run(self, name: str, fn: Callable, *args, **kwargs):
        """Run ``fn``; a result tuple whose last item is a string reports that string as the step's detail."""
        self.callback(name, "start", 0.0, "")
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        seconds = time.perf_counter() - start
        detail = result[-1] if isinstance(result, tuple) and isinstance(result[-1], str) else ""
        self.records.append({"step": name, "seconds": round(seconds, 3), "detail": detail})
        self.callback(name, "done", seconds, detail)
        return result

    def skip(self, name: str, why: str) -> None:
        self.records.append({"step": name, "seconds": 0.0, "detail": f"skipped: {why}"})
        self.callback(name, "skip", 0.0, why)
