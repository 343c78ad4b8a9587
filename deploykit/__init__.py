"""deploykit: PyTorch image-restoration networks to ONNX, TensorRT and honest numbers."""

from deploykit.factory import build_model, create_model
from deploykit.zoo import ModelSpec, get_spec, list_models

__version__ = "0.1.0"


def export(*args, **kwargs):
    """Export a zoo model to ONNX artifacts + manifest (see ``deploykit.export_pipeline.export``)."""
    from deploykit.export_pipeline import export as _export

    return _export(*args, **kwargs)


__all__ = ["ModelSpec", "build_model", "create_model", "export", "get_spec", "list_models", "__version__"]
