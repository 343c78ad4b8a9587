"""What a model is, for its callers: ModelSpec and the small records it is made of.

A ModelSpec says everything a caller must know without reading the model (spandrel's descriptor idea): inputs and
outputs, scale, shape contract, value range, checkpoint format and FP16 notes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from deploykit.errors import ShapeContractError


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, channels, and what it carries."""

    name: str
    channels: int
    description: str = ""

@dataclass(frozen=True)
class CheckpointFormat:
    """How the official weight files are laid out.

    ``keys`` is the preference order of wrapper keys to unwrap (first found wins); ``legacy`` names
    other layouts the loader can remap (see ``deploykit.zoo.checkpoints.LEGACY_LAYOUTS``).
    """

    keys: tuple[str, ...] = ("params", "params_ema", "state_dict")
    legacy: tuple[str, ...] = ()
    notes: str = ""

@dataclass(frozen=True)
class Fp16Policy:
    """Per-model FP16 decisions: ONNX op types kept in FP32 and the PSNR floor for FP16 parity."""

    keep_fp32_ops: tuple[str, ...] = ()
    min_psnr_db: float = 40.0
    notes: str = ""

@dataclass(frozen=True)
class ModelSpec:
    """A registered model variant: how to build it and the contract its callers rely on."""

    family: str
    variant: str
    task: str
    builder: str  # "module:Class" inside models_src
    kwargs: dict[str, Any]
    params: int  # official distinct nn.Parameter count (tests reproduce it)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    image_output: int = 0
    scale: int = 1
    multiple_of: int = 1
    min_size: int = 1
    square: bool = False
    value_range: tuple[float, float] = (0.0, 1.0)
    checkpoint: CheckpointFormat = field(default_factory=CheckpointFormat)
    fp16: Fp16Policy = field(default_factory=Fp16Policy)
    exporters: tuple[str, ...] = ("dynamo", "legacy")  # preference; the first that passes the checks wins
    source: str = ""
    notes: str = ""
    tile: int | None = None  # largest square input side the export is sized for (PANet: memory ~ (H*W)^2)
    chop: dict[str, int] | None = None  # official recursive chop {"shave", "min_size"} (deploykit.imaging.chop)
    ort_arena: str = "session"  # ONNX Runtime CPU arena: the session's own, "shared" same-as-requested, or "none"
    # (plain malloc); chosen per model by measurement (benchmarks/ort_memory.py)

    @property
    def name(self) -> str:
        return f"{self.family}:{self.variant}"

    @property
    def in_channels(self) -> int:
        return self.inputs[0].channels

    @property
    def out_channels(self) -> int:
        return self.outputs[self.image_output].channels

    def build(self):
        """Instantiate the reference module (random init, train mode as torch creates it)."""
        module_name, _, class_name = self.builder.partition(":")
        cls = getattr(importlib.import_module(f"models_src.{module_name}"), class_name)
        return cls(**self.kwargs)

    def check_size(self, height: int, width: int) -> None:
        """Raise ShapeContractError when (height, width) breaks the shape contract."""
        problems = []
        if height % self.multiple_of or width % self.multiple_of:
            problems.append(f"sides must be multiples of {self.multiple_of}")
        if min(height, width) < self.min_size:
            problems.append(f"sides must be at least {self.min_size}")
        if self.square and height != width:
            problems.append("input must be square")
        if problems:
            raise ShapeContractError(
                f"{self.name} cannot take {height}x{width} (HxW): {'; '.join(problems)}. "
                "Pad the image (reflect, right/bottom) to the contract and crop the output back."
            )

    def valid_size(self, size: int) -> int:
        """The smallest size >= ``size`` that meets the contract (for picking test shapes)."""
        size = max(size, self.min_size)
        return -(-size // self.multiple_of) * self.multiple_of

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return height * self.scale, width * self.scale

@dataclass(frozen=True)
class Family:
    """A model family: its variants and which one a bare name means."""

    name: str
    description: str
    task: str  # short, for tables
    default: str
    variants: dict[str, ModelSpec]
