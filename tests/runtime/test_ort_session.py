"""deploykit's ONNX Runtime CPU session (``runtime.ort.cpu_session_options``): settings read back from the session,
and the property they are there for -- the second run at a size holds no more memory than the first."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from deploykit.errors import BackendUnavailableError
from deploykit.runtime.ort import GRAPH_LEVELS, OrtBackend, cpu_session_options
from deploykit.util.system import peak_rss_measurable, release_memory, reset_peak_rss, status_bytes
from tests.conftest import onnx_conv_chain


@pytest.mark.parametrize("graph, level", [("all", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
                                          ("extended", ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)])
def test_session_settings_are_read_back(tmp_path, graph, level):
    onnx_conv_chain(tmp_path / "m.onnx", depth=2)
    backend = OrtBackend(tmp_path / "m.onnx", session_options=cpu_session_options(1, graph))
    read = backend.session.get_session_options()
    assert (read.intra_op_num_threads, read.inter_op_num_threads) == (1, 1) and backend.threads == 1
    assert read.enable_mem_pattern is False and read.enable_cpu_mem_arena is True
    assert read.graph_optimization_level == level
    assert read.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL


def test_the_default_runner_has_the_memory_pattern_off(tmp_path):
    onnx_conv_chain(tmp_path / "m.onnx", depth=2)
    read = OrtBackend(tmp_path / "m.onnx", threads=2).session.get_session_options()
    assert read.enable_mem_pattern is False and read.intra_op_num_threads == 2
    assert read.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_unknown_graph_level_is_refused():
    with pytest.raises(BackendUnavailableError, match=f"unknown ONNX Runtime graph level 'fast' \\(use "
                                                      f"{' or '.join(GRAPH_LEVELS)}\\)"):
        cpu_session_options(1, "fast")


@pytest.mark.skipif(not peak_rss_measurable(), reason="needs /proc/self/status VmHWM and clear_refs")
def test_second_run_at_the_first_size_holds_no_more_memory(tmp_path):
    """With ORT's memory pattern on, a session's second run at the size of its first allocates the pattern's
    block while the arena keeps the first run's tensors (measured 1.6-1.9x on the zoo); deploykit's session
    must stay flat."""
    onnx_conv_chain(tmp_path / "m.onnx")
    backend = OrtBackend(tmp_path / "m.onnx", threads=1)
    x = {"x": np.random.default_rng(1).random((1, 3, 512, 512), dtype=np.float32)}
    release_memory()
    base = status_bytes("VmRSS")
    reset_peak_rss()
    backend.run(x)
    first = status_bytes("VmHWM") - base
    for _ in range(2):
        backend.run(x)
    later = status_bytes("VmHWM") - base
    tensor = 16 * 512 * 512 * 4
    assert first >= 2 * tensor  # the runs really allocated full-size intermediates
    assert later <= first + tensor, f"peak grew from {first / 2**20:.0f} to {later / 2**20:.0f} MiB"


@pytest.mark.skipif(not peak_rss_measurable(), reason="needs /proc/self/status VmRSS")
@pytest.mark.parametrize("arena", ["shared", "session", "none"])
def test_the_shared_arena_gives_a_run_memory_back(tmp_path, arena):
    """The shared same-as-requested arena is shrunk after each run (a process benchmarking one size after another
    keeps nothing of the last); a session's own arena keeps its chunks (ORT's default) until the session closes;
    without an arena every tensor goes back when freed."""
    onnx_conv_chain(tmp_path / "m.onnx")
    backend = OrtBackend(tmp_path / "m.onnx", session_options=cpu_session_options(1, arena=arena))
    x = {"x": np.random.default_rng(1).random((1, 3, 512, 512), dtype=np.float32)}
    backend.run({"x": x["x"][:, :, :32, :32]})
    release_memory()
    base = status_bytes("VmRSS")
    out = backend.run(x)
    del out
    release_memory()
    kept = status_bytes("VmRSS") - base
    tensor = 16 * 512 * 512 * 4
    assert backend.arena.startswith({"shared": "shared", "session": "the session", "none": "none"}[arena])
    if arena != "session":  # measured: one tensor's worth stays (the arena's first region); unshrunk: two
        assert kept < 1.5 * tensor, f"{kept / 2**20:.0f} MiB kept after the run"
    else:
        assert kept >= 1.5 * tensor  # the contrast: the property above is the shrinkage's, not the default's


def test_each_model_gets_its_measured_arena(tmp_path):
    from deploykit.runtime.open import open_backend
    from deploykit.runtime.ort import cpu_session_recipe
    from deploykit.zoo.registry import get_spec

    onnx_conv_chain(tmp_path / "m.onnx", depth=2)
    assert open_backend("ort", get_spec("edsr:m_x4"), onnx=tmp_path / "m.onnx").arena.startswith("shared")
    assert open_backend("ort", get_spec("mprnet:deblurring"), onnx=tmp_path / "m.onnx").arena.startswith("the session")
    assert open_backend("ort", get_spec("udvd:x2"), onnx=tmp_path / "m.onnx").arena == "none (plain malloc)"
    assert cpu_session_recipe(arena="none")["enable_cpu_mem_arena"] is False
    shared, own = cpu_session_recipe(arena="shared"), cpu_session_recipe()
    assert shared["session_config"] == {"session.use_env_allocators": "1"}
    assert shared["run_config"] == {"memory.enable_memory_arena_shrinkage": "cpu:0"}
    assert shared["env_cpu_arena"]["arena_extend_strategy"] == "kSameAsRequested"
    assert own["session_config"] == {} and "env_cpu_arena" not in own and own["enable_mem_pattern"] is False
    with pytest.raises(BackendUnavailableError, match="unknown ONNX Runtime CPU arena 'pool'"):
        cpu_session_options(1, arena="pool")
