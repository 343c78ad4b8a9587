"""Leftovers of dead writers are swept: staging folders and temp files carry their writer's pid and start time, and
a pid reused by another process does not keep them alive."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from deploykit.util.files import LEGACY_STAGING_AGE_S, Staging, sweep_stale, write_bytes_atomic
from deploykit.util.owners import owner_alive, owner_tag, process_start, tagged_owner


def _dead_pid() -> tuple[int, int]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    start = process_start(proc.pid)
    proc.kill()
    proc.wait()
    return proc.pid, start


def test_owner_identity_survives_pid_reuse():
    pid, start = os.getpid(), process_start(os.getpid())
    assert owner_tag() == f"pid{pid}-{start}" and owner_alive(pid, start)
    assert not owner_alive(pid, start + 1)  # same pid, another start time: a reused pid
    assert not owner_alive(*_dead_pid())
    assert tagged_owner(f".staging-pid{pid}-{start}-ab12cd") == (pid, start)
    assert tagged_owner(f".manifest.json.pid{pid}-{start}.x1y2.tmp") == (pid, start)
    assert tagged_owner(f"staging-pid{pid}-{start}-x") is None  # not hidden: never ours
    assert tagged_owner("model.pid12-34.onnx") is None


def test_a_zombie_owns_nothing():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    start = process_start(proc.pid)
    deadline = time.monotonic() + 30
    while process_start(proc.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)  # exited, not yet reaped: a zombie
    assert not owner_alive(proc.pid, start or 0)
    proc.wait()


def test_sweep_removes_dead_writers_leftovers_only(tmp_path):
    dead_pid, dead_start = _dead_pid()
    me, my_start = os.getpid(), process_start(os.getpid())
    dead = [tmp_path / f".staging-pid{dead_pid}-{dead_start}-k1", tmp_path / f".m.onnx.pid{dead_pid}-{dead_start}.a.tmp",
            tmp_path / f".pkg.pt2.pid{me}-{my_start + 7}.b.tmp.pt2",  # this pid, another start: reused
            tmp_path / ".staging-abcdefgh"]  # untagged (older deploykit), a day old
    alive = [tmp_path / f".staging-pid{me}-{my_start}-k2", tmp_path / ".staging-ijklmnop",  # untagged, fresh
             tmp_path / "model.onnx", tmp_path / ".deploykit.lock.holder"]
    for path in dead + alive:
        if "staging" in path.name:
            path.mkdir()
            (path / "partial.onnx").write_bytes(b"x")
        else:
            path.write_bytes(b"x")
    old = time.time() - LEGACY_STAGING_AGE_S - 60
    os.utime(tmp_path / ".staging-abcdefgh", (old, old))
    assert sorted(sweep_stale(tmp_path)) == sorted(dead)
    assert sorted(tmp_path.iterdir()) == sorted(alive)


def test_staging_and_atomic_writes_are_tagged_and_sweep_first(tmp_path):
    dead_pid, dead_start = _dead_pid()
    left = tmp_path / f".staging-pid{dead_pid}-{dead_start}-zz"
    left.mkdir()
    with Staging(tmp_path) as stage:
        assert not left.exists()  # swept when the run started writing here
        assert tagged_owner(stage.dir.name) == (os.getpid(), process_start(os.getpid()))
    other = tmp_path / "sub"
    other.mkdir()
    (other / f".x.json.pid{dead_pid}-{dead_start}.q.tmp").write_bytes(b"")
    write_bytes_atomic(other / "x.json", b"{}")
    assert sorted(p.name for p in other.iterdir()) == ["x.json"]
