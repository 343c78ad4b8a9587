"""One writer per folder: concurrent manifest updates lose nothing, a second writer waits or (--no-wait) fails
with one line naming the holder, and no lock file is left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from deploykit.artifacts.manifest import SCHEMA, read_manifest, write_manifest
from deploykit.errors import ArtifactError
from deploykit.util.locks import describe_holder, folder_lock, lock_policy, writer_active

HOLD = textwrap.dedent("""
    import sys, time
    from deploykit.util.locks import folder_lock
    with folder_lock(sys.argv[1], "deploykit export srresnet:x2"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
        if len(sys.argv) > 3:
            open(sys.argv[3], "w").write("done")  # still holding the lock
""")

BUMP = textwrap.dedent("""
    import sys
    from deploykit.artifacts.manifest import update_manifest
    def bump(m):
        m["count"] += 1
        m.setdefault("by", []).append(int(sys.argv[2]))
    for _ in range(int(sys.argv[3])):
        update_manifest(sys.argv[1], bump)
""")


def _holder(folder: Path, seconds: float, marker: Path | None = None) -> subprocess.Popen:
    args = [sys.executable, "-c", HOLD, str(folder), str(seconds), *([str(marker)] if marker else [])]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_concurrent_manifest_updates_lose_nothing(tmp_path):
    write_manifest(tmp_path, {"schema": SCHEMA, "schema_version": 1, "model": {"name": "x"}, "count": 0})
    writers, each = 4, 25
    procs = [subprocess.Popen([sys.executable, "-c", BUMP, str(tmp_path), str(k), str(each)]) for k in range(writers)]
    assert [p.wait(timeout=300) for p in procs] == [0] * writers
    manifest = read_manifest(tmp_path)
    assert manifest["count"] == writers * each  # a read-modify-write without the lock drops some
    assert sorted(manifest["by"]) == sorted(k for k in range(writers) for _ in range(each))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]  # no lock, holder or temp file left


def test_no_wait_fails_at_once_naming_the_holder(tmp_path):
    proc = _holder(tmp_path, 30)
    try:
        assert writer_active(tmp_path)
        assert describe_holder(tmp_path).startswith(f"pid {proc.pid} (deploykit export srresnet:x2, since ")
        start = time.monotonic()
        with pytest.raises(ArtifactError) as info, lock_policy(wait=False), folder_lock(tmp_path, "second"):
            pass
        assert time.monotonic() - start < 10  # at once (generous: a shared machine), not after the holder's 30 s
        message = str(info.value)
        assert f"is being written by pid {proc.pid} (deploykit export srresnet:x2" in message
        assert "--no-wait" in message and "\n" not in message
    finally:
        proc.kill()
        proc.wait()


def test_a_second_writer_waits_and_says_for_whom(tmp_path, capsys):
    folder, marker = tmp_path / "out", tmp_path / "holder-done"
    proc = _holder(folder, 1.5, marker)
    try:
        with folder_lock(folder, "second"):
            assert marker.read_text() == "done"  # it only got the lock once the holder had finished
            assert json.loads((folder / ".deploykit.lock.holder").read_text())["pid"] == os.getpid()
    finally:
        proc.kill()
        proc.wait()
    assert f"waiting for pid {proc.pid} (deploykit export srresnet:x2" in capsys.readouterr().err
    assert not writer_active(folder) and list(folder.iterdir()) == []


def test_a_killed_holder_releases_the_lock(tmp_path):
    proc = _holder(tmp_path, 60)
    proc.kill()
    proc.wait()
    assert describe_holder(tmp_path) == "another process"  # its holder record names a dead pid
    with lock_policy(wait=False), folder_lock(tmp_path, "next"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_export_cli_no_wait(cli_run, tmp_path):
    folder = tmp_path / "srresnet" / "x2"
    proc = _holder(folder, 30)
    try:
        code, _, err = cli_run("export", "srresnet:x2", "--no-fp16", "--out", str(tmp_path), "--no-wait")
    finally:
        proc.kill()
        proc.wait()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and f"pid {proc.pid}" in lines[0]
    assert not list(folder.glob("*.onnx"))


TORN = textwrap.dedent("""
    import hashlib, sys, time
    from pathlib import Path
    from deploykit.artifacts.manifest import update_manifest
    from deploykit.util.locks import folder_lock
    folder = Path(sys.argv[1])
    with folder_lock(folder, "deploykit export srresnet:x2"):
        (folder / "a.onnx").write_bytes(b"new")  # mid-publish: the file is new, the manifest still old
        print("torn", flush=True)
        time.sleep(1.5)
        def point(m):
            m["artifacts"][0]["sha256"] = hashlib.sha256(b"new").hexdigest()
        update_manifest(folder, point)
""")


def test_a_reader_of_a_torn_update_waits_for_the_writer(tmp_path, capsys):
    import hashlib

    from deploykit.artifacts.lookup import verified_file

    write_manifest(tmp_path, {"schema": SCHEMA, "schema_version": 1, "model": {"name": "x"},
                              "artifacts": [{"file": "a.onnx", "sha256": hashlib.sha256(b"old").hexdigest()}]})
    (tmp_path / "a.onnx").write_bytes(b"old")
    entry = read_manifest(tmp_path)["artifacts"][0]  # read before the writer started
    proc = subprocess.Popen([sys.executable, "-c", TORN, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "torn"
        assert verified_file(tmp_path, entry) == tmp_path / "a.onnx"  # not "modified or torn update"
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.wait()
    assert f"waiting for pid {proc.pid}" in capsys.readouterr().err
    (tmp_path / "a.onnx").write_bytes(b"tampered")  # no writer: a mismatch is an error at once
    with pytest.raises(ArtifactError, match="does not match the sha256"):
        verified_file(tmp_path, read_manifest(tmp_path)["artifacts"][0])
