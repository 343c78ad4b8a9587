"""ONNX Runtime CPU latency of UDVD's two PixelConv export forms (``shift`` vs ``unfold``).

Measures, per form:

(a) the whole UDVD x2 model, exported by ``deploykit.exporting.pipeline.export`` (FP32, simplified, default
    exporter choice) into a temporary directory, at LR input sizes 256x256 and 512x512, batch 1;
(b) the PixelConv op alone (C=3, k=5; scale 2 as in UpDyConv, scale 1 as in ComDyConv) at the same sizes,
    exported with the same exporter and simplifier.

Latency is ``InferenceSession.run`` on host numpy arrays (CPUExecutionProvider, N intra-op threads, default graph
optimisation), excluding session creation and any I/O: ``--warmup`` untimed runs per session, then ``--runs``
timed runs, with the forms interleaved (A,B then B,A, ...) so that load shared with other processes hits both
forms alike. Reports median / min / p90, graph node counts and, per configuration, the peak RSS of a fresh
process that creates the session and runs it twice (minus that process's RSS before the session).

Usage::

    python3 benchmarks/pixelconv_forms.py [--sizes 256 512] [--runs 10] [--op-runs 30] [--threads 2]

Writes ``benchmarks/results/<machine slug, e.g. cpu-amd-epyc-2cpu>/pixelconv_forms.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploykit.util.system import cpu_identity, cpu_model, cpu_slug  # noqa: E402  (the results/<slug> naming of deploykit bench)

FORMS = ("shift", "unfold")
K = 5


# --- machine -----------------------------------------------------------------------------------------------------

def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_for_quiet(max_load: float, max_wait_s: float) -> dict:
    """Wait (up to max_wait_s) until the 1-minute load average is <= max_load."""
    start, first = time.monotonic(), loadavg()
    load = first
    while load > max_load and time.monotonic() - start < max_wait_s:
        time.sleep(15)
        load = loadavg()
    waited = time.monotonic() - start
    if load > max_load:
        print(f"  warning: load average still {load:.2f} (> {max_load}) after {waited:.0f} s; measuring anyway",
              flush=True)
    return {"load_at_check": first, "load_at_start": load, "waited_s": round(waited, 1)}


def rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


# --- graphs ------------------------------------------------------------------------------------------------------

def export_udvd(form: str, out_dir: Path) -> dict:
    from deploykit.exporting.pipeline import export

    start = time.perf_counter()
    result = export("udvd", out=out_dir / form, forms={"pixelconv": form}, fp16=False)
    fp32 = next(a for a in result.manifest["artifacts"] if a["precision"] == "fp32")
    return {"path": str(result.out_dir / fp32["file"]), "exporter": result.manifest["export"]["exporter"],
            "nodes": fp32["nodes"], "nodes_before_simplify": result.manifest["simplify"]["nodes_before"],
            "op_types": fp32["op_types"], "bytes": fp32["bytes"], "export_s": round(time.perf_counter() - start, 1)}


def export_pixelconv(form: str, scale: int, exporter: str, path: Path) -> dict:
    import onnx
    import torch
    from torch import nn

    from deploykit.exporting import forms
    from deploykit.exporting.onnx_export import dim_request, export_onnx, finalize, save_onnx
    from deploykit.exporting.simplify import simplify

    class FormOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.form = forms._PIXELCONV_CLASSES[form](scale)

        def forward(self, feature, kernel):
            return self.form(feature, kernel)

    kc = K * K * scale * scale
    request = dim_request([("feature", 3), ("kernel", kc)], [("out", 3)], None, scale)
    args = (torch.rand(2, 3, 16, 24), torch.randn(2, kc, 16, 24))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw, _ = export_onnx(FormOnly().eval(), args, path, request, exporter=exporter)
    slim = simplify(raw, "onnxslim")
    finalize(slim)
    save_onnx(slim, path)
    ops: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {"path": str(path), "exporter": exporter, "nodes_before_simplify": len(raw.graph.node),
            "nodes": sum(ops.values()), "op_types": dict(sorted(ops.items()))}


# --- inputs and sessions -------------------------------------------------------------------------------------

def udvd_feed(size: int) -> dict[str, np.ndarray]:
    from deploykit.zoo.sample_inputs import random_inputs
    from deploykit.zoo.registry import get_spec

    return random_inputs(get_spec("udvd"), (1, size, size), seed=0)


def pixelconv_feed(size: int, scale: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"feature": rng.uniform(0, 1, (1, 3, size, size)).astype(np.float32),
            "kernel": rng.normal(0, 0.2, (1, K * K * scale * scale, size, size)).astype(np.float32)}


def make_feed(kind: str, size: int) -> dict[str, np.ndarray]:
    return udvd_feed(size) if kind == "udvd" else pixelconv_feed(size, int(kind.rsplit("s", 1)[1]))


def session(path: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def stats(times_s: list[float]) -> dict:
    ms = np.asarray(times_s) * 1e3
    return {"median_ms": round(float(np.median(ms)), 3), "min_ms": round(float(ms.min()), 3),
            "p90_ms": round(float(np.percentile(ms, 90)), 3), "mean_ms": round(float(ms.mean()), 3),
            "runs": len(ms), "all_ms": [round(float(v), 3) for v in ms]}


def measure_interleaved(paths: dict[str, str], feed: dict[str, np.ndarray], threads: int, warmup: int,
                        runs: int) -> dict[str, dict]:
    sessions = {form: session(p, threads) for form, p in paths.items()}
    outputs = {}
    for _ in range(warmup):  # warm-up, interleaved too
        for form, sess in sessions.items():
            outputs[form] = sess.run(None, feed)[0]
    times: dict[str, list[float]] = {form: [] for form in sessions}
    order = list(sessions)
    for i in range(runs):
        for form in (order if i % 2 == 0 else order[::-1]):
            sess = sessions[form]
            start = time.perf_counter()
            sess.run(None, feed)
            times[form].append(time.perf_counter() - start)
    forms_ = list(outputs)
    agree = float(np.abs(outputs[forms_[0]] - outputs[forms_[1]]).max()) if len(forms_) == 2 else None
    return {"forms": {form: stats(t) for form, t in times.items()}, "max_abs_between_forms": agree}


def child_peak_rss(path: str, kind: str, size: int, threads: int) -> dict:
    """Peak RSS of a fresh process that loads the session and runs it twice (VmHWM; minus RSS before)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_rss-child", path, kind, str(size), str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rss_child(path: str, kind: str, size: int, threads: int) -> None:
    feed = make_feed(kind, size)
    import onnxruntime  # noqa: F401  (import cost is not the session's)

    before = rss_kib()
    sess = session(path, threads)
    for _ in range(2):
        sess.run(None, feed)
    peak = rss_kib("VmHWM")
    print(json.dumps({"peak_rss_mib": round(peak / 1024, 1), "before_session_mib": round(before / 1024, 1),
                      "session_peak_mib": round((peak - before) / 1024, 1)}))


