"""FLOPs per image with ``torch.utils.flop_counter.FlopCounterMode``, and the memory trace the bench guard uses.

How FLOPs are counted (stated in every benchmark record):

* ``FlopCounterMode`` counts the FLOPs of convolutions, matmuls and their relatives as 2 x multiply-accumulates;
  element-wise work (activations, norms, softmax, pads, PixelConv's multiply-accumulate written as element-wise
  ops) is not counted. This is the convention of the FLOP tables in the literature (and of
  ``../shared/reference/ecosystem.md`` §3.1).
* The count runs once per model at a small base size (64 x 64, rounded up to the shape contract) on the **meta
  device** (shapes only: no arithmetic, so it costs milliseconds even for RCAN) and is **scaled linearly by the
  pixel count** to any resolution. These networks are fully convolutional, so conv FLOPs are exactly proportional
  to H x W; :func:`count_flops` checks that at a second size and records the relative deviation.

:func:`trace_peak_bytes` runs the model on the meta device under a dispatch mode that tracks the bytes of every
tensor storage an op creates until its last tensor dies: the peak of live activation bytes of one eager forward
(weights and the inputs excluded). The bench's memory guard scales it with a safety factor.
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from deploykit.zoo.spec import ModelSpec

FLOPS_METHOD = ("torch.utils.flop_counter.FlopCounterMode (conv/matmul FLOPs = 2 x MACs; element-wise ops not "
                "counted), counted once at a small size on the meta device and scaled linearly by pixel count "
                "(the networks are fully convolutional)")
TRAFFIC_METHOD = ("bytes every non-view ATen op of one eager forward reads (its tensor arguments, weights included) "
                  "and writes (its outputs), on the meta device: an unfused runtime's traffic, each op touching "
                  "its operands once; a fusing runtime (ONNX Runtime) moves less")
BASE_SIZE = 64
LINEAR_TOLERANCE = 0.01  # above this relative deviation at the check size, count at each size instead of scaling


@dataclass
class FlopCount:
    """FLOPs of one image at ``base_hw`` (H, W) and the per-pixel rate derived from it; the memory traffic of an
    unfused eager forward at both sizes (``traffic_of``), for the roofline."""

    model: str
    base_hw: tuple[int, int]
    base_flops: int
    check_hw: tuple[int, int] | None = None
    check_flops: int | None = None
    linearity_error: float | None = None  # |predicted - counted| / counted at check_hw
    method: str = FLOPS_METHOD
    base_traffic_bytes: int | None = None
    check_traffic_bytes: int | None = None
    traffic_method: str = TRAFFIC_METHOD

    def traffic_at(self, height: int, width: int) -> int | None:
        """Traffic bytes per image at H x W: the line through the two counted sizes (weights are a fixed part)."""
        if self.base_traffic_bytes is None:
            return None
        if self.check_hw is None or self.check_traffic_bytes is None:
            return round(self.base_traffic_bytes * height * width / (self.base_hw[0] * self.base_hw[1]))
        p0, p1 = self.base_hw[0] * self.base_hw[1], self.check_hw[0] * self.check_hw[1]
        slope = (self.check_traffic_bytes - self.base_traffic_bytes) / (p1 - p0)
        return round(self.base_traffic_bytes + slope * (height * width - p0))

    @property
    def linear(self) -> bool:
        return self.linearity_error is None or self.linearity_error <= LINEAR_TOLERANCE

    @property
    def flops_per_pixel(self) -> float:
        return self.base_flops / (self.base_hw[0] * self.base_hw[1])

    def at(self, height: int, width: int) -> int:
        """FLOPs per image at H x W (input pixels), scaled linearly from the base count."""
        return round(self.flops_per_pixel * height * width)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["flops_per_pixel"] = self.flops_per_pixel
        return data


def meta_copy(module: nn.Module) -> nn.Module:
    """A meta-device copy of ``module`` (parameters without storage) for repeated traces and FLOP counts."""
    return copy.deepcopy(module).to("meta").eval()


def _meta_inputs(spec: ModelSpec, batch: int, height: int, width: int,
                 dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    return [torch.empty(batch, t.channels, height, width, device="meta", dtype=dtype) for t in spec.inputs]


def flops_of(module: nn.Module, inputs: list[torch.Tensor]) -> int:
    """Total FLOPs of one forward of ``module`` on ``inputs`` (any device; meta is free)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        module(*inputs)
    return int(counter.get_total_flops())


