"""Runtimes behind one interface: PyTorch (reference), ONNX Runtime, ONNX Runtime GPU, TensorRT.

Loaded on first use, so ``from deploykit.backends import OrtBackend`` (the Triton client, ONNX-only tools) does
not import torch.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Backend": "deploykit.backends.base",
    "OrtBackend": "deploykit.backends.ort",
    "TorchBackend": "deploykit.backends.torch_backend",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'deploykit.backends' has no attribute {name!r}")


__all__ = ["Backend", "OrtBackend", "TorchBackend"]
