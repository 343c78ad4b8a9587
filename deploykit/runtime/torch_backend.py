"""PyTorch eager runner: the FP32 reference every other backend is judged against."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from deploykit.runtime.base import Backend
from deploykit.zoo.spec import ModelSpec


def as_output_list(result) -> list[torch.Tensor]:
    """Models return a tensor, a tuple (UDVD) or a list (MPRNet); normalise to a list."""
    return list(result) if isinstance(result, (list, tuple)) else [result]


@contextlib.contextmanager
def strict_fp32(device: str = "cuda"):
    """No TF32 while the block runs: PyTorch on CUDA uses TF32 for convolutions by default, and an FP32 reference or
    FP32 parity must be real FP32. A no-op for a CPU ``device``."""
    if not str(device).startswith("cuda"):
        yield
        return
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class CallableBackend(Backend):
    """A PyTorch callable with named inputs in the zoo's order and named outputs. ``module`` is the callable: an
    ``nn.Module`` or a loaded AOTInductor package."""

    def __init__(self, module, input_names: list[str], output_names: list[str], *, device: str = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.module, self.device, self._dtype = module, device, dtype
        self._inputs, self._outputs = list(input_names), list(output_names)

    @property
    def input_names(self) -> list[str]:
        return self._inputs

    @property
    def output_names(self) -> list[str]:
        return self._outputs

    @torch.inference_mode()
    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feed[n])).to(self.device, self._dtype) for n in self._inputs]
        outs = as_output_list(self.module(*args))
        return {n: o.float().cpu().numpy() for n, o in zip(self._outputs, outs)}


class TorchBackend(CallableBackend):
    """Runs an ``nn.Module`` with named inputs in the zoo's order; outputs named as the spec says.

    Like ``nn.Module.to``, it puts the module in eval mode and moves/casts it in place: pass a copy to keep the
    caller's module as it was (bench does, for FP16 and device runs).
    """

    def __init__(self, module: torch.nn.Module, input_names: list[str], output_names: list[str], *,
                 device: str = "cpu", precision: str = "fp32", name: str = "torch",
                 compute_dtype: torch.dtype | None = None):
        """``compute_dtype`` overrides the dtype implied by ``precision`` (FP16 emulated in float32 on CPU)."""
        dtype = compute_dtype or (torch.float16 if precision == "fp16" else torch.float32)
        super().__init__(module.eval().to(device).to(dtype), input_names, output_names, device=device, dtype=dtype)
        self.name, self.precision = name, precision

    @classmethod
    def for_image(cls, model: nn.Module, spec: ModelSpec, *, device: str = "cpu", precision: str = "fp32",
                  name: str | None = None, compute_dtype: torch.dtype | None = None) -> "TorchBackend":
        """The one way a zoo model becomes a runner: its image output only, inputs and output named as the spec
        says. With FP32 weights this is the reference every other backend is judged against."""
        return cls(ImageOutput(model, spec.image_output), [t.name for t in spec.inputs],
                   [spec.outputs[spec.image_output].name], device=device, precision=precision,
                   name=name or ("torch" if device == "cpu" else f"torch-{device}"), compute_dtype=compute_dtype)


def compiled_backend(module: nn.Module, input_names: list[str], output_names: list[str], *, device: str,
                     precision: str) -> TorchBackend:
    """A TorchBackend over a ``torch.compile``'d copy of ``module`` (compiled lazily by the first run)."""
    import copy

    backend = TorchBackend(copy.deepcopy(module), input_names, output_names, device=device, precision=precision,
                           name="torch-compile")
    backend.module = torch.compile(backend.module, dynamic=False)
    return backend


class ImageOutput(nn.Module):
    """Wraps a model so the graph has exactly one output: the image (MPRNet's [0], UDVD's [2])."""

    def __init__(self, model: nn.Module, index: int):
        super().__init__()
        self.model, self.index = model, index

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return as_output_list(self.model(*inputs))[self.index]
