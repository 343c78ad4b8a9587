"""Atomic artifact writes: stage every file next to its destination, publish only when all checks passed.

An interrupted or failed export leaves the previous artifacts intact: files are written under a hidden staging
directory inside the output directory (same filesystem, so ``os.replace`` is atomic), moved into place at the
end, manifest last. The manifest lists every file with its sha256, so a reader can detect a torn update.

Staging folders and temp files carry their writer's tag (``deploykit.util.owners``); a run that writes into a
folder first sweeps what dead writers left there (:func:`sweep_stale`): a SIGKILL leaves nothing behind for long.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from deploykit.errors import ArtifactError
from deploykit.util.owners import owner_alive, owner_tag, tagged_owner
from deploykit.util.system import status_field

STAGING_PREFIX = ".staging-"
LEGACY_STAGING_AGE_S = 24 * 3600  # untagged staging folders (deploykit before owner tags): swept once a day old


def ensure_writable_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"cannot create output directory {path}: {exc.strerror or exc}") from exc
    if not os.access(path, os.W_OK):
        raise ArtifactError(f"output directory {path} is not writable; choose another with --out")
    return path


class Staging:
    """Context manager: ``stage.path(name)`` gives a temp path; ``publish()`` moves all into ``out_dir``."""

    def __init__(self, out_dir: Path):
        self.out_dir = ensure_writable_dir(Path(out_dir))
        sweep_stale(self.out_dir)
        self.dir = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{owner_tag()}-", dir=self.out_dir))
        self.published: list[Path] = []

    def path(self, name: str) -> Path:
        return self.dir / name

    def publish(self, names: list[str]) -> list[Path]:
        """Move staged files into place in the given order (put the manifest last)."""
        for name in names:
            src = self.dir / name
            if src.exists():
                os.replace(src, self.out_dir / name)
                self.published.append(self.out_dir / name)
        return self.published

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def sweep_stale(folder: str | Path) -> list[Path]:
    """Remove the staging folders and temp files in ``folder`` whose writer is gone (``owners.owner_alive``), and
    untagged ``.staging-*`` folders over a day old; returns what was removed. Never fails a run."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        owner = tagged_owner(entry.name)
        if owner is not None:
            stale = not owner_alive(*owner)
        else:
            stale = _legacy_staging(entry)
        if stale and _remove(Path(entry.path)):
            removed.append(Path(entry.path))
    return removed


def _legacy_staging(entry: os.DirEntry) -> bool:
    if not (entry.name.startswith(STAGING_PREFIX) and len(entry.name) == len(STAGING_PREFIX) + 8):
        return False
    with contextlib.suppress(OSError):
        return entry.is_dir(follow_symlinks=False) and time.time() - entry.stat().st_mtime > LEGACY_STAGING_AGE_S
    return False


def _remove(path: Path) -> bool:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        return True
    except OSError:
        return False


_SWEPT: set[tuple[int, str]] = set()


def sweep_once(folder: str | Path) -> None:
    """:func:`sweep_stale` the first time this process writes into ``folder`` (a folder of many images is listed
    once, not once per file)."""
    key = (os.getpid(), os.path.abspath(folder))
    if key not in _SWEPT:
        _SWEPT.add(key)
        sweep_stale(folder)


def temp_prefix(path: Path) -> str:
    """The name prefix of a temp file written next to ``path``: hidden, with this process's owner tag."""
    return f".{path.name}.{owner_tag()}."


def share_mode(path: str | Path) -> None:
    """Give a file the mode a plain ``open()`` would (0666 minus the umask): mkstemp makes 0600 files, and
    artifacts, images and results are meant to be shipped and shared."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    """The process umask, read from /proc where possible: os.umask can only be read by setting it, and a file
    another thread creates in between would get the temporary mask."""
    with contextlib.suppress(TypeError, ValueError):
        return int(status_field("Umask"), 8)
    umask = os.umask(0o077)  # the strictest mask while it is read
    os.umask(umask)
    return umask


def write_bytes_atomic(path: Path, data: bytes | memoryview) -> None:
    """Temp file in the same directory, fsync, rename: a reader sees the old file or the new one, never half."""
    path = Path(path)
    sweep_once(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        share_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: dict) -> None:
    """Strict JSON (no NaN/Infinity: C++ readers reject them), written atomically."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, allow_nan=False) + "\n").encode())


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
