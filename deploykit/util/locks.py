"""One writer at a time per folder: an export folder, an engine's export folder, a Triton repository, a bench
results folder. ``filelock`` (an OS lock on a ``.deploykit.lock`` file in the folder, unlinked by its last release;
the kernel releases it when its holder dies, even by SIGKILL, and the next writer takes the file over).

A second writer waits, saying for whom (``waiting for pid 123 (deploykit export srresnet:x2) …``), or, under
``lock_policy(wait=False)`` (the CLI's ``--no-wait``), fails at once with one line naming the holder. The lock is
re-entrant within a thread: the export holds its folder's lock while the manifest updates inside take it again.
Readers do not lock; they check files against the manifest's sha256 and, on a mismatch while a writer holds the
lock, wait for it and look again (:func:`wait_for_writer`, used by ``artifacts.lookup.verified_file``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

from filelock import FileLock, Timeout

from deploykit.errors import ArtifactError
from deploykit.util.files import ensure_writable_dir, sweep_stale, write_json_atomic
from deploykit.util.owners import owner_alive, process_start

LOCK_NAME = ".deploykit.lock"
HOLDER_NAME = ".deploykit.lock.holder"  # who holds it: pid, start time, command, since
READER_WAIT_S = 600.0

_WAIT: ContextVar[bool] = ContextVar("deploykit_lock_wait", default=True)


@contextlib.contextmanager
def lock_policy(*, wait: bool) -> Iterator[None]:
    """Within the block a writer that finds its folder locked waits (``wait=True``) or fails at once."""
    token = _WAIT.set(wait)
    try:
        yield
    finally:
        _WAIT.reset(token)


def lock_path(folder: str | Path, name: str = LOCK_NAME) -> Path:
    return Path(folder) / name


def _lock(folder: Path, name: str) -> FileLock:
    return FileLock(lock_path(folder, name), is_singleton=True)


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str, *, name: str = LOCK_NAME) -> Iterator[Path]:
    """Hold ``folder``'s writer lock for the block (the folder is created). ``what`` names the job for whoever
    waits (``deploykit export``); ``name`` is the lock file's name (a Triton repository's lock sits beside it)."""
    folder = ensure_writable_dir(Path(folder))
    lock = _lock(folder, name)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = describe_holder(folder, name)
        if not _WAIT.get():
            raise ArtifactError(f"{folder} is being written by {holder}; wait for it to finish, or run again "
                                "without --no-wait to wait") from None
        sys.stderr.write(f"waiting for {holder} to finish writing {folder} ...\n")
        sys.stderr.flush()
        lock.acquire()  # polls: Ctrl-C / SIGTERM still end the wait
    except OSError as exc:
        raise ArtifactError(f"cannot lock {folder}: {exc.strerror or exc}") from exc
    first = lock.lock_counter == 1
    try:
        if first:
            _write_holder(folder, name, what)
            sweep_stale(folder)  # what killed writers left: the lock says no live writer is using it
        yield folder
    finally:
        if first:
            with contextlib.suppress(OSError):
                lock_path(folder, name + ".holder").unlink()
        _release(lock, last=first)


def _release(lock: FileLock, last: bool) -> None:
    """Release; the last release unlinks the lock file first, while still holding it (a waiter that then gets
    the old inode sees it unlinked and retries on a fresh file: filelock checks ``st_nlink``), so no lock file is
    left in the folder. Unlinking after the release would let two writers hold two inodes."""
    if last:
        with contextlib.suppress(OSError):
            os.unlink(lock.lock_file)
    lock.release()


def _write_holder(folder: Path, name: str, what: str) -> None:
    with contextlib.suppress(OSError, ArtifactError):
        pid = os.getpid()
        write_json_atomic(lock_path(folder, name + ".holder"), {
            "pid": pid, "start": process_start(pid) or 0, "what": what, "command": " ".join(sys.argv)[:300],
            "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})


def describe_holder(folder: str | Path, name: str = LOCK_NAME) -> str:
    """``pid 123 (deploykit export srresnet:x2, since 14:02:11+00:00)``, or ``another process`` when unknown."""
    try:
        holder = json.loads(lock_path(folder, name + ".holder").read_text())
        pid, start = int(holder["pid"]), int(holder.get("start", 0))
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
    if not owner_alive(pid, start):
        return "another process"
    since = str(holder.get("since", ""))[11:]
    return f"pid {pid} ({holder.get('what') or 'deploykit'}{', since ' + since if since else ''})"


def writer_active(folder: str | Path, name: str = LOCK_NAME) -> bool:
    """Whether another process (or thread) holds ``folder``'s writer lock right now."""
    path = lock_path(folder, name)
    if not path.is_file() or not os.access(path, os.W_OK) or _lock(Path(folder), name).is_locked:
        return False  # never locked, read-only, or held by this very thread (what it reads is its own writing)
    lock = FileLock(path, thread_local=True)
    try:
        lock.acquire(timeout=0)
    except (Timeout, OSError):
        return True
    _release(lock, last=True)
    return False


def wait_for_writer(folder: str | Path, timeout: float = READER_WAIT_S) -> bool:
    """For readers: when a writer holds ``folder``'s lock, wait (up to ``timeout`` s) until it is done and return
    True (look again); False at once when no writer is there (what was read is what is on disk)."""
    if not writer_active(folder):
        return False
    sys.stderr.write(f"waiting for {describe_holder(folder)} to finish writing {folder} ...\n")
    lock = FileLock(lock_path(folder), thread_local=True)
    with contextlib.suppress(Timeout, OSError):
        lock.acquire(timeout=timeout)
        _release(lock, last=True)
    return True
