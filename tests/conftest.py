"""Shared fixtures: paths to the real data beside the checkout (skipped cleanly where absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VAPSR_X4 = SHARED / "weights" / "VapSR_X4.pth"
NOISY_PHOTO = SHARED / "images" / "noisy_real.png"


@pytest.fixture(scope="session", autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def single_thread():
    """Tiny forwards are faster on one thread, and much faster when the CPU is shared. Use per module with
    ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def vapsr_x4_weights() -> Path:
    if not VAPSR_X4.exists():
        pytest.skip(f"official VapSR x4 checkpoint not found at {VAPSR_X4} (../shared is absent)")
    return VAPSR_X4


@pytest.fixture
def cli_run(monkeypatch, capsys):
    """Run ``deploykit ARGS…`` through cli.main (one-line errors, exit codes) -> (exit code, stdout, stderr)."""
    import sys

    from deploykit.cli import app as cli
    from deploykit.cli import console

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["deploykit", *args])
        monkeypatch.setattr(console.console, "width", 200)
        code = 0
        try:
            cli.main()
        except SystemExit as exc:
            code = exc.code or 0
        out, err = capsys.readouterr()
        return code, out, err

    return run
