"""deploykit bench: parsing, statistics, FLOP counting, the memory guard, and a tiny end-to-end run (no timing asserts)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from deploykit import bench
from deploykit.bench import (
    BenchError,
    latency_stats,
    parse_resolution,
    parse_resolutions,
    percentile,
)
from deploykit.flops import count_flops, flops_of, trace_peak_bytes
from deploykit.zoo import get_spec

# --- resolutions ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, hw", [("2048", (2048, 2048)), ("256", (256, 256)), ("1920x1080", (1080, 1920)),
                                      (" 640X360 ", (360, 640)), ("1280×720", (720, 1280))])
def test_parse_resolution(text, hw):
    assert parse_resolution(text) == hw  # (height, width); WxH on the command line


def test_parse_resolutions_lists_and_duplicates():
    assert parse_resolutions("256,512, 1024") == [(256, 256), (512, 512), (1024, 1024)]
    assert parse_resolutions(["256,1920x1080", "256", "512"]) == [(256, 256), (1080, 1920), (512, 512)]


@pytest.mark.parametrize("bad", ["", "abc", "0", "0x100", "1920x", "x1080", "-5", "12.5", "1920x1080x3", "19 20"])
def test_parse_resolution_errors(bad):
    with pytest.raises(BenchError, match="WIDTHxHEIGHT|positive"):
        parse_resolution(bad)


def test_parse_resolutions_empty():
    with pytest.raises(BenchError, match="at least one size"):
        parse_resolutions(" , ")


def test_backend_and_precision_choices():
    with pytest.raises(BenchError, match="unknown backend 'tensorflow'"):
        bench.resolve_backends(["torch,tensorflow"])
    with pytest.raises(BenchError, match="unknown precision"):
        bench.parse_choices("fp32,int8", bench.PRECISIONS, "precision", ("fp32",))
    assert bench.parse_choices(None, bench.PRECISIONS, "precision", ("fp32",)) == ["fp32"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only expansion of auto")
def test_auto_backends_on_cpu_and_gpu_ones_unavailable():
    run, unavailable = bench.resolve_backends(["auto"])
    assert run == ["torch", "ort"] and set(unavailable) == {"ort-cuda", "trt"}  # reported with the reason
    run, unavailable = bench.resolve_backends(["torch", "trt", "ort-cuda"])
    assert run == ["torch"]
    assert set(unavailable) == {"trt", "ort-cuda"}
    assert all("pip install 'deploykit[gpu]'" in why for why in unavailable.values())


# --- statistics ----------------------------------------------------------------------------------------------------

def test_latency_stats_known_samples():
    stats = latency_stats([float(v) for v in range(100, 0, -1)])  # 1..100 in reverse order
    assert stats["count"] == 100
    assert stats["min"] == 1 and stats["max"] == 100
    assert stats["median"] == 50.5 and stats["mean"] == 50.5
    assert stats["p90"] == 90 and stats["p95"] == 95 and stats["p99"] == 99  # nearest rank


def test_latency_stats_small_and_odd():
    stats = latency_stats([5.0, 1.0, 3.0])
    assert (stats["min"], stats["median"], stats["p90"], stats["p99"], stats["max"]) == (1, 3, 5, 5, 5)
    assert latency_stats([7.0])["p99"] == 7.0
    assert latency_stats([])["count"] == 0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0


def test_time_runs_counts_warmup_and_iterations():
    calls = []
    timing = bench.time_runs(lambda: calls.append(1) or {"n": len(calls)}, warmup=2, iters=3, seconds=None)
    assert len(calls) == 1 + 1 + 3  # first run (= warm-up 1), one more warm-up, three timed runs
    assert len(timing.samples_ms) == 3 and timing.output == {"n": 1}
    calls.clear()
    timing = bench.time_runs(lambda: calls.append(1), warmup=0, iters=2, seconds=None)
    assert len(calls) == 2 and len(timing.samples_ms) == 2  # without warm-up the first run is a sample


# --- FLOPs -------------------------------------------------------------------------------------------------------------

def test_flops_of_single_conv_is_analytic():
    cin, cout, k, h, w = 3, 8, 3, 16, 20
    conv = nn.Conv2d(cin, cout, k, padding=k // 2)
    analytic = 2 * cin * cout * k * k * h * w
    assert flops_of(conv, [torch.rand(1, cin, h, w)]) == analytic
    assert flops_of(conv.to("meta"), [torch.empty(1, cin, h, w, device="meta")]) == analytic


def test_count_flops_scales_linearly_by_pixels():
    cin, cout, k = 4, 6, 5
    conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
    spec = SimpleNamespace(name="conv", inputs=[SimpleNamespace(name="image", channels=cin)],
                           valid_size=lambda s: s)
    count = count_flops(conv, spec, base=32)
    assert count.base_flops == 2 * cin * cout * k * k * 32 * 32
    assert count.linearity_error == 0.0
    assert count.at(1080, 1920) == 2 * cin * cout * k * k * 1080 * 1920
    assert "scaled linearly" in count.method


def test_flops_of_zoo_model_matches_published_rate():
    model = get_spec("vapsr:s_x4").build().eval()
    count = count_flops(model, get_spec("vapsr:s_x4"))
    assert count.flops_per_pixel > 0 and count.linearity_error < 1e-3


# --- memory guard ----------------------------------------------------------------------------------------------------

def test_trace_peak_bytes_of_a_conv():
    conv = nn.Conv2d(3, 16, 3, padding=1)
    spec = SimpleNamespace(inputs=[SimpleNamespace(name="image", channels=3)])
    trace = trace_peak_bytes(conv, spec, 64, 32)
    assert trace.peak_bytes >= 16 * 64 * 32 * 4  # at least the output feature map
    assert trace.output_bytes == 16 * 64 * 32 * 4


def test_memory_guard_skips_with_tile_hint(monkeypatch):
    monkeypatch.setattr(bench, "available_memory", lambda: 3 * 2**30)
    monkeypatch.setattr(bench, "host_reserve", lambda total=None: 2**30)
    spec = get_spec("srresnet:x4")
    per_pixel = 9472.0
    fits = bench.check_memory(int(per_pixel * 256 * 256), spec=spec, bytes_per_pixel=per_pixel)
    assert fits.fits
    guard = bench.check_memory(int(per_pixel * 2048 * 2048), spec=spec, bytes_per_pixel=per_pixel)
    assert not guard.fits and guard.estimate_bytes > guard.available_bytes
    reason = guard.reason("2048x2048")
    assert "--tile" in reason and "GiB" in reason and "2048x2048" in reason
    assert guard.tile_hint is not None and guard.tile_hint % spec.multiple_of == 0


def test_bench_skips_a_resolution_that_does_not_fit(monkeypatch, tmp_path):
    # 2 GiB available, 1 GiB reserve: 48x48 fits, 2048x2048 (about 80 GiB estimated for SRResNet x4) does not
    monkeypatch.setattr(bench, "available_memory", lambda: 2 * 2**30)
    monkeypatch.setattr(bench, "host_reserve", lambda total=None: 2**30)
    result = bench.run_bench(["srresnet:x4"], res="2048", backends=["torch"], warmup=0, iters=1, threads=1,
                             exports_root=tmp_path / "none", cache_dir=tmp_path / "cache")
    (record,) = result.records
    assert record.status == "skipped"
    assert "memory guard" in record.reason and "--tile" in record.reason
    assert record.memory["estimate_bytes"] > 2 * 2**30
    assert record.flops_per_image == pytest.approx(5.072e6 * 2048 * 2048, rel=0.01)  # 5 072 GFLOP/MPix (ecosystem.md §3.1)


def test_no_models_and_no_exports_says_how_to_export(tmp_path):
    with pytest.raises(BenchError, match="deploykit export"):
        bench.run_bench(None, res="64", backends=["torch"], exports_root=tmp_path / "empty")


def test_shape_contract_is_a_skip_not_a_crash(tmp_path):
    result = bench.run_bench(["mprnet:deraining"], res="36", backends=["torch"], warmup=0, iters=1, threads=1,
                             exports_root=tmp_path)
    assert result.records[0].status == "skipped" and "multiples of 8" in result.records[0].reason


# --- end to end -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def srresnet_export(tmp_path_factory) -> Path:
    """A quick legacy-exporter FP32 ONNX of srresnet:x2 with a minimal manifest under <root>/srresnet/x2/."""
    from deploykit.checkpoints import sha256_file
    from deploykit.factory import build_model
    from deploykit.forms import ImageOutput

    root = tmp_path_factory.mktemp("exports")
    out = root / "srresnet" / "x2"
    out.mkdir(parents=True)
    model, _, _ = build_model("srresnet:x2")
    onnx_path = out / "srresnet_x2.fp32.onnx"
    torch.onnx.export(ImageOutput(model, 0), (torch.rand(1, 3, 32, 40),), str(onnx_path), dynamo=False,
                      input_names=["image"], output_names=["output"], opset_version=17,
                      dynamic_axes={"image": {0: "N", 2: "H", 3: "W"}, "output": {0: "N", 2: "H2", 3: "W2"}})
    manifest = {"schema": "deploykit.manifest", "schema_version": 1,
                "model": {"name": "srresnet:x2", "family": "srresnet", "variant": "x2"},
                "weights": {"source": "random-init", "seed": 0}, "export": {"static_hw": None},
                "artifacts": [{"kind": "onnx", "precision": "fp32", "file": onnx_path.name,
                               "sha256": sha256_file(onnx_path)}]}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_bench_end_to_end_writes_json_csv_png(srresnet_export, tmp_path):
    import typer
    from typer.testing import CliRunner

    from deploykit.cli_bench import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test app"""

    register(app)
    out = tmp_path / "results"
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "--res", "32,48", "--backend", "torch,ort", "--warmup", "1", "--iters",
                                 "2", "--threads", "1", "--exports", str(srresnet_export), "--out", str(out),
                                 "--name", "tiny", "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    (device_dir,) = out.iterdir()
    assert device_dir.name.startswith("cpu-") or device_dir.name.startswith("gpu-")
    data = json.loads((device_dir / "tiny.json").read_text())
    assert data["schema"] == "deploykit.bench" and data["schema_version"] == 1
    for key in ("command", "device", "versions", "settings", "load", "methods", "records", "flops"):
        assert key in data, key
    assert data["device"]["cpu"] and data["device"]["threads"]["torch_intra_op"] == 1
    assert data["versions"]["torch"] and data["versions"]["onnxruntime"]
    assert len(data["load"]["loadavg_before"]) == 3
    assert isinstance(data["command"], str) and data["command"]  # sys.argv of the process (pytest here)
    records = data["records"]
    assert [(r["backend"], r["input_wxh"]) for r in records] == [
        ("torch", "32x32"), ("ort", "32x32"), ("torch", "48x48"), ("ort", "48x48")]
    for r in records:
        assert r["status"] == "ok", r
        assert r["output_wxh"] == {"32x32": "64x64", "48x48": "96x96"}[r["input_wxh"]]
        assert r["iterations"] == 2 and r["warmup"] == 1
        for k in ("min", "median", "mean", "p90", "p99"):
            assert r["latency_ms"][k] > 0
        assert r["megapixels_per_s"] > 0 and r["tflops"] > 0 and r["flops_per_image"] > 0
        assert r["memory"]["rss_peak_bytes"] >= r["memory"]["rss_before_bytes"]
        assert r["latency_includes"]
    ort = [r for r in records if r["backend"] == "ort"]
    assert all(r["parity"]["checked"] and r["parity"]["passed"] and r["parity"]["nonfinite"] == 0 for r in ort)
    assert all(r["artifact"]["source"] == "exports" for r in ort)
    assert all(r["parity"]["reference"] for r in records if r["backend"] == "torch")
    rows = list(csv.DictReader((device_dir / "tiny.csv").open()))
    assert len(rows) == 4 and rows[1]["parity_passed"] == "True"
    png = (device_dir / "tiny.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
