"""ONNX Runtime runner (CPU, or the CUDA execution provider when onnxruntime-gpu and a GPU are present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deploykit.errors import BackendUnavailableError
from deploykit.runtime.base import Backend
from deploykit.runtime.gpu import ort_provider_missing
from deploykit.util.system import cpu_count

_PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def default_threads() -> int:
    """One intra-op thread per CPU this process may run on."""
    return cpu_count()


class OrtBackend(Backend):
    """One InferenceSession over an ONNX file; float16 graph inputs are fed as float16 automatically."""

    def __init__(self, path: str | Path, *, device: str = "cpu", precision: str = "fp32",
                 threads: int | None = None, session_options=None):
        """``session_options``: an ``onnxruntime.SessionOptions`` to start from (graph optimisation level,
        profiling, memory pattern …); its thread count is kept when set, else ``threads`` / one per visible CPU."""
        import onnxruntime as ort

        if device not in _PROVIDERS:
            raise BackendUnavailableError(f"unknown ONNX Runtime device '{device}' (use cpu or cuda)")
        if device == "cuda" and ort_provider_missing("CUDAExecutionProvider"):
            raise BackendUnavailableError(ort_provider_missing("CUDAExecutionProvider"))
        options = session_options if session_options is not None else ort.SessionOptions()
        if threads or not options.intra_op_num_threads:
            options.intra_op_num_threads = threads or default_threads()
        if session_options is None:
            options.log_severity_level = 3
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
