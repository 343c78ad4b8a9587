"""Reading official checkpoint files into a strict ``load_state_dict``.

Official files come wrapped (``params`` / ``params_ema`` / ``state_dict``), sometimes with the
DataParallel ``module.`` prefix, and two families ship an older layout (EDSR-PyTorch, yulunzhang/RCAN) that
is remapped here as BasicSR's ``convert_models.py`` does. Files are read with ``weights_only=True``: a
checkpoint never gets to execute code unless the user opts in explicitly.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from deploykit.errors import CheckpointError
from deploykit.util.files import sha256_file
from deploykit.util.text import one_line
from deploykit.zoo.registry import families
from deploykit.zoo.spec import ModelSpec

StateDict = dict[str, torch.Tensor]
_BASICSR_MEAN = torch.tensor([0.4488, 0.4371, 0.4040])


@dataclass
class LoadReport:
    """What was read and how it was interpreted (recorded in the export manifest)."""

    path: str
    sha256: str
    wrapper_key: str | None
    stripped_prefix: bool
    layout: str
    tensors: int
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def read_checkpoint(path: str | Path, *, unsafe_pickle: bool = False) -> object:
    """``torch.load`` with ``weights_only=True``; errors say what is wrong with the file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"weights file not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"weights path is not a file: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"weights file is empty: {path}")
    try:
        if unsafe_pickle:
            warnings.warn(f"loading {path} with weights_only=False: the file can execute arbitrary code",
                          stacklevel=2)
            return torch.load(path, map_location="cpu", weights_only=False)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:
            raise CheckpointError(
                f"{path} contains pickled Python objects ({found.group(1)}) that weights_only loading refuses; "
                "if you trust the file, re-run with --unsafe-pickle"
            ) from exc
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
        raise CheckpointError(f"cannot read {path}: not a PyTorch checkpoint, or corrupt "
                              f"({detail.group(1).strip() if detail else 'unpickling failed'})") from exc
    except MemoryError as exc:
        raise CheckpointError(f"cannot read {path}: not enough memory for the tensors it holds") from exc
    except Exception as exc:  # noqa: BLE001  RuntimeError, EOFError, BadZipFile, TypeError…: a corrupt file
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read {path}: corrupt or truncated checkpoint ({first})") from exc


def unwrap_state_dict(obj: object, keys: tuple[str, ...]) -> tuple[StateDict, str | None]:
    """Pick the state_dict out of a wrapper dict, by the spec's key preference."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint holds a {type(obj).__name__}, not a state_dict or a dict wrapping one")
    for key in keys:
        if isinstance(obj.get(key), dict):
            return obj[key], key
    for key in ("params_ema", "params", "state_dict", "model", "net", "generator"):
        if isinstance(obj.get(key), dict):
            return obj[key], key
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"checkpoint has no tensors; top-level keys: {', '.join(map(str, list(obj)[:8]))}")
    return tensors, None


def check_tensors(state: dict, path: str | Path) -> StateDict:
    """A state_dict is string keys to tensors; anything else (nested dicts, numbers, lists) is not weights."""
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} state_dict entries are not named tensors "
                              f"({_listing([repr(k)[:60] for k in bad])}); not a weights file")
    return state


def check_values(model: torch.nn.Module, state: StateDict, path: str | Path) -> None:
    """Dtypes the model can take (no integer or complex tensor for a float weight) and finite weights."""
    expected = model.state_dict()
    wrong = [f"{k}: {state[k].dtype}" for k, v in expected.items() if k in state and
             (state[k].is_complex() or state[k].is_floating_point() != v.is_floating_point())]
    if wrong:
        raise CheckpointError(f"{path}: {len(wrong)} tensors have a dtype the model cannot take "
                              f"({_listing(wrong, 3)}); not a weights file of this model")
    nonfinite = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if nonfinite:
        raise CheckpointError(f"{path}: {len(nonfinite)} tensors hold NaN or Inf ({_listing(nonfinite)}); "
                              "the checkpoint is corrupt or from a diverged training run")


def strip_module_prefix(state: StateDict) -> tuple[StateDict, bool]:
    """Remove DataParallel's ``module.`` prefix when every key carries it."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}, True
    return state, False


# --- legacy layouts ----------------------------------------------------------------------------------

def _mean_shift_drift(state: StateDict) -> list[str]:
    """Original MeanShift convs must equal identity and -/+255*mean for the remap to be exact."""
    notes = []
    for name, sign in (("sub_mean", -1.0), ("add_mean", 1.0)):
        weight, bias = state.get(f"{name}.weight"), state.get(f"{name}.bias")
        if weight is None or bias is None or weight.numel() != 9 or bias.numel() != 3:
            continue
        w_err = (weight.float().reshape(3, 3) - torch.eye(3)).abs().max().item()
        b_err = (bias.float() - sign * 255.0 * _BASICSR_MEAN).abs().max().item()
        if w_err > 1e-5 or b_err > 1e-3:
            notes.append(f"{name} differs from the standard mean shift (weight {w_err:.2e}, bias {b_err:.2e}); "
                         "the BasicSR layout ignores it, so outputs may differ slightly from the original code")
    return notes


def _is_edsr_pytorch(state: StateDict) -> bool:
    return "head.0.weight" in state and "tail.1.weight" in state and any(".body.0.weight" in k for k in state)