class _TrafficBytes(TorchDispatchMode):
    """Sums the bytes of each non-view op's tensor arguments and outputs (``TRAFFIC_METHOD``)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not getattr(func, "is_view", False):
            tensors = [t for t in tree_flatten((args, kwargs or {}, out))[0] if isinstance(t, torch.Tensor)]
            self.total += sum(t.numel() * t.element_size() for t in tensors)
        return out


def traffic_of(module: nn.Module, inputs: list[torch.Tensor]) -> int:
    """Bytes read and written by the ops of one forward of ``module`` on ``inputs`` (see ``TRAFFIC_METHOD``)."""
    mode = _TrafficBytes()
    with torch.inference_mode(), mode:
        module(*inputs)
    return int(mode.total)


def traffic_at(module: nn.Module, spec: ModelSpec, height: int, width: int) -> int:
    """Traffic bytes of one image at exactly H x W; ``module`` a meta copy (:func:`meta_copy`)."""
    return traffic_of(module, _meta_inputs(spec, 1, height, width))


def flops_at(module: nn.Module, spec: ModelSpec, height: int, width: int, *, meta: bool = True) -> int:
    """FLOPs of one image at exactly H x W (for models whose cost is not linear in the pixel count, e.g. global
    attention); ``module`` should already be a meta copy when ``meta`` (see :func:`meta_copy`)."""
    return _run_flops(module, spec, (height, width), meta)


def _run_flops(module: nn.Module, spec: ModelSpec, hw: tuple[int, int], meta: bool) -> int:
    if meta:
        return flops_of(module, _meta_inputs(spec, 1, *hw))
    return flops_of(module, [torch.rand(1, t.channels, *hw) for t in spec.inputs])


def count_flops(module: nn.Module, spec: ModelSpec, *, base: int = BASE_SIZE, check: bool = True) -> FlopCount:
    """Count FLOPs per image at ``base`` (rounded to the contract), and check linearity at a second size.

    Runs on a meta copy of ``module``; a model that cannot run on meta is counted on CPU at the same small size.
    """
    h = spec.valid_size(base)
    base_hw = (h, h)
    check_hw = (spec.valid_size(base + base // 2), spec.valid_size(2 * base))  # non-square on purpose
    traffic: list[int | None] = [None, None]
    try:
        meta = meta_copy(module)
        counted = _run_flops(meta, spec, base_hw, True)
        other = _run_flops(meta, spec, check_hw, True) if check else None
        traffic = [traffic_at(meta, spec, *base_hw), traffic_at(meta, spec, *check_hw) if check else None]
    except Exception:  # noqa: BLE001 (an op without a meta kernel: count for real, still at a small size)
        counted = _run_flops(module, spec, base_hw, False)
        other = _run_flops(module, spec, check_hw, False) if check else None
    result = FlopCount(spec.name, base_hw, counted, base_traffic_bytes=traffic[0], check_traffic_bytes=traffic[1])
    if other is not None:
        predicted = result.at(*check_hw)
        result.check_hw, result.check_flops = check_hw, other
        result.linearity_error = abs(predicted - other) / other if other else 0.0
    return result


# --- peak live activation bytes ---------------------------------------------------------------------------

HEAP_MAX_BLOCK = 32 * 2**20  # glibc: blocks under this may live on the heap (its dynamic mmap threshold's ceiling)


class _LiveBytes(TorchDispatchMode):
    """Tracks the bytes of storages created by ops until their last tensor is collected (peak = high water)."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, list[int]] = {}  # storage id -> [nbytes, tensors alive]
        self.current = 0
        self.peak = 0
        self.largest = 0
        self.current_heap = 0  # live bytes in storages under HEAP_MAX_BLOCK
        self.heap_peak = 0

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            self.current -= entry[0]
            if entry[0] < HEAP_MAX_BLOCK:
                self.current_heap -= entry[0]
            del self.live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage._cdata
            if key in self.live:
                self.live[key][1] += 1
            else:
                nbytes = storage.nbytes()
                self.live[key] = [nbytes, 1]
                self.current += nbytes
                self.peak = max(self.peak, self.current)
                self.largest = max(self.largest, nbytes)
                if nbytes < HEAP_MAX_BLOCK:
                    self.current_heap += nbytes
                    self.heap_peak = max(self.heap_peak, self.current_heap)
            weakref.finalize(t, self._release, key)
        return out


@dataclass
class MemoryTrace:
    """Peak live activation bytes of one eager forward at ``hw`` and batch ``batch`` (meta-device trace)."""

    hw: tuple[int, int]
    batch: int
    dtype: str
    peak_bytes: int
    largest_tensor_bytes: int
    output_bytes: int
    heap_peak_bytes: int = 0  # the most bytes live at once in tensors under HEAP_MAX_BLOCK (heap-allocated)

    def effective_bytes(self, heap_factor: float) -> int:
        """Traced bytes with the heap-resident share weighted by ``heap_factor`` (fragmentation measured by the
        memory probe): what the probe's line is applied to."""
        return int(self.peak_bytes + (heap_factor - 1.0) * self.heap_peak_bytes)

    @property
    def bytes_per_pixel(self) -> float:
        return self.peak_bytes / (self.batch * self.hw[0] * self.hw[1])

    def to_dict(self) -> dict:
        return {**asdict(self), "bytes_per_pixel": self.bytes_per_pixel}


def trace_peak_bytes(module: nn.Module, spec: ModelSpec, height: int, width: int, *, batch: int = 1,
                     dtype: torch.dtype = torch.float32, meta_module: nn.Module | None = None) -> MemoryTrace:
    """Peak bytes of live tensors created during one forward (weights and inputs excluded), traced on meta.

    ``meta_module`` lets a caller reuse one meta copy for many sizes.
    """
    meta = meta_module if meta_module is not None else meta_copy(module)
    if dtype != torch.float32:
        meta = meta.to(dtype)
    inputs = _meta_inputs(spec, batch, height, width, dtype)
    mode = _LiveBytes()
    with torch.inference_mode(), mode:
        out = meta(*inputs)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        out_bytes = sum(o.untyped_storage().nbytes() for o in outs if isinstance(o, torch.Tensor))
    del out, outs
    return MemoryTrace((height, width), batch, str(dtype).replace("torch.", ""), int(mode.peak),
                       int(mode.largest), int(out_bytes), int(mode.heap_peak))
