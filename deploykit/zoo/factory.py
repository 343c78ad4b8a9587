"""``create_model``: the one door from a zoo name (and optional official weights) to an eval-mode module."""

from __future__ import annotations

from pathlib import Path

import torch

from deploykit.errors import ArtifactError
from deploykit.util.files import sha256_file
from deploykit.zoo.checkpoints import LoadReport, load_weights
from deploykit.zoo.registry import get_spec
from deploykit.zoo.spec import ModelSpec

DEFAULT_SEED = 0


def build_model(name: str | ModelSpec, weights: str | Path | None = None, *, seed: int = DEFAULT_SEED,
                unsafe_pickle: bool = False) -> tuple[torch.nn.Module, ModelSpec, LoadReport | None]:
    """Build a variant in eval mode; random init is seeded so exports without weights are reproducible."""
    spec = name if isinstance(name, ModelSpec) else get_spec(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.build()
    report = load_weights(model, spec, weights, unsafe_pickle=unsafe_pickle) if weights is not None else None
    return model.eval(), spec, report


def create_model(name: str, weights: str | Path | None = None, *, seed: int = DEFAULT_SEED,
                 unsafe_pickle: bool = False) -> torch.nn.Module:
    """timm-style entry point: ``create_model("mirnetv2:sr_x4", weights="sr_x4.pth")``."""
    return build_model(name, weights, seed=seed, unsafe_pickle=unsafe_pickle)[0]


def build_recorded_model(manifest: dict, weights: str | Path | None = None, *,
                         unsafe_pickle: bool = False) -> tuple[torch.nn.Module, ModelSpec]:
    """(model, spec) an export was made from, as its manifest records it: the weights file, sha256-checked, or the
    seed of a random init. ``weights`` overrides the recorded file (a moved checkpoint)."""
    recorded = manifest.get("weights", {})
    if weights is None and recorded.get("source") == "file":
        weights = recorded["path"]
        if not Path(weights).exists():
            raise ArtifactError(f"the weights the export was made from ({weights}) are gone; pass them with --weights "
                                "or re-run 'deploykit export'")
        if sha256_file(weights) != recorded.get("sha256"):
            raise ArtifactError(f"{weights} changed since the export (sha256 differs); pass --weights explicitly or "
                                "re-run 'deploykit export'")
    model, spec, _ = build_model(manifest["model"]["name"], weights, seed=int(recorded.get("seed", DEFAULT_SEED)),
                                 unsafe_pickle=unsafe_pickle)
    return model, spec
