"""PyTorch eager runner: the FP32 reference every other backend is judged against."""

from __future__ import annotations

import numpy as np
import torch

from deploykit.backends.base import Backend


def as_output_list(result) -> list[torch.Tensor]:
    """Models return a tensor, a tuple (UDVD) or a list (MPRNet); normalise to a list."""
    return list(result) if isinstance(result, (list, tuple)) else [result]


@torch.inference_mode()
def run_named(fn, feed: dict[str, np.ndarray], input_names: list[str], output_names: list[str], device: str,
              dtype: torch.dtype = torch.float32) -> dict[str, np.ndarray]:
    """Call ``fn`` (a module or a loaded package) on the feed's arrays in ``input_names`` order; float32 numpy out."""
    args = [torch.from_numpy(np.ascontiguousarray(feed[n])).to(device, dtype) for n in input_names]
    outs = as_output_list(fn(*args))
    return {n: o.float().cpu().numpy() for n, o in zip(output_names, outs)}


class TorchBackend(Backend):
    """Runs an ``nn.Module`` with named inputs in the zoo's order; outputs named as the spec says.

    Like ``nn.Module.to``, it puts the module in eval mode and moves/casts it in place: pass a copy to keep the
    caller's module as it was (bench does, for FP16 and device runs).
    """

    def __init__(self, module: torch.nn.Module, input_names: list[str], output_names: list[str], *,
                 device: str = "cpu", precision: str = "fp32", name: str = "torch",
                 compute_dtype: torch.dtype | None = None):
        """``compute_dtype`` overrides the dtype implied by ``precision`` (FP16 emulated in float32 on CPU)."""
        self.module = module.eval().to(device)
        self._dtype = compute_dtype or (torch.float16 if precision == "fp16" else torch.float32)
        self.module = self.module.to(self._dtype)
        self._inputs, self._outputs = list(input_names), list(output_names)
        self.name, self.device, self.precision = name, device, precision

    @property
    def input_names(self) -> list[str]:
        return self._inputs

    @property
    def output_names(self) -> list[str]:
        return self._outputs

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_named(self.module, feed, self._inputs, self._outputs, self.device, self._dtype)
