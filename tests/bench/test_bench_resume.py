"""``deploykit bench --resume``: a long sweep carried over several runs (deploykit.bench.resume)."""

from __future__ import annotations

import copy
import json

import pytest
from typer.testing import CliRunner

from deploykit.bench.resume import carried_from, resume_mismatch
from deploykit.bench.run import run_bench
from deploykit.errors import BenchError
from tests.conftest import bench_cli_app

TINY = dict(backends=["torch"], warmup=0, iters=1, threads=1)


def _bench(tmp_path, res, **kw):
    events = []
    result = run_bench(["srresnet:x2"], res=res, exports_root=tmp_path / "none", cache_dir=tmp_path / "cache",
                       on_event=lambda kind, msg: events.append((kind, msg)), **{**TINY, **kw})
    return result, events


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One finished run at 32x32: the file a later run resumes."""
    result, _ = _bench(tmp_path_factory.mktemp("first"), "32")
    return result.to_dict()


def test_a_resumed_run_measures_only_the_cases_the_file_lacks(first_run, tmp_path):
    result, events = _bench(tmp_path, "32,48", resume=copy.deepcopy(first_run), resume_source="t.json")
    old, new = result.records
    assert (old.input_wxh, old.segment, new.input_wxh, new.segment) == ("32x32", 0, "48x48", 1)
    assert old.latency_ms == first_run["records"][0]["latency_ms"]  # carried as it was, not measured again
    assert [m for k, m in events if k == "start"] == [m for k, m in events if k == "start" and "48x48" in m]
    assert ("info", "srresnet:x2 torch/fp32 32x32: ok in run 1 of the file, carried (--resume)") in events
    data = result.to_dict()
    assert data["complete"] is True and len(data["segments"]) == 2
    assert data["segments"][0]["probe"] == first_run["probe"]  # each run keeps its own GEMM probe


def test_a_carried_record_keeps_the_peak_fraction_of_its_own_run(first_run, tmp_path):
    previous = copy.deepcopy(first_run)
    previous["records"][0]["peak_gflops"] = 1e6  # as if the first run had had another probe
    previous["records"][0]["peak_fraction"] = 1e-9
    result, _ = _bench(tmp_path, "32,48", resume=previous)
    assert (result.records[0].peak_gflops, result.records[0].peak_fraction) == (1e6, 1e-9)
    assert result.records[1].peak_gflops == max(p["fp32"]["gflops_best"] for p in result.probes.values())


def test_errors_run_again_and_results_outside_this_plan_are_kept(first_run, tmp_path):
    previous = copy.deepcopy(first_run)
    other = copy.deepcopy(previous["records"][0]) | {"model": "edsr:m_x4", "family": "edsr"}
    previous["records"][0].update(status="error", reason="killed")
    previous["records"].append(other)
    result, events = _bench(tmp_path, "32", resume=previous)
    assert [(r.model, r.segment, r.status) for r in result.records] == [
        ("srresnet:x2", 1, "ok"), ("edsr:m_x4", 0, "ok")]
    assert any(k == "start" and "32x32" in m for k, m in events)


def test_progress_is_saved_after_every_case_and_marked_incomplete(tmp_path):
    saved = []
    result, _ = _bench(tmp_path, "32,48", on_progress=lambda partial: saved.append(partial.to_dict()))
    assert [len(d["records"]) for d in saved] == [1, 1, 2, 2]  # each case as it starts, then as it ended
    assert all(d["complete"] is False for d in saved) and result.complete is True
    assert saved[1]["records"][0]["peak_fraction"] > 0  # judged against the probe run before the cases


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d["settings"].update(threads=2), "threads 2 there, 1 now"),
    (lambda d: d["versions"].update(torch="0.0"), "torch 0.0 there"),
    (lambda d: d["device"]["cpu_identity"].update(model=999), "machine"),
])
def test_a_file_of_other_options_machine_or_versions_is_refused_with_the_differences(first_run, change, expected):
    previous = copy.deepcopy(first_run)
    change(previous)
    with pytest.raises(BenchError, match="cannot resume t.json: .*" + expected):
        carried_from(previous, "t.json", first_run["settings"], first_run["device"], first_run["versions"])


def test_the_clock_reading_is_not_a_machine_difference(first_run):
    device = copy.deepcopy(first_run["device"])
    device["cpu_identity"]["mhz"] = 1.0
    assert resume_mismatch(first_run, first_run["settings"], device, first_run["versions"]) == []


def test_a_plan_only_file_is_not_resumed(first_run):
    previous = copy.deepcopy(first_run)
    previous["settings"]["plan_only"] = True
    with pytest.raises(BenchError, match="plan-only"):
        carried_from(previous, "p.json", first_run["settings"], first_run["device"], first_run["versions"])


def test_the_command_resumes_its_own_file(tmp_path):
    out, args = tmp_path / "results", ["--backend", "torch", "--warmup", "0", "--iters", "1", "--threads", "1",
                                       "--exports", str(tmp_path / "none"), "--cache-dir", str(tmp_path / "cache")]
    first = CliRunner().invoke(bench_cli_app(), ["bench", "srresnet:x2", "--res", "32", *args, "--out", str(out),
                                        "--name", "sweep", "--resume"])
    assert first.exit_code == 0, first.output
    assert "does not exist yet" in first.output
    second = CliRunner().invoke(bench_cli_app(), ["bench", "srresnet:x2", "--res", "32,48", *args, "--out", str(out),
                                         "--name", "sweep", "--resume"])
    assert second.exit_code == 0, second.output
    assert "holds 1 finished case(s)" in second.output
    (device_dir,) = out.iterdir()
    data = json.loads((device_dir / "sweep.json").read_text())
    assert [(r["input_wxh"], r["segment"]) for r in data["records"]] == [("32x32", 0), ("48x48", 1)]


@pytest.mark.parametrize(("extra", "message"), [
    ([], "--resume needs --name"),
    (["--name", "x", "--plan-only"], "--plan-only measures none"),
])
def test_the_command_says_what_resume_needs(tmp_path, extra, message):
    result = CliRunner().invoke(bench_cli_app(), ["bench", "srresnet:x2", "--res", "32", "--resume", "--out",
                                         str(tmp_path), *extra])
    assert result.exit_code != 0
    assert message in (result.output + str(result.exception))


def test_the_table_header_names_each_run_and_its_probe(first_run):
    from deploykit.bench.report import markdown_header

    data = copy.deepcopy(first_run)
    second = copy.deepcopy(data["segments"][0]) | {"started": "2026-12-08T01:00:00+00:00"}
    second["probe"]["before"]["fp32"]["gflops_best"] = 12345.0
    data["segments"].append(second)
    header = markdown_header(data)
    assert "Measured in 2 runs (`--resume`)" in header
    assert "run 2 (started 2026-12-08T01:00:00+00:00): Same-run GEMM probe" in header and "12345 GFLOP/s" in header


def test_a_case_killed_while_running_is_marked_in_the_file_and_run_again(first_run, tmp_path):
    saved = []
    _bench(tmp_path, "32,48", on_progress=lambda partial: saved.append(partial.to_dict()))
    statuses = [[(r["input_wxh"], r["status"]) for r in d["records"]] for d in saved]
    assert statuses == [[("32x32", "running")], [("32x32", "ok")], [("32x32", "ok"), ("48x48", "running")],
                        [("32x32", "ok"), ("48x48", "ok")]]
    killed = saved[2]  # the file as a run killed during the 48x48 case leaves it
    assert "still running when the file was saved" in killed["records"][1]["reason"]
    result, events = _bench(tmp_path, "32,48", resume=killed)
    assert [(r.input_wxh, r.status, r.segment) for r in result.records] == [("32x32", "ok", 0), ("48x48", "ok", 1)]
    assert any(k == "error" and "48x48: started at" in m and "never finished" in m for k, m in events)


def test_a_tiled_case_run_in_tile_batches_is_carried(tmp_path):
    """A tiled record's batch is 1 (one image), its case's the tiles per run: the resumed run must match them."""
    first, _ = _bench(tmp_path, "64", tile=32, overlap=8, batch=2)
    (record,) = first.records
    assert (record.batch, record.tile["tiles_per_run"]) == (1, 2)
    again, events = _bench(tmp_path, "64", tile=32, overlap=8, batch=2, resume=first.to_dict())
    assert again.records[0].segment == 0 and not any(k == "start" for k, _ in events)
