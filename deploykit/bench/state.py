"""What the bench keeps per model while its cases run: the model and its PyTorch FP32 reference runner, the FLOP
count, a meta-device copy for memory traces, and the caches its cases share (ONNX paths, reference outputs,
traces, memory calibrations). Built once per model, dropped before the next one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch

from deploykit.bench.autotile import receptive_radius
from deploykit.bench.flops import (
    MemoryTrace,
    count_flops,
    flops_at,
    meta_copy,
    trace_peak_bytes,
    traffic_at,
)
from deploykit.bench.sources import Target
from deploykit.runtime.torch_backend import TorchBackend
from deploykit.util.sizes import Size, fmt_wxh
from deploykit.zoo.factory import build_model, build_recorded_model


class ModelState:
    """Per model: the reference module, FLOP count, a meta copy for memory traces, cached ORT paths."""

    def __init__(self, target: Target, device: str):
        self.target, self.spec = target, target.spec
        if target.manifest is not None:
            self.model, _ = build_recorded_model(target.manifest)
            self.weights = target.manifest.get("weights", {}).get("source", "random-init")
        else:
            self.model, _, _ = build_model(target.spec)
            self.weights = "random-init"
        self.reference = TorchBackend.for_image(copy.deepcopy(self.model), self.spec, device=device,
                                                name=f"torch-{device}")
        self.module = self.reference.module
        self.output_name = self.spec.outputs[self.spec.image_output].name
        self.input_names = [t.name for t in self.spec.inputs]
        self.flops = count_flops(self.module, self.spec)
        self.meta = meta_copy(self.module)
        self._exact_flops: dict[Size, int] = {}
        self._exact_traffic: dict[Size, int] = {}
        self.onnx: dict[str, tuple] = {}  # precision -> sources.onnx_for(...)
        self.ref_outputs: dict[tuple, np.ndarray] = {}  # (hw, batch) -> reference output, current size only
        self._traces: dict[tuple, MemoryTrace] = {}
        self.calibrations: dict[tuple, dict] = {}  # (backend, precision, batch) -> memory.probe_calibration(...)
        self.tiling_checks: dict[tuple, dict] = {}  # (size, tile, overlap) -> autotile.tiling_check(...)
        self._radius: int | None = None

    @property
    def receptive_radius(self) -> int:
        """The convolutional receptive radius bound (``autotile.receptive_radius``), computed once."""
        if self._radius is None:
            self._radius = receptive_radius(self.meta, self.spec)
        return self._radius

    def flops_at(self, hw: Size) -> tuple[int, str]:
        """(FLOPs per image at hw, how): scaled from the base count, or counted at hw when not linear."""
        if self.flops.linear:
            return self.flops.at(*hw), f"scaled linearly from {fmt_wxh(self.flops.base_hw)}"
        if hw not in self._exact_flops:
            self._exact_flops[hw] = flops_at(self.meta, self.spec, *hw)
        return self._exact_flops[hw], (f"counted at this size (not linear in pixels: {self.flops.linearity_error:.0%} "
                                       f"off at {fmt_wxh(self.flops.check_hw)})")

    def traffic_at(self, hw: Size) -> int | None:
        """Unfused eager traffic bytes per image at hw (``flops.TRAFFIC_METHOD``): the counted line, or counted at
        hw when the FLOPs are not linear (attention)."""
        if self.flops.linear:
            return self.flops.traffic_at(*hw)
        if hw not in self._exact_traffic:
            self._exact_traffic[hw] = traffic_at(self.meta, self.spec, *hw)
        return self._exact_traffic[hw]

    def trace_at(self, batch: int, dtype: str = "fp32", heap_factor: float = 1.0) -> Callable[[int], int]:
        """T -> traced peak bytes at T x T (for tile suggestions), the heap-resident share weighted by
        ``heap_factor`` (``MemoryTrace.effective_bytes``)."""
        return lambda tile: self.trace((tile, tile), batch, dtype).effective_bytes(heap_factor)

    def trace(self, hw: Size, batch: int, dtype: str = "fp32") -> MemoryTrace:
        """Peak live activation bytes of one eager forward at ``hw`` (meta-device trace, cached)."""
        key = (hw, batch, dtype)
        if key not in self._traces:
            fp16 = dtype == "fp16"
            self._traces[key] = trace_peak_bytes(self.module, self.spec, *hw, batch=batch,
                                                 dtype=torch.float16 if fp16 else torch.float32,
                                                 meta_module=copy.deepcopy(self.meta) if fp16 else self.meta)
        return self._traces[key]
