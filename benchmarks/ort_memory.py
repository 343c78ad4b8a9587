"""Why does ONNX Runtime hold more memory than PyTorch eager? Peak RSS growth of one model, one runner per
process, at several sizes, for PyTorch eager and ORT session settings (CPU arena, memory pattern), next to the
graph's theoretical minimum live memory (``deploykit.bench.onnx_memory``) and the eager meta-device trace.

    python3 benchmarks/ort_memory.py mirnetv2 --sizes 256,512     # -> results/<cpu-slug>/ort_memory_<model>.json
    python3 benchmarks/ort_memory.py mirnetv2 --sizes 256 --onnx OLD.onnx --label skff-stack   # another graph

Each (configuration, size) runs in a fresh process (``--one CONFIG``): the runner is loaded, then the peak RSS
growth (VmHWM reset through /proc/self/clear_refs) over 2 runs at that size (1 for PyTorch) above the RSS of the
loaded runner -- the first run is at the size itself, as in an app on fixed-size frames or a bench case (a warm
run at another size first hides the memory pattern's second block). One intra-op and inter-op thread.
Configurations: ``ort-pattern`` = ONNX Runtime's defaults (the session's own power-of-two arena, memory pattern
on), ``ort`` = deploykit's session (``runtime.ort.cpu_session_options``) with the session's own arena: memory
pattern off, ``ort-noarena`` = no CPU arena (plain malloc), ``ort-shared`` = the shared same-as-requested arena
shrunk after each run (``ModelSpec.ort_arena = "shared"``), ``ort-extended`` = ``ort`` with ORT_ENABLE_EXTENDED
(no NCHWc layout). The ONNX file is the bench cache's random-init export unless ``--onnx``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploykit.util.system import cpu_identity, cpu_slug, loadavg  # noqa: E402

CONFIGS = ("torch", "ort-pattern", "ort", "ort-noarena", "ort-shared", "ort-extended")


def ort_options(cfg: str):
    """The SessionOptions of an ``ort*`` configuration: deploykit's recipe, then what the configuration changes."""
    from deploykit.runtime.ort import cpu_session_options

    arena = "shared" if cfg == "ort-shared" else "session"
    opts = cpu_session_options(1, "extended" if cfg == "ort-extended" else "all", arena)
    opts.enable_mem_pattern = cfg == "ort-pattern"
    opts.enable_cpu_mem_arena = cfg != "ort-noarena"
    return opts


def one(cfg: str, model: str, size: int, onnx: str | None) -> dict:
    from deploykit.util.system import release_memory, reset_peak_rss, status_bytes
    from deploykit.zoo.registry import get_spec
    from deploykit.zoo.sample_inputs import random_inputs

    spec = get_spec(model)
    if cfg == "torch":
        import torch

        from deploykit.runtime.torch_backend import TorchBackend
        from deploykit.zoo.factory import build_model

        torch.set_num_threads(1)
        backend = TorchBackend.for_image(build_model(spec)[0], spec, device="cpu")
    else:
        from deploykit.runtime.ort import OrtBackend

        backend = OrtBackend(onnx or onnx_path(model), session_options=ort_options(cfg))
    feed = random_inputs(spec, (1, size, size), seed=1)
    release_memory()
    base = status_bytes("VmRSS") or 0
    reset_peak_rss()
    start, runs = time.perf_counter(), []
    for _ in range(1 if cfg == "torch" else 2):
        backend.run(feed)
        runs.append(time.perf_counter() - start - sum(runs))
    return {"config": cfg, "size": size, "peak_rss_growth_bytes": max(0, (status_bytes("VmHWM") or base) - base),
            "run_seconds": [round(r, 2) for r in runs], "loadavg_after": loadavg()}


