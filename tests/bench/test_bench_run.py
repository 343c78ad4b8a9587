"""deploykit.bench.run and the ``bench`` command: skips, a tiled run and a tiny end-to-end run (no timing asserts)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from deploykit.bench import memory
from deploykit.bench.memory import HOST_FACTORS
from deploykit.bench.records import BenchRecord
from deploykit.bench.report import tile_label
from deploykit.bench.run import fill_timing, run_bench
from deploykit.bench.timing import Timing
from deploykit.errors import BenchError, InputError
from deploykit.imaging.tiling import sample_indices
from deploykit.zoo.registry import get_spec
from tests.conftest import bench_cli_app


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


def test_bench_command_says_what_to_type_for_res(tmp_path):
    result = CliRunner().invoke(bench_cli_app(), ["bench", "srresnet:x2", "--res", "big", "--exports", str(tmp_path)])
    assert isinstance(result.exception, InputError)  # cli.app.main prints it as one error line, exit 2
    assert "WIDTHxHEIGHT" in str(result.exception) and "1920x1080" in str(result.exception)


def test_bench_end_to_end_writes_json_csv_png(srresnet_export, tmp_path):
    out = tmp_path / "results"
    result = CliRunner().invoke(bench_cli_app(), ["bench", "--res", "32,48", "--backend", "torch,ort", "--warmup", "1",
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
    for r in records:  # tiny cases, far below the memory available: the coarse bound, no probe
        assert r["memory"]["estimate_method"].startswith("coarse")
        assert r["memory"]["guard_factor"] == HOST_FACTORS[r["backend"]]
    # --threads 1 read back from the runners, the same-run GEMM probe, and each record against it
    assert data["probe"]["before"]["fp32"]["gflops_best"] > 0 and data["probe"]["after"]["torch_threads"] == 1
    assert data["device"]["cpu_identity"]["cpus_visible"] >= 1 and "model_name" in data["device"]["cpu_identity"]
    for r in records:
        assert r["threads"]["torch_intra_op"] == 1 and r["cpu_per_wall"] > 0
        assert r["peak_gflops"] == max(p["fp32"]["gflops_best"] for p in data["probe"].values())
        assert r["peak_fraction"] == pytest.approx(r["tflops"] * 1e3 / r["peak_gflops"])
        assert r["suspect"] == bool(r["suspect_reasons"])
        assert r["clock_runs"] == 3 and r["cpu_seconds"] > 0  # warm-up 1 (the first run) + 2 timed runs
        assert r["cpu_peak_fraction"] == pytest.approx(
            r["tflops"] * 1e12 * r["latency_ms"]["median"] / 1e3 * 3 / r["cpu_seconds"] / 1e9
            / max(p["fp32"]["gflops_per_cpu_s_best"] for p in data["probe"].values()))
    for r in ort:
        assert (r["threads"]["ort_intra_op"], r["threads"]["ort_inter_op"]) == (1, 1)
        assert r["session_options"]["execution_mode"] == "ORT_SEQUENTIAL"
    assert all(r["parity"]["reference"] for r in records if r["backend"] == "torch")
    rows = list(csv.DictReader((device_dir / "tiny.csv").open()))
    assert len(rows) == 4 and rows[1]["parity_passed"] == "True"
    png = (device_dir / "tiny.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_frame_that_does_not_fit_is_tiled_automatically(monkeypatch, tmp_path):
    """Whole 96x96 does not fit the (faked) memory, a smaller tile does: the case runs tiled, labelled, with an
    overlap from the receptive field, judged against the same tiling of PyTorch FP32, and the tiling's PSNR."""
    from deploykit.bench import guard, memory
    from deploykit.bench.run import run_bench

    cal = {"factor": 2.0, "fixed_bytes": 0, "ratio": 1.6, "sizes": [64, 128], "seconds": 0.0}
    monkeypatch.setattr(guard, "calibration", lambda *a, **k: cal)
    spec = get_spec("srresnet:x2")
    from deploykit.bench.sources import Target
    from deploykit.bench.state import ModelState

    state = ModelState(Target(spec), "cpu")
    held = 2 * 4 * 3 * 192 * 192  # the 96x96 case's output canvas, held twice
    usable = int(memory.PROBE_MARGIN * (2.0 * state.trace((64, 64), 1).peak_bytes + held)) + 2  # 64 fits, 96 not
    monkeypatch.setattr(memory, "available_memory", lambda: usable + 2**30)
    monkeypatch.setattr(memory, "host_reserve", lambda total=None: 2**30)
    monkeypatch.setattr(memory, "CALIBRATE_ABOVE", 0.0)
    from deploykit.bench import autotile

    monkeypatch.setattr(autotile, "check_side", lambda state, size=256: 256)  # the faked memory is for the case
    result = run_bench(["srresnet:x2"], res="96", backends="torch", warmup=0, iters=1, threads=1,
                       cache_dir=tmp_path / "cache", exports_root=tmp_path / "none")
    (r,) = [x.to_dict() for x in result.records]
    assert r["status"] == "ok", r["reason"]
    tile = r["tile"]
    assert tile["auto"] is True and tile["tile"] == 64 and tile["tiles"] == 4
    assert tile["whole_frame_estimate_bytes"] > usable and tile["receptive_radius"] >= 1
    assert tile["overlap"] == min(64 // 4, 4 * tile["receptive_radius"])
    assert tile["psnr_check"]["psnr_db"] > 40 and tile["psnr_check"]["tiles"] > 1
    assert r["output_hw"] == [192, 192] and r["parity"]["reference"]
    from deploykit.bench.report import csv_text, markdown_table

    th, tw = tile["tile_hw"]  # the tiler spreads 4 equal tiles of at most 64 over 96 px
    assert th <= 64 and f"[auto-tiled: 4 x {tw}x{th}, overlap 16]" in markdown_table(result.to_dict())
    assert ",True," in csv_text(result.to_dict()).splitlines()[1]


@pytest.mark.parametrize("lean_fits", [True, False])
def test_ort_frame_that_fits_only_with_the_plain_layout_graph_runs_whole_with_it(srresnet_export, monkeypatch,
                                                                                  tmp_path, lean_fits):
    """ORT_ENABLE_ALL's estimate does not fit, ORT_ENABLE_EXTENDED's (calibrated on its own) does: the case runs
    whole with the extended graph, read back from the session and explained in the record; when neither fits, it
    is tiled with the fast graph."""
    from deploykit.bench import guard

    def fake_calibration(case, state, settings, device, notify):
        if case.backend != "ort":
            factor = 0.5  # the PyTorch reference fits
        else:
            factor = 8.0 if settings.ort_graph == "all" else (0.5 if lean_fits else 7.0)
        return {"factor": factor, "fixed_bytes": 0, "ratio": factor, "sizes": [64, 128], "seconds": 0.0,
                "graph": settings.ort_graph}

    monkeypatch.setattr(guard, "calibration", fake_calibration)
    from deploykit.bench.sources import Target
    from deploykit.bench.state import ModelState

    trace = ModelState(Target(get_spec("srresnet:x2")), "cpu").trace((96, 96), 1).peak_bytes
    usable = int(2.0 * trace)  # 0.5 x trace fits, 7 x and 8 x do not
    monkeypatch.setattr(memory, "available_memory", lambda: usable + 2**30)
    monkeypatch.setattr(memory, "host_reserve", lambda total=None: 2**30)
    monkeypatch.setattr(memory, "CALIBRATE_ABOVE", 0.0)
    result = run_bench(["srresnet:x2"], res="96", backends="torch,ort", warmup=0, iters=1, threads=1,
                       exports_root=srresnet_export, cache_dir=tmp_path / "cache")
    r = [x.to_dict() for x in result.records if x.backend == "ort"][0]
    assert r["status"] == "ok", r["reason"]
    if lean_fits:
        assert r["tile"] is None and r["session_options"]["graph_optimization_level"] == "ORT_ENABLE_EXTENDED"
        assert r["memory"]["calibration"]["graph"] == "extended" and r["memory"]["guard_factor"] == 0.5
        assert r["memory"]["ort_graph"]["level"] == "extended"
        assert r["memory"]["ort_graph"]["fast_level_estimate_bytes"] > usable
        assert r["parity"]["checked"] and r["parity"]["passed"] and r["parity"]["nonfinite"] == 0, r["parity"]
    else:
        assert r["tile"]["auto"] is True and "ort_graph" not in r["memory"]
        assert r["session_options"]["graph_optimization_level"] == "ORT_ENABLE_ALL"


def test_a_tiled_case_over_the_budget_times_a_sample_of_its_tiles(srresnet_export, tmp_path):
    events = []
    result = run_bench(["srresnet:x2"], res="96", backends="torch,ort", warmup=0, iters=1, threads=1, tile=32,
                       overlap=8, exports_root=srresnet_export, cache_dir=tmp_path / "cache",
                       sample_tiles_over=1e-6, on_event=lambda kind, msg: events.append((kind, msg)))
    torch_rec, ort_rec = result.records
    for r in (torch_rec, ort_rec):
        assert r.status == "ok", r.reason
        sampled = r.tile["sampled"]
        assert sampled["indices"] == sample_indices(r.tile["tiles"], 8) and sampled["tiles_timed"] == 8
        assert sampled["scale"] == r.tile["tiles"] / 8
        assert f"extrapolated: 8 of {r.tile['tiles']} tiles timed" in r.latency_includes
    assert ort_rec.parity["checked"] and ort_rec.parity["passed"]  # against PyTorch on the same 8 tiles
    assert any("timing 8 of the" in m for _, m in events)
    assert "8 tiles timed, latency x" in tile_label(ort_rec.to_dict())
    whole = run_bench(["srresnet:x2"], res="96", backends="torch", warmup=0, iters=1, threads=1, tile=32,
                      overlap=8, exports_root=srresnet_export, sample_tiles_over=1e6)
    assert "sampled" not in whole.records[0].tile  # within the budget: every tile runs


def test_a_sampled_run_is_scaled_to_every_tile():
    record = BenchRecord("m", "f", "v", "torch", "fp32", 1, [64, 64], [64, 64], flops_per_image=8_000_000)
    fill_timing(record, Timing(10.0, [10.0, 30.0], 0), 1, 64, 64, scale=4.0)
    assert record.first_run_ms == 40.0 and record.latency_ms["median"] == 80.0 and record.latency_ms["max"] == 120.0
    assert record.tflops == pytest.approx(8e6 / 0.080 / 1e12)


def test_the_sample_budget_must_be_positive(tmp_path):
    with pytest.raises(BenchError, match="--sample-tiles-over must be > 0"):
        run_bench(["srresnet:x2"], res="64", backends="torch", sample_tiles_over=0, exports_root=tmp_path)


def test_an_onnx_case_records_its_graph_floor_beside_the_measured_peak(srresnet_export, tmp_path):
    from deploykit.bench.onnx_memory import min_live_bytes
    from deploykit.bench.report import csv_text, summary_text

    result = run_bench(["srresnet:x2"], res="48x32", backends="torch,ort", warmup=0, iters=1, threads=1,
                       exports_root=srresnet_export, cache_dir=tmp_path / "cache")
    torch_rec, ort_rec = result.records
    expected = min_live_bytes(ort_rec.artifact["file"], 32, 48)["peak_bytes"]
    assert ort_rec.memory["graph_floor_bytes"] == expected > 64 * 32 * 48 * 4  # at least two 64-channel maps
    assert "at 48x32 x batch 1" in ort_rec.memory["graph_floor_method"]
    assert "graph_floor_bytes" not in torch_rec.memory
    data = result.to_dict()
    assert f",{expected}," in csv_text(data).splitlines()[2]
    assert "graph floor" in summary_text(data)
