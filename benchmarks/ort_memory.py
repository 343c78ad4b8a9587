"""Why does ONNX Runtime hold more memory than PyTorch eager? Peak RSS growth of one model, one runner per
process, at several sizes, for PyTorch eager and ORT session settings (CPU arena, memory pattern), next to the
graph's theoretical minimum live memory (``deploykit.bench.onnx_memory``) and the eager meta-device trace.

    python3 benchmarks/ort_memory.py mirnetv2 --sizes 128,256,512     # -> results/<cpu-slug>/ort_memory_<model>.json

Each configuration runs in a fresh process (``--one CONFIG``): one warm run at 16x16, then per size the peak RSS
growth (VmHWM reset through /proc/self/clear_refs) over 2 runs (1 for PyTorch) above the RSS after the warm run
(``util.system.probe_peak_rss``, the probe the bench guard uses). One intra-op and inter-op thread. The ONNX file
is the bench cache's random-init export (``deploykit bench`` / ``deploykit export`` writes it).
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

CONFIGS = ("torch", "ort", "ort-noarena", "ort-nopattern", "ort-noarena-nopattern")


def one(cfg: str, model: str, sizes: list[int]) -> dict:
    from deploykit.util.system import probe_peak_rss
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
        from deploykit.bench.backends import ort_session_options
        from deploykit.runtime.ort import OrtBackend

        opts = ort_session_options(1, "default")
        opts.enable_cpu_mem_arena = "noarena" not in cfg
        opts.enable_mem_pattern = "nopattern" not in cfg
        backend = OrtBackend(onnx_path(model), session_options=opts)
    start = time.perf_counter()
    peaks = probe_peak_rss(lambda s: backend.run(random_inputs(spec, (1, s, s), seed=1)), sizes, 16,
                           repeats=1 if cfg == "torch" else 2)
    return {"config": cfg, "sizes": sizes, "peak_rss_growth_bytes": peaks,
            "seconds": round(time.perf_counter() - start, 1), "loadavg_after": loadavg()}


def onnx_path(model: str) -> Path:
    from deploykit.artifacts.lookup import export_dir, onnx_artifact
    from deploykit.artifacts.manifest import read_manifest
    from deploykit.bench.sources import default_cache_dir
    from deploykit.zoo.registry import get_spec

    folder = export_dir(get_spec(model), default_cache_dir())
    return folder / onnx_artifact(read_manifest(folder), "fp32")["file"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--sizes", default="128,256,512")
    parser.add_argument("--one", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.one:
        print(json.dumps(one(args.one, args.model, sizes)))
        return 0
    from deploykit.bench.onnx_memory import min_live_bytes
    from deploykit.bench.sources import Target
    from deploykit.bench.state import ModelState
    from deploykit.zoo.registry import get_spec

    state = ModelState(Target(get_spec(args.model)), "cpu")
    rows = [json.loads(subprocess.run([sys.executable, __file__, args.model, "--sizes", args.sizes, "--one", c],
                                      check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            for c in CONFIGS]
    result = {"study": "ort_memory", "model": args.model, "sizes": sizes, "cpu_identity": cpu_identity(),
              "threads": 1, "command": " ".join(["python3", "benchmarks/ort_memory.py", *sys.argv[1:]]),
              "loadavg_before": loadavg(), "configs": rows,
              "eager_trace_bytes": [state.trace((s, s), 1).peak_bytes for s in sizes],
              "onnx_min_live": [min_live_bytes(onnx_path(args.model), s, s) for s in sizes]}
    out = args.out / cpu_slug() / f"ort_memory_{args.model.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
