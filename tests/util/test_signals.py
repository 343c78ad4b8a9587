"""SIGTERM / SIGHUP are handled like Ctrl-C: every cleanup runs, previous artifacts stay, exit 128 + signal.

The slow tests are the real thing: ``deploykit export srresnet:x2 --no-fp16`` in a subprocess, signalled while
it works inside its staging folder."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer

from deploykit.util.files import Staging
from deploykit.util.signals import Terminated, interrupt_exit, terminate_on_signals

ENTRY = "import sys; from deploykit.cli.app import main; sys.argv[0] = 'deploykit'; main()"


def test_sigterm_and_sighup_raise_a_keyboard_interrupt_carrying_the_signal():
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGHUP, 129)):
        before = signal.getsignal(sig)
        with pytest.raises(Terminated) as info, terminate_on_signals() as received:
            os.kill(os.getpid(), sig)
            time.sleep(5)  # the handler runs at the next bytecode: never reached
        assert isinstance(info.value, KeyboardInterrupt) and info.value.signum == sig
        assert received.signum == sig and interrupt_exit(sig)[0] == code
        assert signal.getsignal(sig) == before  # the previous handler is back


def test_a_second_signal_does_not_cut_the_cleanup_short(tmp_path):
    with pytest.raises(Terminated), terminate_on_signals():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # ignored while the first one's cleanup runs
            (tmp_path / "cleaned").write_text("yes")
    assert (tmp_path / "cleaned").read_text() == "yes"


def _command_app(tmp_path: Path, sig: int) -> typer.Typer:
    """A command that stages a file in tmp_path/out and is signalled mid-write."""
    app = typer.Typer()

    @app.command()
    def work() -> None:
        with Staging(tmp_path / "out") as stage:
            stage.path("model.onnx").write_bytes(b"partial")
            os.kill(os.getpid(), sig)
            time.sleep(5)
            stage.publish(["model.onnx"])

    @app.command()
    def other() -> None:
        pass

    return app


@pytest.mark.parametrize("sig,code,name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGHUP, 129, "SIGHUP"),
                                           (signal.SIGINT, 130, None)])
def test_main_exits_128_plus_signal_with_one_line_and_no_staging(monkeypatch, capsys, tmp_path, sig, code, name):
    from deploykit.cli import app as cli

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.onnx").write_bytes(b"previous")
    monkeypatch.setattr(cli, "app", _command_app(tmp_path, sig))
    monkeypatch.setattr(sys, "argv", ["deploykit", "work"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    err = capsys.readouterr().err
    assert info.value.code == code
    expected = f"terminated by {name}" if name else "interrupted"
    assert err.strip().splitlines() == [f"{expected}; previous artifacts are left intact"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.onnx"]  # staging gone
    assert (tmp_path / "out" / "model.onnx").read_bytes() == b"previous"


# --- the real export, signalled -------------------------------------------------------------------------------------

def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()
            and not p.name.startswith(".")}


def _staging(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(".staging-")) if folder.exists() else []


def _start_export(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", ENTRY, "export", "srresnet:x2", "--no-fp16", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _wait_for_partial_onnx(proc: subprocess.Popen, folder: Path, timeout: float = 300) -> Path:
    """The staging folder once a (partial) ONNX file is inside it: the export is mid-write."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for stage in _staging(folder):
            if any(stage.glob("*.onnx")):
                return stage
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"the export never wrote into a staging folder (exit {proc.poll()}): {proc.communicate()[1][-2000:]}")


@pytest.fixture(scope="module")
def previous_export(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    from deploykit.exporting.pipeline import export

    out = tmp_path_factory.mktemp("exports")
    result = export("srresnet:x2", out=out, fp16=False)
    return out, _digests(result.out_dir)


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signalled_export_exits_128_plus_signal_and_leaves_nothing_behind(previous_export, sig, code):
    out, before = previous_export
    folder = out / "srresnet" / "x2"
    proc = _start_export(out)
    stage = _wait_for_partial_onnx(proc, folder)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert err.strip().splitlines()[-1] == (f"terminated by {signal.Signals(sig).name}; "
                                            "previous artifacts are left intact")
    assert "Traceback" not in err
    assert not stage.exists() and _staging(folder) == []
    assert _digests(folder) == before  # the previous artifacts, byte for byte
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temp file, no lock left


@pytest.mark.slow
def test_killed_export_staging_is_swept_by_the_next_run(previous_export):
    out, before = previous_export
    folder = out / "srresnet" / "x2"
    stages = []
    for _ in range(2):  # two killed runs leave two staging folders
        proc = _start_export(out)
        stages.append(_wait_for_partial_onnx(proc, folder))
        proc.kill()
        proc.wait(timeout=60)
    assert all(s.exists() for s in stages)  # SIGKILL runs no cleanup: the premise of the sweep
    assert _digests(folder) == before
    proc = _start_export(out)  # the next run sweeps them as soon as it holds the folder's lock
    try:
        deadline = time.monotonic() + 300
        while any(s.exists() for s in stages) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert not any(s.exists() for s in stages)
    finally:
        _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    assert _staging(folder) == []
    assert set(_digests(folder)) == set(before)