def _remap_edsr_pytorch(state: StateDict) -> StateDict:
    n_body = max(int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.weight$", k)))
    out: StateDict = {}
    for key, value in state.items():
        if key.startswith(("sub_mean.", "add_mean.")):
            continue
        new = (key.replace("head.0.", "conv_first.", 1)
               .replace("tail.1.", "conv_last.", 1))
        new = re.sub(r"^tail\.0\.(\d+)\.", r"upsample.\1.", new)
        new = re.sub(rf"^body\.{n_body}\.", "conv_after_body.", new)
        new = re.sub(r"^body\.(\d+)\.body\.0\.", r"body.\1.conv1.", new)
        new = re.sub(r"^body\.(\d+)\.body\.2\.", r"body.\1.conv2.", new)
        out[new] = value
    return out


def _is_rcan(state: StateDict) -> bool:
    return "head.0.weight" in state and any("conv_du" in k for k in state)


def _remap_rcan(state: StateDict) -> StateDict:
    n_groups = max(int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.weight$", k)))
    out: StateDict = {}
    for key, value in state.items():
        if key.startswith(("sub_mean.", "add_mean.")):
            continue
        new = key.replace("head.0.", "conv_first.", 1).replace("tail.1.", "conv_last.", 1)
        new = re.sub(r"^tail\.0\.(\d+)\.", r"upsample.\1.", new)
        new = re.sub(rf"^body\.{n_groups}\.", "conv_after_body.", new)
        new = re.sub(r"^body\.(\d+)\.body\.(\d+)\.body\.3\.conv_du\.(\d)\.",
                     lambda m: f"body.{m[1]}.residual_group.{m[2]}.rcab.3.attention.{int(m[3]) + 1}.", new)
        new = re.sub(r"^body\.(\d+)\.body\.(\d+)\.body\.(\d)\.", r"body.\1.residual_group.\2.rcab.\3.", new)
        out[new] = value
    # the group tail conv is the last entry of each group's body (index n_blocks)
    tails: StateDict = {}
    for key in list(out):
        m = re.match(r"^body\.(\d+)\.body\.(\d+)\.(weight|bias)$", key)
        if m:
            tails[f"body.{m[1]}.conv.{m[3]}"] = out.pop(key)
    out.update(tails)
    return out


LEGACY_LAYOUTS: dict[str, tuple[Callable[[StateDict], bool], Callable[[StateDict], StateDict]]] = {
    "edsr-pytorch": (_is_edsr_pytorch, _remap_edsr_pytorch),
    "rcan": (_is_rcan, _remap_rcan),
}


def to_native_layout(state: StateDict, legacy: tuple[str, ...]) -> tuple[StateDict, str, list[str]]:
    """Remap a legacy layout the spec accepts; returns (state, layout name, warnings)."""
    for name in legacy:
        detect, remap = LEGACY_LAYOUTS[name]
        if detect(state):
            try:
                return remap(state), name, _mean_shift_drift(state)
            except (ValueError, KeyError, IndexError, RuntimeError) as exc:
                raise CheckpointError(f"the checkpoint looks like the {name} layout but is incomplete "
                                      f"({one_line(exc, 120)})") from exc
    return state, "native", []


# --- strict loading with a readable diff -------------------------------------------------------------

@lru_cache(maxsize=None)
def _reference_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape of a zoo variant, built on the meta device (no memory, no init cost)."""
    family, _, variant = name.partition(":")
    spec = families()[family].variants[variant]
    with torch.device("meta"):
        module = spec.build()
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def diff_state_dicts(expected: dict[str, tuple[int, ...]], state: StateDict) -> tuple[list, list, list]:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [(k, tuple(state[k].shape), expected[k]) for k in expected
                  if k in state and tuple(state[k].shape) != expected[k]]
    return missing, unexpected, mismatched


def fitting_variants(state: StateDict) -> list[str]:
    """Zoo variants whose state_dict layout this checkpoint matches exactly (after legacy remaps)."""
    fits = []
    for fam in families().values():
        for spec in fam.variants.values():
            try:
                candidate, _, _ = to_native_layout(state, spec.checkpoint.legacy)
            except CheckpointError:
                continue
            if not any(diff_state_dicts(_reference_shapes(spec.name), candidate)):
                fits.append(spec.name)
    return fits


def _listing(items: list, limit: int = 4) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", … (+{len(items) - limit})" if len(items) > limit else "")


def mismatch_message(spec: ModelSpec, path: str | Path, state: StateDict) -> str:
    missing, unexpected, mismatched = diff_state_dicts(_reference_shapes(spec.name), state)
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_listing(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_listing(unexpected)})")
    if mismatched:
        shown = [f"{k}: file {list(a)} vs model {list(b)}" for k, a, b in mismatched]
        parts.append(f"{len(mismatched)} shape-mismatched ({_listing(shown, 3)})")
    message = f"{path} does not fit {spec.name}: " + "; ".join(parts) + "."
    fits = [n for n in fitting_variants(state) if n != spec.name]
    if fits:
        message += f" The file fits {' / '.join(fits)}: use that name instead."
    return message


def load_weights(model: torch.nn.Module, spec: ModelSpec, path: str | Path, *,
                 unsafe_pickle: bool = False) -> LoadReport:
    """Read an official file and load it strictly into ``model``; CheckpointError on any mismatch."""
    raw = read_checkpoint(path, unsafe_pickle=unsafe_pickle)
    state, wrapper = unwrap_state_dict(raw, spec.checkpoint.keys)
    state, stripped = strip_module_prefix(check_tensors(state, path))
    state, layout, notes = to_native_layout(state, spec.checkpoint.legacy)
    if any(diff_state_dicts(_reference_shapes(spec.name), state)):
        raise CheckpointError(mismatch_message(spec, path, state))
    check_values(model, state, path)
    model.load_state_dict(state, strict=True)
    return LoadReport(path=str(Path(path).resolve()), sha256=sha256_file(path), wrapper_key=wrapper,
                      stripped_prefix=stripped, layout=layout, tensors=len(state), warnings=notes)
