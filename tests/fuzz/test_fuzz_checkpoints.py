"""Hostile checkpoint files: random nesting, wrong dtypes, NaN weights, shapes off by one, huge declared tensors.
Each is loaded strictly or refused with one CheckpointError line; the model is left untouched on refusal."""

from __future__ import annotations

import pytest
import torch
from fuzzing import fuzz
from hypothesis import given
from hypothesis import strategies as st

from deploykit.errors import CheckpointError
from deploykit.zoo.checkpoints import load_weights
from deploykit.zoo.factory import create_model
from deploykit.zoo.registry import get_spec

NAME = "vapsr:s_x4"  # the smallest model of the zoo
DTYPES = [torch.float32, torch.float16, torch.float64, torch.bfloat16, torch.int64, torch.int8, torch.uint8,
          torch.bool, torch.complex64]


@pytest.fixture(scope="module")
def zoo_model():
    model = create_model(NAME, seed=0)
    return model, get_spec(NAME), {k: v.clone() for k, v in model.state_dict().items()}


def _load(model, spec, path):
    """load_weights's contract: a report, or CheckpointError on one line (and the weights untouched)."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        return load_weights(model, spec, path)
    except CheckpointError as exc:
        assert "\n" not in str(exc)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        return None


def _leaf():
    tensors = st.builds(lambda shape, dtype: torch.zeros(shape).to(dtype),
                        st.lists(st.integers(0, 3), max_size=3), st.sampled_from(DTYPES))
    return st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8),
                     tensors)


NESTED = st.recursive(_leaf(), lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=10), st.integers(), st.sampled_from(
        ["params", "params_ema", "state_dict", "model", "module.conv.weight"])), inner, max_size=4)), max_leaves=12)


@fuzz(120)
@given(obj=NESTED)
def test_random_nesting_is_refused_in_one_line(zoo_model, tmp_path_factory, obj):
    model, spec, _ = zoo_model
    path = tmp_path_factory.mktemp("ckpt") / "w.pth"
    torch.save(obj, path)
    assert _load(model, spec, path) is None  # none of these is VapSR's state_dict


@fuzz(80)
@given(data=st.data(), mutation=st.sampled_from(["shape", "dtype", "nan", "inf", "drop", "extra", "rename"]),
       wrap=st.sampled_from([None, "params", "params_ema", "state_dict", "module."]))
def test_one_damaged_tensor_is_named_in_the_refusal(zoo_model, tmp_path_factory, data, mutation, wrap):
    model, spec, good = zoo_model
    state = {k: v.clone() for k, v in good.items()}
    floats = [k for k, v in state.items() if v.is_floating_point() and v.numel()]
    key = data.draw(st.sampled_from(floats))
    if mutation == "shape":
        dim = data.draw(st.integers(0, state[key].dim() - 1))
        shape = list(state[key].shape)
        shape[dim] += data.draw(st.sampled_from([-1, 1])) if shape[dim] > 1 else 1
        state[key] = torch.zeros(shape)
    elif mutation == "dtype":
        state[key] = state[key].to(data.draw(st.sampled_from([torch.int64, torch.int8, torch.bool, torch.complex64])))
    elif mutation in ("nan", "inf"):
        flat = state[key].flatten()
        flat[data.draw(st.integers(0, flat.numel() - 1))] = float(mutation)
        state[key] = flat.reshape(state[key].shape)
    elif mutation == "drop":
        del state[key]
    elif mutation == "extra":
        state[key + "_extra"] = torch.zeros(2)
    else:
        state[key.replace(".", "_", 1)] = state.pop(key)
    obj = {f"module.{k}": v for k, v in state.items()} if wrap == "module." else state
    obj = {wrap: obj} if wrap and wrap != "module." else obj
    path = tmp_path_factory.mktemp("ckpt") / "w.pth"
    torch.save(obj, path)
    with pytest.raises(CheckpointError) as info:
        load_weights(model, spec, path)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    expected = {"shape": "shape-mismatched", "dtype": "dtype the model cannot take", "nan": "NaN or Inf",
                "inf": "NaN or Inf", "drop": "missing", "extra": "unexpected", "rename": "missing"}[mutation]
    assert expected in message and (mutation == "extra" or key.split(".")[0] in message)
    assert all(torch.equal(good[k], v) for k, v in model.state_dict().items())


def test_the_intact_state_dict_loads(zoo_model, tmp_path):
    model, spec, good = zoo_model
    torch.save({"params": good}, tmp_path / "w.pth")
    report = load_weights(model, spec, tmp_path / "w.pth")
    assert report.tensors == len(good) and report.wrapper_key == "params"


def test_a_tensor_declaring_a_trillion_elements_is_refused_without_allocating(zoo_model, tmp_path):
    """Four bytes of storage viewed as 10^12 elements (stride 0): refused by shape, never materialised."""
    model, spec, good = zoo_model
    state = dict(good)
    key = next(k for k, v in state.items() if v.dim() == 4)
    state[key] = torch.zeros(1).expand(10**6, 10**6)
    torch.save(state, tmp_path / "w.pth")
    assert (tmp_path / "w.pth").stat().st_size < 10 * 2**20
    with pytest.raises(CheckpointError, match=r"shape-mismatched .*\[1000000, 1000000\]"):
        load_weights(model, spec, tmp_path / "w.pth")


@fuzz(60)
@given(cut=st.floats(0, 0.999), flips=st.lists(st.tuples(st.floats(0, 0.999), st.integers(0, 255)), max_size=4))
def test_truncated_or_bit_flipped_files_are_refused_or_load(zoo_model, tmp_path_factory, cut, flips):
    model, spec, good = zoo_model
    folder = tmp_path_factory.mktemp("ckpt")
    torch.save({"params": good}, folder / "w.pth")
    data = bytearray((folder / "w.pth").read_bytes())
    data = data[: max(1, int(len(data) * cut))] if cut > 0 else data
    for where, value in flips:
        data[int(where * len(data))] = value
    (folder / "w.pth").write_bytes(bytes(data))
    _load(model, spec, folder / "w.pth")
    model.load_state_dict(good)
