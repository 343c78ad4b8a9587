"""Atomic artifact writes: stage every file next to its destination, publish only when all checks passed.

An interrupted or failed export leaves the previous artifacts intact: files are written under a hidden staging
directory inside the output directory (same filesystem, so ``os.replace`` is atomic), moved into place at the
end, manifest last. The manifest lists every file with its sha256, so a reader can detect a torn update.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from deploykit.errors import ArtifactError
from deploykit.util.system import status_field


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
        self.dir = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.out_dir))
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
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
