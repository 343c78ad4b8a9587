"""Tiled vs untiled output on a real photo: PSNR per model family and overlap (deploykit.imaging.tiling as infer runs it).

Per model (the default variant of each family; VapSR x4 with its released weights, every other model a seeded
random initialisation, so their rows are a seam / boundary-effect check, not an image-quality figure):

1. input: ``/work/shared/images/noisy_real.png`` (496x400), the central ``--crop`` x ``--crop`` window (the LR
   input for super-resolution models); UDVD gets the default degradation maps of ``deploykit infer``
   (isotropic blur sigma 0.2, noise 0);
2. the untiled output: the whole crop (padded to the contract) in one PyTorch FP32 run, exactly what
   ``deploykit infer --tile none`` computes;
3. for each overlap: ``run_tiled(..., tile=--tile, overlap=ov)``, the same code ``--tile T --overlap ov`` runs
   (even tile spread, raised-cosine blending with zero-weight margins of overlap/4);
4. PSNR (peak 1.0) of tiled vs untiled on the raw float outputs (not clipped, not quantised; ``null`` when
   bit-identical), max and mean abs difference, tile count and actual tile size, seconds.

Usage::

    python3 benchmarks/tiling_psnr.py [MODEL[=WEIGHTS] ...] [--crop 256] [--tile 128] [--overlaps 16 32 64]
                                      [--threads 2] [--out DIR]

Writes ``benchmarks/results/<machine slug, e.g. cpu-amd-epyc-2cpu>/tiling_psnr.json`` (updated after every model) and prints the Markdown
table that ``benchmarks/tiling_psnr.md`` quotes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from deploykit.runtime.torch_backend import TorchBackend  # noqa: E402
from deploykit.zoo.factory import build_model  # noqa: E402
from deploykit.exporting.forms import ImageOutput  # noqa: E402
from deploykit.imaging.images import read_image  # noqa: E402
from deploykit.zoo.degradation import extra_inputs  # noqa: E402
from deploykit.artifacts.manifest import tool_versions  # noqa: E402
from deploykit.imaging.tiling import plan_tiles, run_tiled  # noqa: E402

from deploykit.util.system import cpu_identity, cpu_model, cpu_slug  # noqa: E402  (the results/<slug> naming of deploykit bench)

PHOTO = Path("/work/shared/images/noisy_real.png")
VAPSR_X4 = Path("/work/shared/weights/VapSR_X4.pth")
DEFAULT_ROWS = ["vapsr=" + str(VAPSR_X4), "srresnet", "edsr", "udvd", "mirnetv2", "mirnet", "rcan", "mprnet"]
GLOBAL_OPS = {
    "mirnetv2": "context softmax over H*W (RCB), SKFF global pooling",
    "mirnet": "SKFF and DAU channel-attention global pooling",
    "mprnet": "CAB channel attention (global pooling), half/quadrant split of the whole image",
    "rcan": "RCAB channel attention (global pooling)",
    "vapsr": "none (convolutional; LayerNorm over channels is per pixel)",
    "srresnet": "none (convolutional)",
    "edsr": "none (convolutional)",
    "udvd": "none (convolutional; per-pixel dynamic kernels)",
}


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak * peak / mse)


def central_crop(image: np.ndarray, size: int) -> np.ndarray:
    _, _, h, w = image.shape
    size = min(size, h, w)
    y, x = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(image[:, :, y:y + size, x:x + size])


def measure(row: str, photo: np.ndarray, tile: int, overlaps: list[int]) -> dict:
    name, _, weights = row.partition("=")
    model, spec, _ = build_model(name, weights or None)
    runner = TorchBackend(ImageOutput(model, spec.image_output), [t.name for t in spec.inputs],
                          [spec.outputs[spec.image_output].name])

    def run(feed):
        return runner.run(feed)[spec.outputs[spec.image_output].name]

    feed = {spec.inputs[0].name: photo, **extra_inputs(spec, None, None)}
    start = time.perf_counter()
    whole = run_tiled(run, feed, spec)
    untiled_s = time.perf_counter() - start
    record = {
        "model": spec.name, "weights": "released (" + Path(weights).name + ")" if weights else "random-init (seed 0)",
        "global_ops": GLOBAL_OPS.get(spec.family, ""), "input": list(photo.shape[2:]), "tile": tile,
        "output": list(whole.shape[2:]), "untiled_seconds": round(untiled_s, 2),
        "output_range": [float(whole.min()), float(whole.max())], "overlaps": [],
    }
    for ov in overlaps:
        plan = plan_tiles(photo.shape[2], photo.shape[3], spec, tile, ov)
        start = time.perf_counter()
        tiled = run_tiled(run, feed, spec, tile=tile, overlap=ov)
        diff = np.abs(tiled - whole)
        record["overlaps"].append({
            "overlap": ov, "tiles": plan.count, "tile_size": list(plan.tile_shape),
            "actual_overlaps": sorted(set(plan.ys.overlaps() + plan.xs.overlaps())),
            "psnr_db": None if diff.max() == 0 else round(psnr(tiled, whole), 2),
            "max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
            "seconds": round(time.perf_counter() - start, 2),
        })
        print(f"  {spec.name} overlap {ov}: {record['overlaps'][-1]['psnr_db']} dB, max abs {diff.max():.2e}",
              flush=True)
    return record


def markdown(results: dict) -> str:
    overlaps = results["settings"]["overlaps"]
    head = ("| model | weights | global operators | input -> output | untiled output range | tile | "
            + " | ".join(f"PSNR ov {o}" for o in overlaps) + " | max abs ov " + str(overlaps[-1]) + " |")
    lines = [head, "|" + "---|" * (7 + len(overlaps))]
    for r in results["rows"]:
        cells = []
        for o in r["overlaps"]:
            cells.append("identical" if o["psnr_db"] is None else f"{o['psnr_db']:.1f} dB")
        size = "x".join(map(str, r["input"][::-1])) + " -> " + "x".join(map(str, r["output"][::-1]))
        tiles = f"{r.get('tile', results['settings']['tile'])} ({r['overlaps'][0]['tiles']} tiles)"
        lo, hi = r["output_range"]
        lines.append(f"| {r['model']} | {r['weights']} | {r['global_ops']} | {size} | {lo:.2f}..{hi:.2f} | {tiles} | "
                     + " | ".join(cells)
                     + f" | {r['overlaps'][-1]['max_abs']:.1e} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", default=DEFAULT_ROWS)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--overlaps", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--append", action="store_true",
                        help="add these rows to the existing JSON (replacing rows of the same model)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out_dir = args.out or ROOT / "benchmarks" / "results" / cpu_slug()
    out_dir.mkdir(parents=True, exist_ok=True)
    photo = central_crop(read_image(PHOTO).nchw(), args.crop)
    results = {
        "benchmark": "tiling_psnr",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "cpu_identity": cpu_identity(), "threads": args.threads, "cores_visible": os.cpu_count(),
                    "platform": platform.platform()},
        "tools": tool_versions(),
        "settings": {"photo": str(PHOTO), "crop": list(photo.shape[2:]), "tile": args.tile,
                     "overlaps": args.overlaps, "backend": "torch fp32 (PyTorch eager, CPU)",
                     "psnr": "peak 1.0 on raw float outputs, tiled vs untiled"},
        "rows": [],
    }
    path = out_dir / "tiling_psnr.json"
    if args.append and path.exists():
        previous = json.loads(path.read_text())
        results["rows"] = previous["rows"]
        results["settings"].update(crop="per row (rows[*].input)", tile="per row (rows[*].tile, default 128)",
                                   note="rows were measured in separate runs; each records its input size")
        results["runs"] = previous.get("runs", [previous["created"]]) + [results["created"]]
    for row in args.models:
        print(f"{row} ...", flush=True)
        record = measure(row, photo, args.tile, args.overlaps)
        results["rows"] = [r for r in results["rows"] if r["model"] != record["model"]] + [record]
        gc.collect()
        path.write_text(json.dumps(results, indent=1) + "\n")
    print(markdown(results))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
