"""deploykit: PyTorch image-restoration networks to ONNX, TensorRT and honest numbers.

The public names are loaded on first use, so ``import deploykit`` (and the Triton client, the C++ helpers and the
CLI's help) do not pay for importing torch.
"""

from __future__ import annotations

from deploykit.lazy import lazy_attributes

__version__ = "0.1.0"

__getattr__ = lazy_attributes(globals(), {
    "build_model": "deploykit.factory",
    "create_model": "deploykit.factory",
    "ModelSpec": "deploykit.zoo",
    "get_spec": "deploykit.zoo",
    "list_models": "deploykit.zoo",
})


def export(*args, **kwargs):
    """Export a zoo model to ONNX artifacts + manifest (see ``deploykit.export_pipeline.export``)."""
    from deploykit.export_pipeline import export as _export

    return _export(*args, **kwargs)


__all__ = ["ModelSpec", "build_model", "create_model", "export", "get_spec", "list_models", "__version__"]
