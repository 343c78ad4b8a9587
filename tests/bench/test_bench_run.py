"""deploykit.bench.run and the ``bench`` command: skips, a tiled run and a tiny end-to-end run (no timing asserts)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from deploykit.bench import memory
from deploykit.bench.memory import HOST_FACTORS
from deploykit.bench.run import run_bench
from deploykit.cli.bench import register
from deploykit.errors import BenchError, InputError
from deploykit.zoo.registry import get_spec


def test_bench_skips_a_resolution_that_does_not_fit(monkeypatch, tmp_path):
    # 2 GiB available, 1 GiB reserve: 2048x2048 (about 80 GiB estimated for SRResNet x4) does not fit
    monkeypatch.setattr(memory, "available_memory", lambda: 2 * 2**30)
    monkeypatch.setattr(memory, "host_reserve", lambda total=None: 2**30)
    events = []
    result = run_bench(["srresnet:x4"], res="2048", backends=["torch"], warmup=0, iters=1, threads=1,
                       exports_root=tmp_path / "none", cache_dir=tmp_path / "cache",
                       on_event=lambda kind, msg: events.append((kind, msg)))
    (record,) = result.records
    assert record.status == "skipped"
    assert "memory guard" in record.reason and "--tile" in record.reason
    assert record.memory["estimate_bytes"] > 2 * 2**30 and record.latency_ms == {}
    assert record.flops_per_image == pytest.approx(5.072e6 * 2048 * 2048, rel=0.01)  # 5 072 GFLOP/MPix (ecosystem.md §3.1)
    assert ("skip", f"srresnet:x4 torch/fp32 2048x2048: {record.reason}") in events
    assert not any(kind == "start" for kind, _ in events)  # nothing ran


def test_no_models_and_no_exports_says_how_to_export(tmp_path):
    with pytest.raises(BenchError, match="deploykit export"):
        run_bench(None, res="64", backends=["torch"], exports_root=tmp_path / "empty")


def test_shape_contract_is_a_skip_not_a_crash(tmp_path):
    result = run_bench(["mprnet:deraining"], res="36", backends=["torch"], warmup=0, iters=1, threads=1,
                       exports_root=tmp_path)
    (record,) = result.records
    assert record.status == "skipped" and "multiples of 8" in record.reason
    assert result.flops == {}  # decided from the spec alone: the model was never built


def test_tiled_torch_run_counts_every_tile(tmp_path):
    result = run_bench(["srresnet:x2"], res="64", backends=["torch"], warmup=0, iters=1, threads=1, tile=32,
                       overlap=8, exports_root=tmp_path)
    (record,) = result.records
    assert record.status == "ok", record.reason
    tiles = record.tile["tiles"]
    assert tiles > 1 and record.tile["tile_runs"] == tiles and record.batch == 1
    th, tw = record.tile["tile_hw"]
    per_pixel = result.flops["srresnet:x2"]["flops_per_pixel"]
    assert record.flops_per_image == pytest.approx(per_pixel * th * tw * tiles, rel=1e-6)
    assert f"{tiles} tiles incl. overlap" in record.flops_method
    assert record.parity["reference"] and record.output_hw == [128, 128]
    assert result.to_dict()["settings"]["tile"] == 32


@pytest.fixture(scope="module")
def srresnet_export(tmp_path_factory) -> Path:
    """A quick legacy-exporter FP32 ONNX of srresnet:x2 with a minimal manifest under <root>/srresnet/x2/."""
    from deploykit.runtime.torch_backend import ImageOutput
    from deploykit.util.files import sha256_file
    from deploykit.zoo.factory import build_model

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


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test app"""

    register(app)
    return app


def test_bench_command_says_what_to_type_for_res(tmp_path):
    result = CliRunner().invoke(_app(), ["bench", "srresnet:x2", "--res", "big", "--exports", str(tmp_path)])
    assert isinstance(result.exception, InputError)  # cli.app.main prints it as one error line, exit 2
    assert "WIDTHxHEIGHT" in str(result.exception) and "1920x1080" in str(result.exception)


def test_bench_end_to_end_writes_json_csv_png(srresnet_export, tmp_path):
    out = tmp_path / "results"
    result = CliRunner().invoke(_app(), ["bench", "--res", "32,48", "--backend", "torch,ort", "--warmup", "1",
                                         "--iters", "2", "--threads", "1", "--exports", str(srresnet_export),
                                         "--out", str(out), "--name", "tiny", "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "wrote " in result.output and "✓" in result.output
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
    spec = get_spec("srresnet:x2")
    for r in ort:  # ONNX Runtime's guard factor comes from the probe, once per model: the same calibration
        cal = r["memory"]["calibration"]
        assert cal["sizes"] == [spec.valid_size(48), spec.valid_size(96)] and len(cal["peaks"]) == 2
        assert cal["factor"] >= HOST_FACTORS["ort"] and r["memory"]["guard_factor"] == cal["factor"]
    assert ort[0]["memory"]["calibration"] == ort[1]["memory"]["calibration"]
    assert all(r["parity"]["reference"] for r in records if r["backend"] == "torch")
    rows = list(csv.DictReader((device_dir / "tiny.csv").open()))
    assert len(rows) == 4 and rows[1]["parity_passed"] == "True"
    png = (device_dir / "tiny.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