# --- main --------------------------------------------------------------------------------------------------------

def versions() -> dict:
    import onnx
    import onnxruntime
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
           "onnx": onnx.__version__}
    try:
        import onnxslim
        out["onnxslim"] = onnxslim.__version__
    except Exception:  # noqa: BLE001
        pass
    return out


def markdown(result: dict) -> str:
    lines = ["| what | LR input | form | median ms | min ms | p90 ms | runs | unfold/shift (median) | peak RSS MiB |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in result["measurements"]:
        med = {f: row["forms"][f]["median_ms"] for f in row["forms"]}
        ratio = med["unfold"] / med["shift"] if "unfold" in med and "shift" in med else float("nan")
        for form, s in row["forms"].items():
            rss = row.get("peak_rss", {}).get(form, {}).get("session_peak_mib", "")
            lines.append(f"| {row['what']} | {row['size']}x{row['size']} | {form} | {s['median_ms']:.1f} | "
                         f"{s['min_ms']:.1f} | {s['p90_ms']:.1f} | {s['runs']} | "
                         f"{ratio:.2f} | {rss} |")
    lines += ["", "| graph | form | ONNX nodes (after onnxslim) | before | exporter |", "|---|---|---:|---:|---|"]
    for graph, per_form in result["graphs"].items():
        for form, g in per_form.items():
            lines.append(f"| {graph} | {form} | {g['nodes']} | {g['nodes_before_simplify']} | {g['exporter']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_rss-child":
        _rss_child(argv[1], argv[2], int(argv[3]), int(argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per form, whole model (>= 10)")
    parser.add_argument("--op-runs", type=int, default=30, help="timed runs per form, PixelConv alone")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="ORT intra-op threads")
    parser.add_argument("--max-load", type=float, default=1.5, help="wait until the 1-min load average is below")
    parser.add_argument("--max-wait", type=float, default=900, help="seconds to wait for that, per phase")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS child processes")
    parser.add_argument("--no-model", action="store_true", help="PixelConv alone only")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    cpu = cpu_model()
    out_dir = args.results / cpu_slug()
    result = {
        "benchmark": "pixelconv_forms", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpu_model": cpu, "cpu_identity": cpu_identity(), "logical_cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "versions": versions(),
        "settings": {"provider": "CPUExecutionProvider", "intra_op_threads": args.threads, "inter_op_threads": 1,
                     "graph_optimization": "ORT default (ORT_ENABLE_ALL)", "warmup": args.warmup,
                     "runs_model": args.runs, "runs_op": args.op_runs, "batch": 1, "dtype": "float32",
                     "timed": "InferenceSession.run on host numpy arrays; no session creation, no file I/O",
                     "interleaving": "forms alternate A,B / B,A per timed run", "max_load": args.max_load},
        "graphs": {}, "measurements": [],
    }
    print(f"CPU {cpu}, {os.cpu_count()} logical CPUs; {result['versions']}", flush=True)

    with tempfile.TemporaryDirectory(prefix="pixelconv_forms_") as tmp:
        tmp_path = Path(tmp)
        exporter = "dynamo"
        if not args.no_model:
            graphs = {}
            for form in FORMS:
                print(f"exporting UDVD x2 with pixelconv={form} ...", flush=True)
                graphs[form] = export_udvd(form, tmp_path)
                print(f"  {graphs[form]['nodes']} nodes ({graphs[form]['exporter']}), "
                      f"{graphs[form]['export_s']} s", flush=True)
            result["graphs"]["udvd_x2"] = graphs
            exporter = graphs[FORMS[0]]["exporter"]
        for scale in (2, 1):
            graphs = {form: export_pixelconv(form, scale, exporter, tmp_path / f"pixelconv_s{scale}_{form}.onnx")
                      for form in FORMS}
            result["graphs"][f"pixelconv_s{scale}"] = graphs
            print(f"PixelConv s{scale}: " + ", ".join(f"{f} {g['nodes']} nodes" for f, g in graphs.items()),
                  flush=True)

        # cheap op phases first (all sizes), then the whole model
        jobs = [(graph, what, runs, size)
                for graph, what, runs in [("pixelconv_s2", "PixelConv s2 (k5, C3)", args.op_runs),
                                          ("pixelconv_s1", "PixelConv s1 (k5, C3)", args.op_runs)]
                for size in args.sizes]
        if not args.no_model:
            jobs += [("udvd_x2", "UDVD x2 whole model", args.runs, size) for size in args.sizes]
        for graph, what, runs, size in jobs:
            paths = {form: result["graphs"][graph][form]["path"] for form in FORMS}
            kind = "udvd" if graph == "udvd_x2" else graph.replace("pixelconv_", "op_")
            feed = make_feed(kind, size)
            load = wait_for_quiet(args.max_load, args.max_wait)
            print(f"{what} at {size}x{size} (load {load['load_at_start']:.2f}) ...", flush=True)
            start = time.perf_counter()
            row = measure_interleaved(paths, feed, args.threads, args.warmup, runs)
            row.update(graph=graph, what=what, size=size, load=load, load_after=loadavg(),
                       seconds=round(time.perf_counter() - start, 1))
            if not args.no_rss:
                row["peak_rss"] = {form: child_peak_rss(p, kind, size, args.threads) for form, p in paths.items()}
            result["measurements"].append(row)
            out_dir.mkdir(parents=True, exist_ok=True)  # partial results survive an interrupted run
            (out_dir / "pixelconv_forms.partial.json").write_text(json.dumps(result, indent=2) + "\n")
            print("  " + ", ".join(f"{f}: median {s['median_ms']:.1f} ms (min {s['min_ms']:.1f}, "
                                   f"p90 {s['p90_ms']:.1f})" for f, s in row["forms"].items())
                  + f"; forms agree to {row['max_abs_between_forms']:.1e}", flush=True)
        for per_form in result["graphs"].values():
            for g in per_form.values():
                g["path"] = Path(g["path"]).name

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "pixelconv_forms.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "pixelconv_forms.partial.json").unlink(missing_ok=True)
    print()
    print(markdown(result))
    print(f"\nwrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
