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


def onnx_conv_chain(path, *, channels: int = 16, depth: int = 8, input_name: str = "x") -> None:
    """``input_name`` -> depth x (3x3 conv + relu), dynamic H/W, seeded weights: a small graph with enough
    full-size intermediates for ONNX Runtime's arena and memory pattern to show in RSS."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], input_name
    for i in range(depth):
        cin = 3 if i == 0 else channels
        inits.append(numpy_helper.from_array((rng.standard_normal((channels, cin, 3, 3)) * 0.1).astype(np.float32),
                                             f"w{i}"))
        nodes += [helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        prev = f"r{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                                                             [1, 3, "H", "W"])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, channels, "H", "W"])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))


def bench_cli_app():
    """A typer app holding only the ``bench`` command, for CliRunner tests of it."""
    import typer

    from deploykit.cli.bench import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test app"""

    register(app)
    return app
