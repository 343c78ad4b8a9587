"""deploykit: PyTorch image-restoration networks to ONNX, TensorRT and honest numbers.

The public facade: ``create_model`` / ``build_model`` / ``get_spec`` / ``list_models`` / ``ModelSpec`` and
``export``. The names are loaded on first use, so ``import deploykit`` (and the Triton client, the C++ helpers and
the CLI's help) do not pay for importing torch. The code's map is docs/architecture.md.
"""

from __future__ import annotations

from deploykit._version import __version__
from deploykit.util.lazy import lazy_attributes

__getattr__ = lazy_attributes(globals(), {
    "build_model": "deploykit.zoo.factory",
    "create_model": "deploykit.zoo.factory",
    "ModelSpec": "deploykit.zoo.spec",
    "get_spec": "deploykit.zoo.registry",
    "list_models": "deploykit.zoo.registry",
})


def export(*args, **kwargs):
    """Export a zoo model to ONNX artifacts + manifest (see ``deploykit.exporting.pipeline.export``)."""
    from deploykit.exporting.pipeline import export as _export

    return _export(*args, **kwargs)


__all__ = ["ModelSpec", "build_model", "create_model", "export", "get_spec", "list_models", "__version__"]
