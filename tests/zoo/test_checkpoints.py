"""Checkpoint reading: wrapper formats, module. prefix, legacy layouts, and the errors users see."""

from __future__ import annotations

import re
from collections import OrderedDict

import pytest
import torch

import deploykit
from deploykit.zoo.checkpoints import load_weights
from deploykit.errors import CheckpointError
from deploykit.zoo.registry import get_spec

MEAN = torch.tensor([0.4488, 0.4371, 0.4040])


def _source(name: str, seed: int = 5):
    model = deploykit.create_model(name, seed=seed)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def _same_params(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("wrap", ["params_ema", "params", "state_dict", "flat", "module-prefix", "ema-and-params"])
def test_wrapper_formats_round_trip(tmp_path, wrap):
    source, state = _source("vapsr:s_x4")
    if wrap == "flat":
        obj = state
    elif wrap == "module-prefix":
        obj = {"epoch": 3, "state_dict": OrderedDict((f"module.{k}", v) for k, v in state.items()),
               "optimizer": {"lr": 1e-4}}
    elif wrap == "ema-and-params":  # VapSR files: params_ema is the one to use
        noisy = {k: v + 1.0 for k, v in state.items()}
        obj = {"params": noisy, "params_ema": state}
    else:
        obj = {wrap: state}
    path = tmp_path / "w.pth"
    torch.save(obj, path)
    target = deploykit.create_model("vapsr:s_x4", weights=path, seed=99)
    assert _same_params(source, target)


def test_load_report_records_what_was_read(tmp_path):
    _, state = _source("vapsr:s_x4")
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    model, spec, report = deploykit.build_model("vapsr:s_x4", weights=path)
    assert (report.wrapper_key, report.stripped_prefix, report.layout) == ("state_dict", True, "native")
    assert len(report.sha256) == 64 and report.tensors == len(state)


def _to_edsr_pytorch(state: dict, n_blocks: int) -> dict:
    """BasicSR EDSR keys -> the original EDSR-PyTorch layout (the inverse of BasicSR's convert_edsr)."""
    out = {"sub_mean.weight": torch.eye(3).view(3, 3, 1, 1), "sub_mean.bias": -255 * MEAN,
           "add_mean.weight": torch.eye(3).view(3, 3, 1, 1), "add_mean.bias": 255 * MEAN}
    for k, v in state.items():
        k = k.replace("conv_first.", "head.0.").replace("conv_after_body.", f"body.{n_blocks}.")
        k = re.sub(r"^body\.(\d+)\.conv1\.", r"body.\1.body.0.", k)
        k = re.sub(r"^body\.(\d+)\.conv2\.", r"body.\1.body.2.", k)
        k = re.sub(r"^upsample\.(\d+)\.", r"tail.0.\1.", k).replace("conv_last.", "tail.1.")
        out[k] = v
    return out


def _to_original_rcan(state: dict, n_groups: int, n_blocks: int) -> dict:
    out = {"sub_mean.weight": torch.eye(3).view(3, 3, 1, 1), "sub_mean.bias": -255 * MEAN,
           "add_mean.weight": torch.eye(3).view(3, 3, 1, 1), "add_mean.bias": 255 * MEAN}
    for k, v in state.items():
        k = k.replace("conv_first.", "head.0.").replace("conv_after_body.", f"body.{n_groups}.")
        k = re.sub(r"^body\.(\d+)\.residual_group\.(\d+)\.rcab\.3\.attention\.(\d)\.",
                   lambda m: f"body.{m[1]}.body.{m[2]}.body.3.conv_du.{int(m[3]) - 1}.", k)
        k = re.sub(r"^body\.(\d+)\.residual_group\.(\d+)\.rcab\.(\d)\.", r"body.\1.body.\2.body.\3.", k)
        k = re.sub(r"^body\.(\d+)\.conv\.", rf"body.\1.body.{n_blocks}.", k)
        k = re.sub(r"^upsample\.(\d+)\.", r"tail.0.\1.", k).replace("conv_last.", "tail.1.")
        out[k] = v
    return out


@pytest.mark.parametrize("name,convert", [
    ("edsr:m_x2", lambda s: _to_edsr_pytorch(s, 16)),
    ("edsr:m_x4", lambda s: _to_edsr_pytorch(s, 16)),
    ("rcan:x2", lambda s: _to_original_rcan(s, 10, 20)),
])
def test_legacy_layouts_are_remapped_exactly(tmp_path, name, convert):
    source, state = _source(name)
    path = tmp_path / "legacy.pt"
    torch.save(convert(state), path)  # original repos save a flat state_dict
    model, _, report = deploykit.build_model(name, weights=path, seed=123)
    assert report.layout in ("edsr-pytorch", "rcan") and report.warnings == []
    assert _same_params(source, model)
    x = torch.rand(1, 3, 8, 12)
    with torch.inference_mode():
        assert torch.equal(source(x), model(x))


def test_drifted_mean_shift_is_reported(tmp_path):
    _, state = _source("edsr:m_x2")
    legacy = _to_edsr_pytorch(state, 16)
    legacy["add_mean.bias"] = legacy["add_mean.bias"] + 0.5
    path = tmp_path / "drift.pt"
    torch.save(legacy, path)
    _, _, report = deploykit.build_model("edsr:m_x2", weights=path)
    assert any("add_mean differs" in w for w in report.warnings)


def test_missing_empty_and_directory_paths(tmp_path):
    with pytest.raises(CheckpointError, match="weights file not found"):
        deploykit.create_model("vapsr", weights=tmp_path / "nope.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        deploykit.create_model("vapsr", weights=tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="not a file"):
        deploykit.create_model("vapsr", weights=tmp_path)


def test_corrupt_and_truncated_files(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"\x89PNG not a checkpoint" * 50)
    with pytest.raises(CheckpointError, match="cannot read .*junk.pth"):
        deploykit.create_model("vapsr:s_x4", weights=tmp_path / "junk.pth")
    _, state = _source("vapsr:s_x4")
    torch.save({"params": state}, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        deploykit.create_model("vapsr:s_x4", weights=tmp_path / "cut.pth")


class _Pickled:  # arbitrary objects are what weights_only refuses
    pass


def test_pickled_code_needs_explicit_opt_in(tmp_path):
    _, state = _source("vapsr:s_x4")
    torch.save({"params": state, "extra": _Pickled()}, tmp_path / "obj.pth")
    with pytest.raises(CheckpointError, match="--unsafe-pickle"):
        deploykit.create_model("vapsr:s_x4", weights=tmp_path / "obj.pth")
    with pytest.warns(UserWarning, match="arbitrary code"):
        deploykit.create_model("vapsr:s_x4", weights=tmp_path / "obj.pth", unsafe_pickle=True)


def test_wrong_variant_names_the_one_that_fits(tmp_path):
    _, state = _source("vapsr:s_x4")
    torch.save({"params_ema": state}, tmp_path / "VapSR-S.pth")
    with pytest.raises(CheckpointError) as err:
        deploykit.create_model("vapsr:x4", weights=tmp_path / "VapSR-S.pth")
    message = str(err.value)
    assert "does not fit vapsr:x4" in message
    assert re.search(r"120 missing \(body\.11\.", message)  # S has 11 blocks, x4 has 21
    assert re.search(r"\d+ shape-mismatched \(conv_first.weight: file \[32, 3, 3, 3\] vs model \[48, 3, 3, 3\]",
                     message)
    assert "The file fits vapsr:s_x4" in message


def test_no_variant_fits_gives_counts_only(tmp_path):
    _, state = _source("vapsr:s_x4")
    state.pop("conv_first.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"1 missing \(conv_first.weight\); 1 unexpected \(extra.weight\)\.$"):
        deploykit.create_model("vapsr:s_x4", weights=tmp_path / "broken.pth")


@pytest.mark.parametrize("break_it,message", [
    (lambda s: s.pop("upsampler.3.bias"), r"1 missing \(upsampler\.3\.bias\)\.$"),
    (lambda s: s.update({"upsampler.3.scale": torch.ones(3), "stray": torch.ones(1)}),
     r"2 unexpected \(upsampler\.3\.scale, stray\)\.$"),
    (lambda s: s.update({"upsampler.3.bias": torch.zeros(4)}),
     r"1 shape-mismatched \(upsampler\.3\.bias: file \[4\] vs model \[12\]\)\.$"),
], ids=["missing", "unexpected", "shape"])
def test_strict_loading_refuses_each_kind_of_mismatch_with_its_count(tmp_path, break_it, message):
    _, state = _source("vapsr:s_x4")
    break_it(state)
    torch.save({"params_ema": state}, tmp_path / "w.pth")
    model = deploykit.create_model("vapsr:s_x4", seed=9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"w\.pth does not fit vapsr:s_x4: " + message):
        load_weights(model, get_spec("vapsr:s_x4"), tmp_path / "w.pth")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing half-loaded


def test_non_dict_checkpoint(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(CheckpointError, match="holds a Tensor"):
        deploykit.create_model("vapsr:s_x4", weights=tmp_path / "tensor.pth")


def test_official_vapsr_x4_loads_strictly(vapsr_x4_weights):
    model, spec, report = deploykit.build_model("vapsr:x4", weights=vapsr_x4_weights)
    assert report.wrapper_key == "params_ema" and report.layout == "native" and report.tensors == 260
    raw = torch.load(vapsr_x4_weights, map_location="cpu", weights_only=True)["params_ema"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in raw.items())


def test_official_vapsr_x4_is_refused_by_other_variants(vapsr_x4_weights):
    with pytest.raises(CheckpointError, match="fits vapsr:x4"):
        load_weights(deploykit.create_model("vapsr:x3"), get_spec("vapsr:x3"), vapsr_x4_weights)
