"""Who wrote a leftover: a process identity (pid + start time) that survives pid reuse.

Staging folders, atomic-write temp files and the AOTI temp package carry their writer's tag (``pid<PID>-<START>``,
START being the process start time in clock ticks from ``/proc/<pid>/stat``) in their name. A later run sweeps the
ones whose writer is gone: no such pid, a zombie, or a live pid that started at another time (the pid was reused).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

TAG_RE = re.compile(r"(?:^\.|[.-])pid(\d+)-(\d+)[.-]")


def process_start(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks since boot, field 22 of /proc/<pid>/stat); None when it is gone or a
    zombie (a killed process its parent has not reaped yet holds nothing), 0 off Linux."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return 0
    fields = text.rsplit(")", 1)[-1].split()  # the command name in parentheses may hold spaces
    if not fields or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return 0


_TAG: tuple[int, str] | None = None


def owner_tag() -> str:
    """This process's tag ``pid<PID>-<START>`` (recomputed after a fork)."""
    global _TAG
    pid = os.getpid()
    if _TAG is None or _TAG[0] != pid:
        _TAG = (pid, f"pid{pid}-{process_start(pid) or 0}")
    return _TAG[1]


def owner_alive(pid: int, start: int) -> bool:
    """Whether the process that made a tag ``pid<pid>-<start>`` still runs (a reused pid does not count)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    now = process_start(pid)
    if now is None:
        return False
    return now == 0 or start == 0 or now == start


def tagged_owner(name: str) -> tuple[int, int] | None:
    """(pid, start) from a hidden name carrying an owner tag, else None."""
    match = TAG_RE.search(name) if name.startswith(".") else None
    return (int(match.group(1)), int(match.group(2))) if match else None