def onnx_path(model: str) -> Path:
    from deploykit.artifacts.lookup import export_dir, onnx_artifact
    from deploykit.artifacts.manifest import read_manifest
    from deploykit.bench.sources import default_cache_dir
    from deploykit.zoo.registry import get_spec

    folder = export_dir(get_spec(model), default_cache_dir())
    return folder / onnx_artifact(read_manifest(folder), "fp32")["file"]


def table(paths: list[Path]) -> str:
    """Rows: each configuration's peak RSS growth and run time, the graph's liveness floor; a column per file and
    size (MB = 1e6 bytes)."""
    results = [{**json.loads(p.read_text()), "file": p.stem.removeprefix("ort_memory_")} for p in paths]
    cols = [(r, s) for r in results for s in r["sizes"]]
    head = " | ".join(f"{r['file']} {s}²" for r, s in cols)
    lines = [f"| MB (10⁶ bytes), s per run | {head} |", "|---|" + "---|" * len(cols)]
    configs = [c for c in CONFIGS if any(x["config"] == c for r in results for x in r["configs"])]
    for cfg in configs:
        cells = []
        for r, s in cols:
            hit = [x for x in r["configs"] if x["config"] == cfg and x["size"] == s]
            cells.append(f"{hit[0]['peak_rss_growth_bytes'] / 1e6:.0f} MB, {max(hit[0]['run_seconds']):.1f} s"
                         if hit else "")
        lines.append(f"| {cfg} | " + " | ".join(cells) + " |")
    floor = [_floor_cell(r["onnx_min_live"][r["sizes"].index(s)]) for r, s in cols]
    lines.append("| ONNX graph minimum live (node order) | " + " | ".join(floor) + " |")
    return "\n".join(lines)


def _floor_cell(live: dict) -> str:
    return f"{live['peak_bytes'] / 1e6:.0f} MB" if live.get("peak_bytes") else f"n/a ({live.get('error', '?')})"


def floor_or_error(onnx, size: int) -> dict:
    """The graph's liveness floor, or why it could not be had (where shape inference fails -- MIRNet's graph, an
    Unsqueeze -- ``min_live_bytes`` measures the tensor sizes with two small runs instead)."""
    from deploykit.bench.onnx_memory import min_live_bytes

    try:
        return min_live_bytes(onnx, size, size)
    except Exception as exc:  # noqa: BLE001 (a study column, not a result)
        return {"peak_bytes": None, "error": f"{type(exc).__name__} in the liveness floor"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--onnx", help="measure this ONNX file instead of the bench cache's export")
    parser.add_argument("--label", default="", help="suffix of the result file (with --onnx)")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--one", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--table", nargs="+", type=Path, metavar="JSON",
                        help="print the markdown table of these result files (one column per file and size)")
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.one:
        print(json.dumps(one(args.one, args.model, sizes[0], args.onnx)))
        return 0
    from deploykit.bench.sources import Target
    from deploykit.bench.state import ModelState
    from deploykit.zoo.registry import get_spec

    state = ModelState(Target(get_spec(args.model)), "cpu")
    extra = ["--onnx", args.onnx] if args.onnx else []
    rows = [json.loads(subprocess.run([sys.executable, __file__, args.model, "--sizes", str(s), "--one", c, *extra],
                                      check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            for c in args.configs.split(",") for s in sizes]
    onnx = args.onnx or onnx_path(args.model)
    result = {"study": "ort_memory", "model": args.model, "label": args.label, "sizes": sizes,
              "cpu_identity": cpu_identity(),
              "threads": 1, "command": " ".join(["python3", "benchmarks/ort_memory.py", *sys.argv[1:]]),
              "loadavg_before": loadavg(), "configs": rows,
              "eager_trace_bytes": [state.trace((s, s), 1).peak_bytes for s in sizes],
              "onnx": str(onnx), "onnx_min_live": [floor_or_error(onnx, s) for s in sizes]}
    label = f"_{args.label}" if args.label else ""
    out = args.out / cpu_slug() / f"ort_memory_{args.model.split(':')[0]}{label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
