"""Element counts of every intermediate tensor of a zoo model without running it: the model is traced on the
``meta`` device (shapes only, no memory, no arithmetic) at two square sides, every aten op's output recorded.

Feeds ``deploykit.trt.plan.TensorSizes`` (the TensorRT 2^31-elements pre-build check) for ``deploykit info``
when no exported ONNX graph is at hand.
"""

from __future__ import annotations

import math

from deploykit.trt.plan import TensorSizes
from deploykit.zoo.spec import ModelSpec


def traced_tensor_sizes(spec: ModelSpec, sides: tuple[int, int] = (64, 128)) -> TensorSizes:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.counts: list[tuple[str, int]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.is_floating_point():
                    self.counts.append((func.overloadpacket.__name__, math.prod(t.shape)))
            return out

    sides = tuple(spec.valid_size(s) for s in sides)  # type: ignore[assignment]
    with torch.device("meta"):
        model = spec.build().eval()
    per_side = []
    for side in sides:
        inputs = [torch.empty(1, t.channels, side, side, device="meta") for t in spec.inputs]
        rec = _Record()
        with torch.no_grad(), rec:
            model(*inputs)
        per_side.append(rec.counts)
    n = min(len(per_side[0]), len(per_side[1]))
    counts = {f"{per_side[1][k][0]}#{k}": (per_side[0][k][1], per_side[1][k][1]) for k in range(n)}
    peak = tuple(3 * max((c for _, c in counts_at), default=0) for counts_at in per_side)  # ~ in + out + a skip
    return TensorSizes(sides, counts, peak, "PyTorch meta-device trace")  # type: ignore[arg-type]
