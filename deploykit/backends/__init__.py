"""Runtimes behind one interface: PyTorch (reference), ONNX Runtime; TensorRT plugs in here too."""

from deploykit.backends.base import Backend
from deploykit.backends.ort import OrtBackend
from deploykit.backends.torch_backend import TorchBackend

__all__ = ["Backend", "OrtBackend", "TorchBackend"]
