"""Native TensorRT runner: a built engine behind the common Backend interface.

Construct it from an export directory and the engine's manifest entry (or ``from_engine_file``). Before the plan
is deserialised, the entry's TensorRT version and compute capability are compared with this machine's and the
file's sha256 with the entry's: an engine built elsewhere is refused with a clear EngineMismatchError instead of
TensorRT's deserialisation error. Inputs get their shapes with ``set_input_shape`` (checked against the profile
first), I/O lives on the GPU (torch CUDA tensors when torch has CUDA, else cuda-python ``cudaMalloc``), and
``execute_async_v3`` runs on the backend's own stream. ``cuda_graph=True`` (torch with CUDA only) captures one
CUDA graph per input-shape signature after a first flush run, and replays it afterwards.

This module imports TensorRT, torch's CUDA side and cuda-python only inside the class, never at import time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deploykit.artifacts.engines import (
    check_engine_identity,
    find_engine,
    verify_engine_file,
)
from deploykit.artifacts.manifest import read_manifest
from deploykit.errors import BackendUnavailableError, EngineError
from deploykit.runtime.base import Backend
from deploykit.runtime.gpu import _cudart, gpu_info, import_tensorrt
from deploykit.runtime.profiles import Profile


class _TorchDevice:
    """Device memory and a stream from torch (the common case on GPU machines with CUDA torch)."""

    kind = "torch"

    def __init__(self, index: int):
        import torch

        self.torch, self.index = torch, index
        self.device = torch.device("cuda", index)
        torch.cuda.set_device(self.device)  # TensorRT deserialises and runs on the current device
        self.stream = torch.cuda.Stream(self.device)

    @property
    def handle(self) -> int:
        return self.stream.cuda_stream

    def empty(self, shape, dtype: np.dtype):
        torch_dtype = self.torch.from_numpy(np.empty(0, dtype=dtype)).dtype
        return self.torch.empty(tuple(shape), dtype=torch_dtype, device=self.device)

    @staticmethod
    def ptr(buf) -> int:
        return int(buf.data_ptr())

    def upload(self, buf, array: np.ndarray) -> None:
        with self.torch.cuda.stream(self.stream):
            buf.copy_(self.torch.from_numpy(np.ascontiguousarray(array)))

    def download(self, buf) -> np.ndarray:
        self.stream.synchronize()
        return buf.cpu().numpy()

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        self.stream.synchronize()


class _CudaPythonBuffer:
    def __init__(self, ptr: int, shape, dtype: np.dtype):
        self.ptr, self.shape, self.dtype = ptr, tuple(shape), np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize


class _CudaPythonDevice:
    """Device memory and a stream from cuda-python's runtime bindings (torch without CUDA)."""

    kind = "cuda-python"

    def __init__(self, index: int):

        try:
            self.rt = _cudart()
        except ImportError:
            raise BackendUnavailableError("TensorRT needs device memory: install torch with CUDA or cuda-python "
                                          "(pip install 'deploykit[gpu]' cuda-python)") from None
        self._check(self.rt.cudaSetDevice(index))
        self._stream = self._check(self.rt.cudaStreamCreate())
        self._buffers: list[_CudaPythonBuffer] = []

    def _check(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise EngineError(f"CUDA runtime error {err}")
        return rest[0] if len(rest) == 1 else (rest or None)

    @property
    def handle(self) -> int:
        return int(self._stream)

    def empty(self, shape, dtype: np.dtype) -> _CudaPythonBuffer:
        buf = _CudaPythonBuffer(0, shape, dtype)
        buf.ptr = int(self._check(self.rt.cudaMalloc(max(buf.nbytes, 1))))
        self._buffers.append(buf)
        return buf

    @staticmethod
    def ptr(buf: _CudaPythonBuffer) -> int:
        return buf.ptr

    def upload(self, buf: _CudaPythonBuffer, array: np.ndarray) -> None:
        host = np.ascontiguousarray(array, dtype=buf.dtype)
        self._check(self.rt.cudaMemcpyAsync(buf.ptr, host.ctypes.data, host.nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream))
        self._check(self.rt.cudaStreamSynchronize(self._stream))  # the host array may go away after return

    def download(self, buf: _CudaPythonBuffer) -> np.ndarray:
        out = np.empty(buf.shape, dtype=buf.dtype)
        self._check(self.rt.cudaMemcpyAsync(out.ctypes.data, buf.ptr, buf.nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream))
        self._check(self.rt.cudaStreamSynchronize(self._stream))
        return out

    def synchronize(self) -> None:
        self._check(self.rt.cudaStreamSynchronize(self._stream))

    def close(self) -> None:
        for buf in self._buffers:
            self.rt.cudaFree(buf.ptr)
        self._buffers.clear()
        self.rt.cudaStreamDestroy(self._stream)


def _device_memory(index: int):
    try:
        import torch

        if torch.cuda.is_available():
            return _TorchDevice(index)
    except ImportError:
        pass
    return _CudaPythonDevice(index)


class TensorRTBackend(Backend):
    """``run(feed)`` on a TensorRT engine recorded in an export's manifest."""

    def __init__(self, export_dir: str | Path, entry: dict | None = None, *, key: str | None = None,
                 precision: str | None = None, device: int = 0, cuda_graph: bool = False):
        export_dir = Path(export_dir)
        if entry is None:
            entry = find_engine(read_manifest(export_dir), key=key, precision=precision)
        trt = import_tensorrt()
        gpu = gpu_info(device)
        # identity first: a foreign plan is refused here, never handed to deserialize_cuda_engine
        self.warnings = check_engine_identity(entry, tensorrt_version=trt.__version__,
                                              compute_capability=gpu.compute_capability, gpu_name=gpu.name)
        path = verify_engine_file(export_dir, entry)
        self.trt, self.entry, self.path = trt, entry, path
        self.profile = Profile.from_dict(entry["profile"])
        self._mem = _device_memory(device)
        if cuda_graph and self._mem.kind != "torch":
            raise BackendUnavailableError("cuda_graph=True needs torch built with CUDA (captured with "
                                          "torch.cuda.graph); run without it or install a CUDA torch")
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EngineError(f"TensorRT {trt.__version__} could not deserialize {path.name} although its manifest "
                              "entry matches this machine; rebuild it with 'deploykit build'")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EngineError(f"TensorRT could not create an execution context for {path.name} (out of device "
                              "memory? see the TensorRT log)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._inputs = [n for n in names if is_input[n]]
        self._outputs = [n for n in names if not is_input[n]]
        self._dtype = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.cuda_graph = cuda_graph
        self._buffers: dict[tuple, dict[str, object]] = {}
        self._graphs: dict[tuple, object] = {}
        self.name, self.device, self.precision = "tensorrt", f"cuda:{device} ({gpu.name})", entry["precision"]

    @classmethod
    def from_engine_file(cls, engine_file: str | Path, **kwargs) -> "TensorRTBackend":
        """The engine's entry is looked up by file name in the manifest next to it."""
        engine_file = Path(engine_file)
        entry = find_engine(read_manifest(engine_file.parent), file=engine_file.name)
        return cls(engine_file.parent, entry, **kwargs)

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def describe(self) -> dict:
        return {**super().describe(), "engine": self.path.name, "tensorrt": self.trt.__version__,
                "cuda_graph": self.cuda_graph, "memory": self._mem.kind}

    def _check_shapes(self, feed: dict[str, np.ndarray]) -> tuple:
        missing = [n for n in self._inputs if n not in feed]
        if missing:
            raise EngineError(f"missing inputs {missing}; the engine takes {self._inputs}")
        shapes = tuple(tuple(int(d) for d in feed[n].shape) for n in self._inputs)
        for name, shape in zip(self._inputs, shapes):
            if len(shape) != 4 or not self.profile.contains(shape[0], shape[2], shape[3]):
                p = self.profile
                raise EngineError(
                    f"input {name} {list(shape)} is outside the engine's profile (batch 1..{p.max_batch}, "
                    f"height {p.min_hw[0]}..{p.max_hw[0]}, width {p.min_hw[1]}..{p.max_hw[1]}); tile the image or "
                    "build an engine with a larger --profile")
        return shapes

    def _bind(self, shapes: tuple) -> dict[str, object]:
        """Set input shapes, then allocate (once per shape signature) and bind every I/O tensor."""
        for name, shape in zip(self._inputs, shapes):
            if not self.context.set_input_shape(name, shape):
                raise EngineError(f"TensorRT refused the shape {list(shape)} for input {name}")
        buffers = self._buffers.get(shapes)
        if buffers is None:
            buffers = {n: self._mem.empty(s, self._dtype[n]) for n, s in zip(self._inputs, shapes)}
            for name in self._outputs:
                out_shape = tuple(self.context.get_tensor_shape(name))
                if any(d < 0 for d in out_shape):
                    raise EngineError(f"output {name} has an unresolved shape {list(out_shape)}")
                buffers[name] = self._mem.empty(out_shape, self._dtype[name])
            self._buffers[shapes] = buffers
        for name, buf in buffers.items():
            self.context.set_tensor_address(name, self._mem.ptr(buf))
        return buffers

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self._mem.handle):
            raise EngineError("TensorRT execute_async_v3 reported a failure (see the TensorRT log)")

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shapes = self._check_shapes(feed)
        buffers = self._bind(shapes)
        for name in self._inputs:
            self._mem.upload(buffers[name], np.asarray(feed[name], dtype=self._dtype[name]))
        if self.cuda_graph:
            graph = self._graphs.get(shapes)
            if graph is None:
                self._enqueue()  # first run flushes deferred shape work; graphs capture steady-state launches
                self._mem.synchronize()
                torch = self._mem.torch
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self._mem.stream):
                    self._enqueue()
                self._graphs[shapes] = graph
            with self._mem.torch.cuda.stream(self._mem.stream):
                graph.replay()
        else:
            self._enqueue()
        self._mem.synchronize()
        return {n: self._mem.download(buffers[n]).astype(np.float32, copy=False) for n in self._outputs}

    def close(self) -> None:
        mem = getattr(self, "_mem", None)
        if mem is not None:
            mem.synchronize()
            self._graphs.clear()
            self._buffers.clear()
            mem.close()
        self.context = self.engine = None
