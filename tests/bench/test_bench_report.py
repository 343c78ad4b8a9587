"""deploykit.bench.report: CSV, Markdown, the rich table and the plot, from a result dict (no benchmark runs)."""

from __future__ import annotations

import csv
import io
import json
import os

import pytest
from rich.console import Console

from deploykit.bench import report
from deploykit.bench.report import CSV_COLUMNS, csv_text, markdown_table, plot_series, rich_table, write_all, write_plot


def _ok(model: str, backend: str, hw: tuple[int, int], median: float) -> dict:
    return {"model": model, "backend": backend, "runtime": None, "precision": "fp32", "batch": 1, "status": "ok",
            "input_hw": list(hw), "input_wxh": f"{hw[1]}x{hw[0]}", "output_wxh": f"{2 * hw[1]}x{2 * hw[0]}",
            "latency_ms": {"median": median, "count": 3}, "tflops": 0.5, "flops_per_image": 2e9,
            "memory": {"estimate_bytes": 2**30}, "parity": {"checked": True, "passed": True, "max_abs": 1e-6,
                                                             "psnr_db": 120.0, "nonfinite": 0}}


def _data() -> dict:
    skipped = {**_ok("a:x2", "ort", (2048, 2048), 0), "status": "skipped", "latency_ms": {},
               "reason": "skipped by the memory guard | use --tile 256"}
    return {"schema": "deploykit.bench", "created": "2026-01-01T00:00:00+00:00",
            "device": {"name": "test CPU", "slug": "cpu-test-2cpu"}, "load": {"loadavg_before": [1, 1, 1]},
            "records": [_ok("a:x2", "torch", (64, 64), 2.0), _ok("a:x2", "torch", (32, 32), 1.0),
                        _ok("a:x2", "ort", (64, 64), 1.5), skipped]}


def test_plot_series_groups_the_records_that_ran():
    series = plot_series(_data())
    assert set(series) == {("a:x2", "torch", "fp32"), ("a:x2", "ort", "fp32")}  # the skipped 2048 is left out
    assert sorted(p[3] for p in series[("a:x2", "torch", "fp32")]) == ["32x32", "64x64"]
    assert series[("a:x2", "ort", "fp32")] == [(64 * 64 / 1e6, 1.5, 0.5, "64x64")]


def test_csv_and_markdown_have_a_row_per_record():
    rows = list(csv.DictReader(io.StringIO(csv_text(_data()))))
    assert list(rows[0]) == list(CSV_COLUMNS) and len(rows) == 4
    assert rows[0]["lat_median_ms"] == "2.0" and rows[3]["status"] == "skipped"
    lines = markdown_table(_data()).splitlines()
    assert len(lines) == 2 + 4 and "**skipped**" in lines[-1] and "\\| use --tile 256" in lines[-1]
    assert all(line.count("|") - line.count("\\|") == lines[0].count("|") for line in lines)


def test_rich_table_shows_reasons_escaped():
    console = Console(file=io.StringIO(), width=300)
    console.print(rich_table(_data()))
    text = console.file.getvalue()
    assert "skipped by the memory guard" in text and "test CPU" in text


def test_write_all_writes_json_csv_and_a_shared_png(tmp_path):
    pytest.importorskip("matplotlib")
    paths = write_all(_data(), tmp_path, "tiny")
    assert set(paths) == {"json", "csv", "png"} and paths["png"].parent == tmp_path / "cpu-test-2cpu"
    assert json.loads(paths["json"].read_text())["records"][0]["model"] == "a:x2"
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    umask = os.umask(0o022)
    os.umask(umask)
    assert paths["png"].stat().st_mode & 0o777 == 0o666 & ~umask  # written like any other result file
    assert [p.name for p in paths["png"].parent.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_write_plot_writes_nothing_when_nothing_ran(tmp_path):
    data = {**_data(), "records": [_data()["records"][-1]]}
    assert write_plot(data, tmp_path / "p.png") is None and not (tmp_path / "p.png").exists()
    assert report.load(write_all(data, tmp_path, "none")["json"])["records"][0]["status"] == "skipped"


def test_summary_lists_records_near_the_roofline_ridge():
    """Balance 100 / 20 = 5 FLOP/B: a record at 6.7 FLOP/B (under 2 x 5) is listed with its bandwidth, one at 58 is
    not."""
    from deploykit.bench.report import summary_text

    def rec(model, intensity):
        roof = {"arithmetic_intensity": intensity, "peak_bandwidth_gbps": 20.0, "bandwidth_gbps": 4.8,
                "roof_gflops": 100.0, "bound": "compute", "roofline_fraction": 0.32}
        return {"status": "ok", "model": model, "runtime": "ort-cpu", "input_hw": [256, 256], "batch": 1,
                "peak_gflops": 100.0, "peak_fraction": 0.32, "cpu_per_wall": 1.0, "roofline": roof,
                "latency_ms": {"median": 1.0}, "memory": {}}

    text = summary_text({"records": [rec("vapsr:x4", 6.7), rec("edsr:m_x4", 58.0)]})
    assert ("* vapsr:x4 ort-cpu 256x256: compute-bound by the roofline (6.7 FLOP/B of unfused traffic, the "
            "machine's balance 5.0): 0.32 of its roof, 4.8 of 20.0 GB/s") in text
    assert "edsr:m_x4 ort-cpu" not in text
