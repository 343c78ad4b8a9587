"""Export form for PANet's ``PyramidAttention`` (``models_src.panet``): the same numbers, exportable operators.

The reference attention cannot be exported: per sample it calls ``F.conv2d`` and ``F.conv_transpose2d`` with
*data-dependent* weights (the key and value patches), which both exporters reject and which TensorRT's ONNX parser
could not take anyway (Conv/ConvTranspose weights must be initializers). The form computes the same thing with
batched matrix products, without a loop over samples:

1. query: ``conv_match_L_base(x)``, 3x3 patches with zero 'same' padding -> ``Q`` [N, C'*9, H*W];
2. for each level s of the pyramid (1.0, 0.9, 0.8, 0.7, 0.6): bicubic resize to an explicit size, then
   ``conv_match`` patches -> keys and ``conv_assembly`` patches -> values, concatenated over the levels
   (``K`` [N, C'*9, L], ``V`` [N, L, C*9], L = sum of the levels' H_s*W_s, about 3.3 H*W);
3. keys L2-normalised with the ``escape_NaN`` floor; scores ``Q^T K`` [N, H*W, L] (one matmul), the softmax
   scale 10 folded into the normalising divisor;
4. softmax over L (the last axis: no transposes around the softmax);
5. reconstruction ``A V`` [N, H*W, C*9] (one matmul) folded back to [N, C, H, W] by summing 9 shifted slices of
   the zero-padded column tensor (what ``conv_transpose2d(padding=1)`` / ``Col2Im`` do; ONNX ``Col2Im`` is not
   supported by TensorRT's parser, Slice/Add are), then divided by 4 as the original, plus ``res_scale * x``.

Patches are 9 shifted slices of the padded map stacked on a new axis (the ``nn.Unfold`` order c*9 + a*3 + b),
so no ``im2col`` op is needed.

**Pyramid sizes.** The reference resizes with ``scale_factor=s, recompute_scale_factor=True``: the output side is
``int(side * s)`` computed in float64, and sampling uses the in/out ratio. Both exporters compute that product in
float32 when tracing ``scale_factor`` (90 * 0.7 -> 63), whereas PyTorch eager's float64 gives 62
(90 * 0.7 = 62.99999999999999). The form passes explicit sizes computed exactly: ``side * p // q`` (s = p/q) plus
a correction at the sides where the float64 product falls below the rational one (for 0.7: 90, 170, 180, 330, …;
none for 0.9, 0.8 and 0.6), found by brute force up to :data:`MAX_EXACT_SIDE`. In a traced graph that is integer
Mul/Div and one ``Equal`` against a constant list + ``ReduceSum``, shape arithmetic every runtime supports. Only
the legacy (TorchScript) exporter is supported: under dynamo the sides are SymInts and the exceptions cannot be
expressed without guards (an attempt with ``torch.sym_ite`` exported 90 * 0.7 as 63), so the form refuses. ONNX
``Resize`` (mode cubic, ``cubic_coeff_a=-0.75``, ``coordinate_transformation_mode=half_pixel``, ``exclude_outside=0``)
then equals PyTorch's bicubic with ``align_corners=False`` (also A = -0.75, edge-clamped taps); measured max abs
difference ~1e-5 on uniform noise, float rounding only.

Memory: the score tensor holds N * H*W * L floats (about 3.3 (H*W)^2 per sample), and the softmax needs a second
one; see ``docs/panet.md`` for the measured peaks and the tile sizes they allow.
"""

from __future__ import annotations

from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.errors import FormCheckError

MAX_EXACT_SIDE = 8192  # pyramid sizes are exact (= PyTorch eager float64) for every side up to this
PA_FORMS = ("matmul",)


class PyramidSide:
    """``int(side * s)`` as PyTorch eager computes it (float64), in a form a tracer records as integer ops."""

    def __init__(self, scale: float, max_side: int = MAX_EXACT_SIDE):
        self.scale = scale
        frac = Fraction(scale).limit_denominator(1000)
        self.num, self.den = frac.numerator, frac.denominator
        exceptions = {}
        for side in range(1, max_side + 1):
            want = int(float(side) * scale)
            delta = want - side * self.num // self.den
            if delta:
                exceptions[side] = delta
        self.exceptions = dict(sorted(exceptions.items()))
        self.sides = torch.tensor(list(self.exceptions), dtype=torch.int64)
        self.deltas = torch.tensor(list(self.exceptions.values()), dtype=torch.int64)

    def __call__(self, side):
        if torch.compiler.is_exporting():
            # torch.export (dynamo) hands over SymInts: side * p // q is expressible, but the float64 exceptions
            # become guards or get specialised away, and int(side * s) is translated to float32 arithmetic
            # (measured: 90 * 0.7 exported as 63, a silent 1e-3 error), so refuse loudly
            raise NotImplementedError(
                "pyramid-attention form: the dynamo exporter cannot reproduce PyTorch's float64 pyramid sizes "
                "(90 * 0.7 -> 62); export with the legacy exporter (ModelSpec.exporters)")
        if not isinstance(side, torch.Tensor):  # eager (or torch.compile): exactly the reference's arithmetic
            return int(side * self.scale)
        base = side * self.num // self.den  # legacy tracing: a 0-d int64 tensor
        if not self.exceptions:
            return base
        hit = (side == self.sides).to(torch.int64)
        return base + (hit * self.deltas).sum()


