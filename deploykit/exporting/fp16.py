"""Mixed-precision FP16 ONNX: FP16 weights/activations, FP32 graph I/O, FP32 islands for risky ops.

This file is what TensorRT 11 (strongly typed) builds and what ONNX Runtime CUDA runs in FP16. The conversion
is onnxconverter-common's; the islands come from the model's ``Fp16Policy`` plus the converter's defaults
(Resize, Range, Min/Max, TopK …, ops without reliable FP16 kernels).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import onnx
import torch

from deploykit.errors import ExportError
from deploykit.zoo.spec import Fp16Policy


@dataclass
class Fp16Record:
    fp32_op_types: list[str]
    fp32_nodes: list[str]
    fp16_nodes: int

    def to_dict(self) -> dict:
        return {"fp32_op_types": self.fp32_op_types, "fp32_nodes": self.fp32_nodes,
                "fp32_node_count": len(self.fp32_nodes), "fp16_node_count": self.fp16_nodes}


def convert_to_fp16(model: onnx.ModelProto, policy: Fp16Policy) -> tuple[onnx.ModelProto, Fp16Record]:
    """The zoo's hand policy: FP32 islands by op type (``keep_fp32_ops`` + the converter's defaults)."""
    from onnxconverter_common import float16

    block = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(policy.keep_fp32_ops))
    converted = float16_with_fp32_islands(model, op_types=block)
    compute = [n for n in model.graph.node if n.op_type not in ("Constant", "Shape", "Cast")]
    kept = [n.name or n.op_type for n in compute if n.op_type in block]
    present = sorted({n.op_type for n in compute if n.op_type in block})
    return converted, Fp16Record(present, kept, len(compute) - len(kept))


def float16_with_fp32_islands(model: onnx.ModelProto, *, op_types: Iterable[str] = (),
                              node_names: Iterable[str] = ()) -> onnx.ModelProto:
    """onnxconverter-common's FP16 conversion (FP32 graph I/O) keeping nodes of ``op_types`` and the nodes named in
    ``node_names`` FP32 -- the one call both policies (``spec``, ``auto``) go through. A float initializer read by
    both an FP32 and an FP16 node is split first: the converter types a shared initializer once, leaving the other
    side with a float/float16 clash (EDSR's mean, subtracted at the input and added back at the output)."""
    from onnxconverter_common import float16

    ops, names = set(op_types), set(node_names)
    src = onnx.ModelProto.FromString(model.SerializeToString())
    split_shared_initializers(src, lambda node: node.op_type in ops or node.name in names)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            converted = float16.convert_float_to_float16(src, keep_io_types=True, op_block_list=sorted(ops),
                                                         node_block_list=sorted(names))
    except Exception as exc:
        raise ExportError(f"FP16 conversion failed: {type(exc).__name__}: {str(exc)[:300]}") from exc
    # the converter keeps stale float32 value_info for tensors it re-typed (e.g. Resize outputs cast back to
    # float16), which shape inference then reports as a type clash; drop it and let inference recompute
    del converted.graph.value_info[:]
    return converted


def split_shared_initializers(model: onnx.ModelProto, is_fp32: Callable[[onnx.NodeProto], bool]) -> onnx.ModelProto:
    """Give the FP32 nodes (``is_fp32``) their own copy (``NAME__fp32``) of each float initializer that FP16 nodes
    read too; in place."""
    readers: dict[str, set[bool]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(is_fp32(node))
    shared = {i.name: i for i in model.graph.initializer
              if i.data_type == onnx.TensorProto.FLOAT and readers.get(i.name) == {True, False}}
    for name, init in shared.items():
        copy = onnx.TensorProto()
        copy.CopyFrom(init)
        copy.name = name + "__fp32"
        model.graph.initializer.append(copy)
    for node in model.graph.node:
        if is_fp32(node):
            for k, name in enumerate(node.input):
                if name in shared:
                    node.input[k] = name + "__fp32"
    return model


class Fp16RoundingEmulation:
    """PyTorch FP16 emulation that runs at FP32 speed on CPU (real ``.half()`` convs are ~100x slower there).

    Weights are rounded to float16 and every leaf module's output is rounded to float16 (values beyond 65504
    become inf, as in FP16 storage); arithmetic stays float32, like FP16 kernels that accumulate in FP32.
    Functional ops inside a module's forward are not rounded individually. Use as a context manager.
    """

    def __init__(self, module: torch.nn.Module):
        import copy

        self.module = copy.deepcopy(module).eval()
        for p in self.module.parameters():
            p.data = p.data.half().float()
        self._hooks = [m.register_forward_hook(self._round) for m in self.module.modules()
                       if not list(m.children())]

    @staticmethod
    def _round(_module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            return output.half().float()
        return output

    def __call__(self, *inputs):
        return self.module(*inputs)

    def __enter__(self) -> "Fp16RoundingEmulation":
        return self

    def __exit__(self, *exc) -> None:
        for hook in self._hooks:
            hook.remove()
