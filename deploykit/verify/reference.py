"""The PyTorch FP32 reference of an export: the model its manifest names, with the weights it was exported from.

Every check against PyTorch (``deploykit parity``, engine parity, AOTI packaging, goldens) builds its reference
here; runners of an in-memory model use ``TorchBackend.for_image``, which this wraps.
"""

from __future__ import annotations

from pathlib import Path

from deploykit.runtime.torch_backend import TorchBackend
from deploykit.zoo.factory import build_recorded_model
from deploykit.zoo.spec import ModelSpec


def reference_backend(manifest: dict, *, device: str = "cpu", weights: str | Path | None = None,
                      unsafe_pickle: bool = False) -> tuple[TorchBackend, ModelSpec]:
    """(FP32 runner of the manifest's model and weights on ``device``, its spec); the image output only."""
    model, spec = build_recorded_model(manifest, weights, unsafe_pickle=unsafe_pickle)
    return TorchBackend.for_image(model, spec, device=device), spec
