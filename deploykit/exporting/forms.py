"""Export forms: numerically identical rewrites that make a reference module export cleanly.

Each form is applied to a deep copy (the reference is never modified) and the rewritten model is checked against
the reference on random inputs at three or more shapes (non-square, batch 2) before anything is exported; a
failed check raises FormCheckError with the figures.

- ``pixelconv``: UDVD's PixelConv (6-D ``Tensor.unfold`` view + 5-D matmul, which the legacy exporter rejects)
  as ``unfold`` (im2col patches + one batched matmul with the per-pixel kernels + pixel shuffle) or ``shift``
  (k*k shifted slices of the padded input, multiply-accumulate; no k*k-sized intermediate).
- ``mprnet-split``: MPRNet's ``int(H/2)`` patch split taken from the tensor's shape (``H // 2``), and its
  bilinear x0.5 down-sampling as 2x2 average pooling (identical on even sizes), which exporters keep dynamic.
- ``skff``: MIRNet / MIRNet-v2's selective kernel feature fusion without its [N, branches, C, H, W] stack: the
  branch sum and the attention-weighted sum as explicit adds of the branches (``sum``), so the graph holds no
  full-resolution concatenation, no product of it and no ReduceSum over it (ONNX Runtime CPU spent 17 % of
  MIRNet-v2's time in that ReduceSum; the stack and the product were two of the largest live tensors).
- ``image-output``: multi-output models (MPRNet, UDVD) export only the image output.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deploykit.errors import FormCheckError
from deploykit.exporting.forms_panet import (
    PA_FORMS,
    apply_pyramid_attention,
    has_pyramid_attention,
)
from deploykit.runtime.torch_backend import ImageOutput, as_output_list
from deploykit.zoo.sample_inputs import Shape, random_inputs
from deploykit.zoo.spec import ModelSpec

PIXELCONV_FORMS = ("shift", "unfold")
DEFAULT_FORMS = {"pixelconv": "shift"}  # shift measured faster on ORT CPU: benchmarks/pixelconv_forms.md
FORM_MAX_ABS = 1e-4


# --- PixelConv -----------------------------------------------------------------------------------------

def _pixelconv_geometry(feature: torch.Tensor, kernel: torch.Tensor, scale: int):
    """(n, c, h, w, k, s*s) of a PixelConv call; c and k are static ints (the legacy tracer hands sizes over as
    tensors, which would make the graph's channel dims dynamic)."""
    n, _, h, w = feature.shape
    c, channels = int(feature.shape[1]), int(kernel.shape[1])
    k = int(round((channels // (scale * scale)) ** 0.5))
    if k * k * scale * scale != channels or k % 2 == 0:
        raise ValueError(f"kernel channels {channels} are not k*k*{scale * scale} with odd k")
    return n, c, h, w, k, scale * scale


class PixelConvUnfold(nn.Module):
    """im2col patches ([N, H*W, C, k*k]) @ per-pixel kernels ([N, H*W, k*k, s*s]), then pixel shuffle.

    ``F.unfold`` orders a patch row-offset-major (a*k + b); the reference's tap index is b*k + a, so the kernel
    channels are transposed to match before the matmul.
    """

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def forward(self, feature: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        n, c, h, w, k, s2 = _pixelconv_geometry(feature, kernel, self.scale)
        patches = F.unfold(feature, k, padding=(k - 1) // 2)  # [N, C*k*k, H*W]
        patches = patches.reshape(n, c, k * k, -1).permute(0, 3, 1, 2)  # [N, HW, C, k*k], tap a*k+b
        weights = kernel.reshape(n, k, k, s2, -1)  # [N, b, a, s2, HW]
        weights = weights.permute(0, 4, 2, 1, 3).reshape(n, -1, k * k, s2)  # [N, HW, a*k+b, s2]
        out = torch.matmul(patches, weights)  # [N, HW, C, s2]
        out = out.permute(0, 2, 3, 1).reshape(n, c * s2, h, w)
        return F.pixel_shuffle(out, self.scale) if self.scale > 1 else out


class PixelConvShift(nn.Module):
    """Sum over the k*k taps of a shifted slice of the padded input times that tap's per-pixel weights."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def forward(self, feature: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        n, c, h, w, k, s2 = _pixelconv_geometry(feature, kernel, self.scale)
        padded = F.pad(feature, [(k - 1) // 2] * 4).unsqueeze(2)  # [N, C, 1, H+2p, W+2p]
        taps = kernel.reshape(n, k * k, s2, h, w).unsqueeze(1)  # [N, 1, k*k, s2, H, W], tap b*k+a
        out = None
        for a in range(k):
            for b in range(k):
                term = padded[:, :, :, a:a + h, b:b + w] * taps[:, :, b * k + a]
                out = term if out is None else out + term
        out = out.reshape(n, c * s2, h, w)
        return F.pixel_shuffle(out, self.scale) if self.scale > 1 else out


_PIXELCONV_CLASSES = {"unfold": PixelConvUnfold, "shift": PixelConvShift}


def _has_pixelconv(model: nn.Module) -> bool:
    from models_src.udvd import PixelConv

    return any(isinstance(m, PixelConv) for m in model.modules())


def _apply_pixelconv(model: nn.Module, option: str) -> str:
    from models_src.udvd import PixelConv

    if option not in _PIXELCONV_CLASSES:
        raise FormCheckError(f"unknown pixelconv form '{option}' (use one of {', '.join(PIXELCONV_FORMS)})")
    count = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, PixelConv):
                if not child.depthwise:
                    raise FormCheckError("pixelconv forms cover depthwise PixelConv (the mode UDVD uses)")
                setattr(parent, child_name, _PIXELCONV_CLASSES[option](child.scale))
                count += 1
    return f"{count} PixelConv modules -> {option}"


# --- MPRNet --------------------------------------------------------------------------------------------

def _is_mprnet(model: nn.Module) -> bool:
    return hasattr(model, "split_points") and type(model).__name__ == "MPRNet"


def _shape_split_points(self, x: torch.Tensor):
    return x.shape[2] // 2, x.shape[3] // 2


def _apply_mprnet(model: nn.Module, option: str) -> str:
    from models_src.mprnet import DownSample

    model.split_points = types.MethodType(_shape_split_points, model)
    count = 0
    for module in model.modules():
        if isinstance(module, DownSample):
            module.down[0] = nn.AvgPool2d(2)
            count += 1
    return f"split at H//2, W//2 from the shape; {count} bilinear x0.5 -> AvgPool2d(2)"


# --- SKFF (MIRNet, MIRNet-v2) ----------------------------------------------------------------------------

SKFF_FORMS = ("sum", "stack")  # stack: the reference's own forward (kept for comparisons)


def _is_skff(module: nn.Module) -> bool:
    return type(module).__name__ == "SKFF" and type(module).__module__.startswith("models_src.mirnet")


def _has_skff(model: nn.Module) -> bool:
    return any(_is_skff(m) for m in model.modules())


def _skff_sum_forward(self, inp_feats: list[torch.Tensor]) -> torch.Tensor:
    """The reference's numbers: U = sum of the branches, attention = softmax over branches of fc_i(squeeze(U)),
    out = sum_i branch_i * attention_i, added branch by branch instead of stacked and reduced."""
    feats_u = inp_feats[0]
    for feat in inp_feats[1:]:
        feats_u = feats_u + feat
    feats_z = self.conv_du(self.avg_pool(feats_u))
    n, c = inp_feats[0].shape[0], inp_feats[0].shape[1]
    attn = torch.cat([fc(feats_z) for fc in self.fcs], dim=1)
    attn = self.softmax(attn.view(n, self.height, c, 1, 1))
    out = inp_feats[0] * attn[:, 0]
    for i in range(1, self.height):
        out = out + inp_feats[i] * attn[:, i]
    return out


def _apply_skff(model: nn.Module, option: str) -> str:
    if option not in SKFF_FORMS:
        raise FormCheckError(f"unknown skff form '{option}' (use one of {', '.join(SKFF_FORMS)})")
    modules = [m for m in model.modules() if _is_skff(m)]
    if option == "stack":
        return f"{len(modules)} SKFF kept as the reference (stack, ReduceSum)"
    for module in modules:
        module.forward = types.MethodType(_skff_sum_forward, module)
    return f"{len(modules)} SKFF as branch-by-branch adds (no [N, branches, C, H, W] stack, no ReduceSum over it)"


@dataclass(frozen=True)
class Form:
    name: str
    description: str
    applies: Callable[[nn.Module], bool]
    apply: Callable[[nn.Module, str], str]
    options: tuple[str, ...] = ("on",)


FORMS = (
    Form("pixelconv", "PixelConv as export-friendly unfold+matmul or shifted-slice MAC", _has_pixelconv,
         _apply_pixelconv, PIXELCONV_FORMS),
    Form("mprnet-split", "MPRNet shape-generic patch split and average-pool down-sampling", _is_mprnet,
         _apply_mprnet),
    Form("pyramid-attention", "PANet pyramid attention as unfold+matmul, softmax, matmul+shifted-slice fold",
         has_pyramid_attention, apply_pyramid_attention, PA_FORMS),
    Form("skff", "MIRNet SKFF fusion as branch-by-branch adds instead of a stacked ReduceSum", _has_skff,
         _apply_skff, SKFF_FORMS),
)


@dataclass
class FormRecord:
    name: str
    option: str
    detail: str
    checks: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"name": self.name, "option": self.option, "detail": self.detail, "checks": self.checks}


def parse_form_options(items: list[str] | None) -> dict[str, str]:
    """``["pixelconv=unfold"]`` -> ``{"pixelconv": "unfold"}`` with clear errors."""
    options = dict(DEFAULT_FORMS)
    known = {f.name: f for f in FORMS}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise FormCheckError(f"bad --form '{item}'; expected NAME=OPTION with NAME in {', '.join(known)}")
        if value not in known[key].options:
            raise FormCheckError(f"bad --form '{item}'; {key} takes one of {', '.join(known[key].options)}")
        options[key] = value
    return options


def _max_abs_per_shape(reference: nn.Module, candidate: nn.Module, spec: ModelSpec, shapes: list[Shape],
                       seed: int) -> list[dict]:
    checks = []
    with torch.inference_mode():
        for k, shape in enumerate(shapes):
            feed = random_inputs(spec, shape, seed=seed + k)
            args = [torch.from_numpy(feed[t.name]) for t in spec.inputs]
            ref = as_output_list(reference(*args))[spec.image_output].numpy()
            got = candidate(*args).numpy()
            checks.append({"shape": list(shape), "max_abs": float(np.abs(ref - got).max())})
    return checks


def build_export_module(reference: nn.Module, spec: ModelSpec, shapes: list[Shape],
                        options: dict[str, str] | None = None, *, seed: int = 7) -> tuple[nn.Module, list[FormRecord]]:
    """Deep-copy, apply every form that fits, wrap to the image output, verify against ``reference``."""
    if len(shapes) < 3:
        raise ValueError("forms are verified at three or more shapes")
    options = {**DEFAULT_FORMS, **(options or {})}
    model = copy.deepcopy(reference).eval()
    records = []
    for form in FORMS:
        if form.applies(model):
            option = options.get(form.name, form.options[0])
            records.append(FormRecord(form.name, option, form.apply(model, option)))
    wrapped = ImageOutput(model, spec.image_output).eval()
    if records or len(spec.outputs) > 1:
        checks = _max_abs_per_shape(reference, wrapped, spec, shapes, seed)
        if not records:
            records.append(FormRecord("image-output", "on", f"graph keeps output {spec.image_output} only"))
        for record in records:
            record.checks = checks
        worst = max(c["max_abs"] for c in checks)
        if not worst <= FORM_MAX_ABS:
            figures = ", ".join(f"{'x'.join(map(str, c['shape']))}: {c['max_abs']:.2e}" for c in checks)
            raise FormCheckError(f"export form(s) {', '.join(r.name for r in records)} do not match the reference "
                                 f"{spec.name} (max abs per shape: {figures}; tolerance {FORM_MAX_ABS:g})")
    return wrapped, records