def _patches3(x: torch.Tensor) -> torch.Tensor:
    """3x3 patches with zero padding 1: [N, C*9, H*W], channel order c*9 + a*3 + b (``nn.Unfold``'s)."""
    padded = F.pad(x, (1, 1, 1, 1))
    taps = [padded[:, :, a:(a - 2 or None), b:(b - 2 or None)] for a in range(3) for b in range(3)]
    return torch.stack(taps, dim=2).flatten(3).flatten(1, 2)  # [N, C, 9, H, W] -> [N, C*9, H*W]


def _fold3(cols: torch.Tensor, channels: int) -> torch.Tensor:
    """Inverse of :func:`_patches3` with summation: [N, C*9, H, W] columns -> [N, C, H, W].

    out[c, y, x] = sum over (a, b) of cols[c, a, b, y + 1 - a, x + 1 - b] (zero outside), which is
    ``conv_transpose2d(padding=1)`` / ``F.fold(padding=1)``; done as 9 slices of the padded columns.
    """
    padded = F.pad(cols, (1, 1, 1, 1)).unflatten(1, (channels, 9))  # [N, C, 9, H+2, W+2]
    out = None
    for a in range(3):
        for b in range(3):
            term = padded[:, :, a * 3 + b, 2 - a:(-a or None), 2 - b:(-b or None)]
            out = term if out is None else out + term
    return out


class PyramidAttentionMatmul(nn.Module):
    """``PyramidAttention`` as batched matmuls (see the module docstring); shares the reference's submodules."""

    def __init__(self, reference: nn.Module):
        super().__init__()
        if reference.ksize != 3 or reference.stride != 1:
            raise FormCheckError(f"pyramid-attention form covers ksize 3, stride 1 (the released models), not "
                                 f"ksize {reference.ksize}, stride {reference.stride}")
        if not reference.average:
            raise FormCheckError("pyramid-attention form covers average=True (softmax weights), the released setting")
        self.conv_match_L_base = reference.conv_match_L_base
        self.conv_match = reference.conv_match
        self.conv_assembly = reference.conv_assembly
        self.register_buffer("escape_NaN", reference.escape_NaN)
        self.res_scale = reference.res_scale
        self.softmax_scale = reference.softmax_scale
        self.scale = list(reference.scale)
        self.sides = [None if s == 1 else PyramidSide(s) for s in self.scale]
        self.channels = reference.conv_assembly[0].out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2], x.shape[3]
        query = _patches3(self.conv_match_L_base(x)).transpose(1, 2)  # [N, HW, C'*9]
        keys, values = [], []
        for side in self.sides:
            ref = x
            if side is not None:
                ref = F.interpolate(x, size=(side(height), side(width)), mode="bicubic", align_corners=False)
            keys.append(_patches3(self.conv_match(ref)))  # [N, C'*9, L_s]
            values.append(_patches3(self.conv_assembly(ref)))  # [N, C*9, L_s]
        key = torch.cat(keys, dim=2)  # [N, C'*9, L]
        norm = torch.max(torch.sqrt(key.pow(2).sum(dim=1, keepdim=True)), self.escape_NaN)
        # softmax(10 * q.k/|k|): the 10 is folded into the divisor, so MatMul feeds Softmax directly (FP16 policy
        # keeps Pow/ReduceSum/Sqrt/Max/Div/MatMul/Softmax in FP32 with no FP16 Mul in between); rounding-level change
        scores = torch.matmul(query, key / (norm / self.softmax_scale))  # [N, HW, L]
        weights = F.softmax(scores, dim=2)
        value = torch.cat(values, dim=2).transpose(1, 2)  # [N, L, C*9]
        cols = torch.matmul(weights, value).transpose(1, 2)  # [N, C*9, HW]
        cols = cols.unflatten(2, (height, width))
        return _fold3(cols, self.channels) / 4. + x * self.res_scale


def has_pyramid_attention(model: nn.Module) -> bool:
    from models_src.panet import PyramidAttention

    return any(isinstance(m, PyramidAttention) for m in model.modules())


def apply_pyramid_attention(model: nn.Module, option: str) -> str:
    """Replace every PyramidAttention by its matmul form; a module registered twice (PA-EDSR's ``msa`` and
    ``body.16``) gets one replacement in both places, so the state_dict layout is unchanged."""
    from models_src.panet import PyramidAttention

    if option not in PA_FORMS:
        raise FormCheckError(f"unknown pyramid-attention form '{option}' (use one of {', '.join(PA_FORMS)})")
    replaced: dict[int, PyramidAttentionMatmul] = {}
    slots = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, PyramidAttention):
                if id(child) not in replaced:
                    replaced[id(child)] = PyramidAttentionMatmul(child)
                setattr(parent, child_name, replaced[id(child)])
                slots += 1
    return (f"{len(replaced)} PyramidAttention -> unfold+matmul, softmax, matmul+shifted-slice fold "
            f"({slots} registrations); exact float64 pyramid sizes")
