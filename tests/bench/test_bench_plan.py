"""deploykit.bench.plan: reading the options, the backends that run here, and the order of the cases."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from deploykit.bench import plan
from deploykit.bench.plan import BenchSettings, Case, check_options, parse_choices, plan_cases, resolve_backends
from deploykit.bench.run import run_bench
from deploykit.bench.sources import Target
from deploykit.errors import BenchError, InputError
from deploykit.imaging.tiling import plan_tiles
from deploykit.runtime import open as runtime_open
from deploykit.util.sizes import parse_size, parse_sizes
from deploykit.zoo.registry import get_spec

# --- resolutions: util.sizes is the one reader of --res ------------------------------------------------------


@pytest.mark.parametrize("text, hw", [("2048", (2048, 2048)), ("256", (256, 256)), ("1920x1080", (1080, 1920)),
                                      (" 640X360 ", (360, 640)), ("1280×720", (720, 1280))])
def test_parse_size(text, hw):
    assert parse_size(text) == hw  # (height, width); WxH on the command line


def test_parse_sizes_lists_and_duplicates():
    assert parse_sizes("256,512, 1024") == [(256, 256), (512, 512), (1024, 1024)]
    assert parse_sizes(["256,1920x1080", "256", "512"]) == [(256, 256), (1080, 1920), (512, 512)]


@pytest.mark.parametrize("bad", ["", "abc", "0", "0x100", "1920x", "x1080", "-5", "12.5", "1920x1080x3", "19 20"])
def test_parse_size_errors_say_what_to_type(bad):
    with pytest.raises(InputError, match="WIDTHxHEIGHT|positive"):
        parse_size(bad)


@pytest.mark.parametrize("res, message", [("abc", r"use N \(an NxN input\) or WIDTHxHEIGHT, e\.g\. 512 or 1920x1080"),
                                          ("0x100", "must be positive"),
                                          (" , ", r"--res needs at least one size, e\.g\. --res 512,1024,2048")])
def test_run_bench_reads_res_with_util_sizes(res, message, tmp_path):
    with pytest.raises(InputError, match=message):  # read before any model is built
        run_bench(["srresnet:x2"], res=res, backends=["torch"], exports_root=tmp_path)


# --- backends and precisions ------------------------------------------------------------------------------------

def test_backend_and_precision_choices():
    with pytest.raises(BenchError, match="unknown backend 'tensorflow'"):
        resolve_backends(["torch,tensorflow"])
    with pytest.raises(BenchError, match="unknown precision"):
        parse_choices("fp32,int8", runtime_open.PRECISIONS, "precision", ("fp32",))
    assert parse_choices(None, runtime_open.PRECISIONS, "precision", ("fp32",)) == ["fp32"]
    assert parse_choices(["FP16, fp32", "fp16"], runtime_open.PRECISIONS, "precision", ("fp32",)) == ["fp16", "fp32"]
    assert parse_choices(" , ", runtime_open.PRECISIONS, "precision", ("fp32",)) == ["fp32"]


def test_bench_backends_are_runtime_backends():
    assert set(plan.BENCH_BACKENDS) <= set(runtime_open.BACKENDS)  # opened through runtime.open.open_backend
    assert set(plan.AUTO_BACKENDS) <= set(plan.BENCH_BACKENDS) and "torch-compile" not in plan.AUTO_BACKENDS
    with pytest.raises(BenchError, match="unknown backend 'aoti'"):  # a runtime kind bench does not time
        resolve_backends("aoti")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only expansion of auto")
def test_auto_backends_on_cpu_and_gpu_ones_unavailable():
    run, unavailable = resolve_backends(["auto"])
    assert run == ["torch", "ort"] and set(unavailable) == {"ort-cuda", "trt"}  # reported with the reason
    run, unavailable = resolve_backends(["torch", "trt", "ort-cuda"])
    assert run == ["torch"]
    assert set(unavailable) == {"trt", "ort-cuda"}
    assert all("pip install 'deploykit[gpu]'" in why for why in unavailable.values())
    assert unavailable["trt"] == runtime_open.unavailable_reason("trt")  # the one answer to "can it run here?"


@pytest.mark.parametrize("option, value, message", [
    ("batch", 0, "--batch must be >= 1, not 0"), ("warmup", -1, "--warmup must be >= 0, not -1"),
    ("iters", 0, "--iters must be >= 1, not 0"), ("seconds", 0.0, "--seconds must be > 0, not 0.0"),
    ("tile", 4, "--tile must be at least 8 pixels, not 4"), ("threads", 0, "--threads must be >= 1, not 0")])
def test_check_options_names_the_option(option, value, message):
    options = {"batch": 1, "warmup": 0, "iters": None, "seconds": None, "tile": None, "threads": None}
    check_options(**options)  # the defaults pass
    with pytest.raises(BenchError, match=message):
        check_options(**{**options, option: value})


# --- cases -------------------------------------------------------------------------------------------------------

def test_plan_cases_puts_the_reference_first_per_model_and_size():
    targets = [Target(get_spec("srresnet:x2")), Target(get_spec("vapsr:s_x4"))]
    cases = plan_cases(targets, [(64, 64), (32, 48)], ["ort", "torch"], ["fp16", "fp32"], batch=2)
    assert len(cases) == 2 * 2 * 2 * 2
    groups = [cases[i:i + 4] for i in range(0, len(cases), 4)]
    assert [(g[0].target.name, g[0].hw) for g in groups] == [
        ("srresnet:x2", (64, 64)), ("srresnet:x2", (32, 48)), ("vapsr:s_x4", (64, 64)), ("vapsr:s_x4", (32, 48))]
    for group in groups:
        assert group[0].is_reference and not any(c.is_reference for c in group[1:])
        assert len({c.key for c in group}) == 4 and all(c.batch == 2 for c in group)
    assert cases[1].label == "srresnet:x2 ort/fp16 64x64"
    assert Case(targets[0], "torch", "fp32", (1080, 1920), 1).label == "srresnet:x2 torch/fp32 1920x1080"


def test_settings_to_dict_writes_sizes_as_wxh_and_the_default_budget():
    data = BenchSettings([(1080, 1920), (256, 256)], ["torch"], ["fp32"]).to_dict()
    assert data["sizes"] == ["1920x1080", "256x256"]
    assert data["seconds"] == 3.0 and data["iters"] is None  # timing.DEFAULT_SECONDS, as time_runs uses it
    assert BenchSettings([(64, 64)], ["torch"], ["fp32"], iters=5).to_dict()["seconds"] is None


def test_work_hw_is_the_image_or_the_tile_shape():
    spec = get_spec("mprnet:deraining")  # multiple_of 8
    whole = SimpleNamespace(tile=None, overlap=32)
    assert plan.work_hw((1080, 1920), whole, spec) == (1080, 1920)
    tiled = SimpleNamespace(tile=256, overlap=32)
    shape = plan.work_hw((1080, 1920), tiled, spec)
    assert shape == tuple(plan_tiles(1080, 1920, spec, 256, 32).tile_shape)  # what the tiled run will call with
    assert all(v % spec.multiple_of == 0 and v <= 256 for v in shape)
