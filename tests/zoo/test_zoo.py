"""The zoo: every registered variant builds, has the official parameter count and the promised shapes."""

from __future__ import annotations

import pytest
import torch

import deploykit
from deploykit.errors import ShapeContractError, UnknownModelError
from deploykit.runtime.torch_backend import ImageOutput
from deploykit.zoo.registry import families, get_spec, list_models

ALL = list_models()


def test_registry_has_the_issue_families_and_variants():
    # the 8 families / 29 variants of the zoo issue, plus PANet (panet 3 + paedsr 3)
    core = ["mirnetv2", "mirnet", "mprnet", "udvd", "vapsr", "edsr", "rcan", "srresnet"]
    assert list(families())[:8] == core
    assert sum(len(families()[f].variants) for f in core) == 29
    assert list(families())[8:] == ["panet", "paedsr"] and len(ALL) == 35
    assert ALL[0] == "mirnetv2:real_denoising"
    assert deploykit.list_models() == ALL


@pytest.mark.parametrize("name", ALL)
def test_parameter_count_matches_official(name):
    spec = get_spec(name)
    with torch.device("meta"):
        model = spec.build()
    assert sum(p.numel() for p in model.parameters()) == spec.params


def _sizes(spec):
    small = spec.valid_size(8 if spec.multiple_of >= 8 else 8)
    step = max(spec.multiple_of, 4)
    return [(1, small, small + step), (2, small + step, small + step)]


@pytest.mark.parametrize("name", ALL)
def test_forward_shapes_two_sizes_and_batch2(name):
    spec = get_spec(name)
    model = deploykit.create_model(name)
    assert not model.training
    wrapped = ImageOutput(model, spec.image_output)
    with torch.inference_mode():
        for n, h, w in _sizes(spec):
            inputs = [torch.rand(n, t.channels, h, w) for t in spec.inputs]
            out = wrapped(*inputs)
            assert tuple(out.shape) == (n, spec.out_channels, h * spec.scale, w * spec.scale)
            assert torch.isfinite(out).all()


def test_default_variant_and_explicit_name_agree():
    assert get_spec("vapsr") is get_spec("vapsr:x4")
    assert get_spec("MPRNet").variant == "deblurring"
    assert get_spec("mprnet").image_output == 0
    assert get_spec("udvd").image_output == 2
    assert [t.name for t in get_spec("udvd").inputs] == ["image", "kernel", "noise"]
    assert get_spec("mirnetv2:defocus_deblurring").in_channels == 6


def test_unknown_names_list_valid_ones():
    with pytest.raises(UnknownModelError, match="valid models: mirnetv2, mirnet, mprnet"):
        get_spec("restormer")
    with pytest.raises(UnknownModelError, match="valid variants: x2, x3, x4, s_x4"):
        get_spec("vapsr:x8")


def test_shape_contract_errors_say_what_to_do():
    spec = get_spec("mprnet")
    spec.check_size(64, 72)
    with pytest.raises(ShapeContractError, match="multiples of 8.*Pad the image"):
        spec.check_size(60, 72)
    assert spec.valid_size(61) == 64


def test_seeded_random_init_is_reproducible():
    a = deploykit.create_model("vapsr:s_x4", seed=3)
    b = deploykit.create_model("vapsr:s_x4", seed=3)
    c = deploykit.create_model("vapsr:s_x4", seed=4)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)


def test_registry_refuses_duplicates_and_orphan_variants():
    from dataclasses import replace

    from deploykit.zoo import registry

    spec = registry.get_spec("vapsr:x4")
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(spec)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_family("vapsr", "again", "SR", "x4")
    with pytest.raises(ValueError, match="must come before"):
        registry.register(replace(spec, family="nosuchfamily"))
    assert "nosuchfamily" not in registry.families()
