"""ONNX Runtime runner (CPU, or the CUDA execution provider when onnxruntime-gpu and a GPU are present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deploykit.errors import BackendUnavailableError
from deploykit.runtime.base import Backend
from deploykit.runtime.gpu import ort_provider_missing
from deploykit.util.system import cpu_count

_PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


GRAPH_LEVELS = ("all", "extended")  # ORT_ENABLE_ALL (NCHWc conv layout) / ORT_ENABLE_EXTENDED (plain NCHW)


def default_threads() -> int:
    """One intra-op thread per CPU this process may run on."""
    return cpu_count()


def cpu_session_options(threads: int | None = None, graph: str = "all"):
    """deploykit's ONNX Runtime CPU session: ``threads`` intra-op AND inter-op (default one per visible CPU),
    sequential execution, CPU arena on, **memory pattern off**, graph optimisation ``all`` or ``extended``.

    Why the memory pattern is off: with it on, a session whose first run is at the size it will keep running at
    (a bench case, an app on fixed-size frames) allocates the pattern's block on the second run while the arena
    still holds the first run's tensors -- the steady peak is 1.6-1.9x (EDSR m_x4 256^2: 1,114 MB first run,
    1,820 MB from the second on; off: 1,116 MB flat), at no measured speed cost (``benchmarks/ort_memory.py``).
    ``extended`` skips the NCHWc layout transformer: no reorder copies of full-size tensors (8-30 % less peak
    memory measured at 256^2 across the zoo) at the cost of MLAS's blocked convolutions (0-90 % slower, by model):
    the runner for frames that fit only that way (``deploykit bench`` picks it per case)."""
    import onnxruntime as ort

    if graph not in GRAPH_LEVELS:
        raise BackendUnavailableError(f"unknown ONNX Runtime graph level {graph!r} (use {' or '.join(GRAPH_LEVELS)})")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = threads or default_threads()
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_mem_pattern = False
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if graph == "all"
                                     else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    return opts


class OrtBackend(Backend):
    """One InferenceSession over an ONNX file; float16 graph inputs are fed as float16 automatically."""

    def __init__(self, path: str | Path, *, device: str = "cpu", precision: str = "fp32",
                 threads: int | None = None, session_options=None):
        """``session_options``: an ``onnxruntime.SessionOptions`` to start from (graph optimisation level,
        profiling, memory pattern …; default :func:`cpu_session_options`); its thread count is kept when set, else
        ``threads`` / one per visible CPU."""
        import onnxruntime as ort

        if device not in _PROVIDERS:
            raise BackendUnavailableError(f"unknown ONNX Runtime device '{device}' (use cpu or cuda)")
        if device == "cuda" and ort_provider_missing("CUDAExecutionProvider"):
            raise BackendUnavailableError(ort_provider_missing("CUDAExecutionProvider"))
        options = session_options if session_options is not None else cpu_session_options(threads)
        if threads or not options.intra_op_num_threads:
            options.intra_op_num_threads = threads or default_threads()
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=_PROVIDERS[device])
        self.path = Path(path)
        self.name, self.device, self.precision = f"ort-{device}", device, precision
        self._in = {i.name: (np.float16 if i.type == "tensor(float16)" else np.float32)
                    for i in self.session.get_inputs()}

    @property
    def threads(self) -> int:
        """The intra-op thread count the session really has (read back from it, not what was asked for)."""
        return int(self.session.get_session_options().intra_op_num_threads)

    def describe(self) -> dict:
        return {**super().describe(), "intra_op_threads": self.threads}

    @property
    def input_names(self) -> list[str]:
        return list(self._in)

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ort_feed = {n: np.ascontiguousarray(feed[n], dtype=dt) for n, dt in self._in.items()}
        outs = self.session.run(None, ort_feed)
        return {n: o.astype(np.float32, copy=False) for n, o in zip(self.output_names, outs)}

    def close(self) -> None:
        self.session = None
