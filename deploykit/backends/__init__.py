"""Runtimes behind one interface: PyTorch (reference), ONNX Runtime, ONNX Runtime GPU, TensorRT.

Loaded on first use, so ``from deploykit.backends import OrtBackend`` (the Triton client, ONNX-only tools) does
not import torch.
"""

from __future__ import annotations

from deploykit.lazy import lazy_attributes

__getattr__ = lazy_attributes(globals(), {
    "Backend": "deploykit.backends.base",
    "OrtBackend": "deploykit.backends.ort",
    "TorchBackend": "deploykit.backends.torch_backend",
})

__all__ = ["Backend", "OrtBackend", "TorchBackend"]
