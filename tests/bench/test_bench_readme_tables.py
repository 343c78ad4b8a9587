"""The benchmark tables in README.md and benchmarks/README.md are generated from the committed JSON: a block
``<!-- bench-table: FILE.json -->`` … ``<!-- /bench-table -->`` must equal what ``deploykit.bench.report``
renders from that file (regenerate: ``python3 -m deploykit.bench.report --update benchmarks/README.md README.md``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploykit.bench.report import TABLE_MARK, render_tables, table_drift

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_tables_match_their_json(doc):
    drifted = table_drift(doc, ROOT)
    assert not drifted, (f"{doc.name}: the tables of {drifted} differ from their JSON; run "
                         "python3 -m deploykit.bench.report --update benchmarks/README.md README.md")


def test_benchmarks_readme_has_generated_tables():
    blocks = list(TABLE_MARK.finditer((ROOT / "benchmarks" / "README.md").read_text()))
    assert blocks, "benchmarks/README.md should embed its result tables as bench-table blocks"
    for m in blocks:
        assert (ROOT / m["json"]).is_file(), m["json"]


def _record(median: float, suspect: bool = False) -> dict:
    return {"model": "m", "backend": "ort", "runtime": "ort-cpu", "precision": "fp32", "batch": 1,
            "input_wxh": "8x8", "output_wxh": "8x8", "input_hw": [8, 8], "status": "ok",
            "latency_ms": {"median": median, "p90": median, "p99": median, "count": 1}, "first_run_ms": median,
            "tflops": 0.1, "peak_fraction": 1.3 if suspect else 0.5, "suspect": suspect, "cpu_per_wall": 1.0,
            "flops_per_image": 10**9, "memory": {}}


def _result(records: list[dict]) -> dict:
    return {"schema": "deploykit.bench", "device": {"name": "cpu"}, "versions": {}, "load": {},
            "settings": {"warmup": 1, "iters": 1, "batch": 1}, "command": "x", "records": records}


def test_a_changed_figure_or_an_edited_table_is_drift(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps(_result([_record(12.5)])))
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- bench-table: r.json -->\nstale\n<!-- /bench-table -->\nprose\n")
    assert table_drift(doc, tmp_path) == ["r.json"]
    doc.write_text(render_tables(doc.read_text(), tmp_path))
    assert table_drift(doc, tmp_path) == [] and doc.read_text().endswith("<!-- /bench-table -->\nprose\n")
    assert "| 12.5 |" in doc.read_text()
    (tmp_path / "r.json").write_text(json.dumps(_result([_record(13.0)])))  # the data moved, the prose did not
    assert table_drift(doc, tmp_path) == ["r.json"]
    doc.write_text(doc.read_text().replace("| 12.5 |", "| 13.0 |"))  # hand-editing the figure is not enough
    assert table_drift(doc, tmp_path) == ["r.json"]


def test_a_suspect_record_is_flagged_in_the_table(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps(_result([_record(1.0, suspect=True), _record(2.0)])))
    text = render_tables("<!-- bench-table: r.json no-header -->\n<!-- /bench-table -->", tmp_path)
    rows = [line for line in text.splitlines() if line.startswith("| m ")]
    assert "⚠ 1.30 SUSPECT" in rows[0] and "SUSPECT" not in rows[1] and "| 0.50 |" in rows[1]
    assert "Device:" not in text  # no-header


def test_summary_block_computes_the_figures_prose_quotes(tmp_path):
    def rec(runtime, ms, peak, rss, est, hw=512):
        return {"model": "m:x", "runtime": runtime, "status": "ok", "input_hw": [hw, hw], "batch": 1,
                "latency_ms": {"median": ms}, "peak_fraction": peak, "cpu_per_wall": 0.99, "suspect": False,
                "tile": None, "memory": {"rss_peak_delta_bytes": rss, "estimate_bytes": est},
                "parity": ({"checked": True, "max_abs": 3e-7, "psnr_db": 140.0, "nonfinite": 0}
                           if runtime == "ort-cpu" else {"reference": True})}

    data = _result([rec("torch-cpu", 300.0, 0.5, 1000, 1100), rec("ort-cpu", 100.0, 0.9, 500, 800)])
    (tmp_path / "r.json").write_text(json.dumps(data))
    text = render_tables("<!-- bench-table: r.json summary -->\n<!-- /bench-table -->", tmp_path)
    assert "* ort-cpu: 1 records, of the same-run peak 0.90, CPU/wall 0.99, 0 suspect" in text
    assert "* m:x 512x512: ORT 3.00x eager's speed, peak RSS Δ ORT/eager 0.50" in text
    assert "* FP32 parity: max abs <= 3.0e-07, PSNR >= 140.0 dB, NaN/Inf 0" in text
    assert "1.10–1.60 over 2 records, 1 outside ±25 %" in text  # 1100/1000 inside, 800/500 outside
