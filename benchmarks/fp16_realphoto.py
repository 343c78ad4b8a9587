"""FP16 artifact on CPU, checked two ways on a real photo at 512x512 output.

Per model (default variant of each family, plus VapSR x4 with its released weights):

1. ``deploykit.exporting.pipeline.export(name, weights, fp16=True)`` into a temporary directory;
2. PyTorch FP32 reference (``build_model`` with the same seed/weights, so weights equal the exported ones),
   with forward hooks on every leaf module recording the largest |activation|;
3. ONNX Runtime CPU on the ``.fp32.onnx`` (sanity) and on the ``.fp16.onnx``;
4. ``Fp16RoundingEmulation`` (weights and every leaf-module output rounded to float16, float32 arithmetic).

For (3, fp16) and (4): PSNR vs PyTorch FP32 (peak 1), max abs, non-finite count, and for (4) the first leaf
module whose rounded output is non-finite. Input: /work/shared/images/noisy_real.png (400x496), reflect-padded
right/bottom to >= size and cropped to size x size; SR models get that image bicubic-downsampled (antialias) by
their scale, so every output is size x size. UDVD's kernel code (zeros = the PCA mean kernel) and noise map (0.0)
are constant maps. Unless weights are given the models are random-init (seed 0): a numerics check, not quality.

Usage::

    python3 benchmarks/fp16_realphoto.py [MODEL[=WEIGHTS] ...] [--size 512] [--out DIR] [--threads 2]

Writes ``benchmarks/results/<machine slug, e.g. cpu-amd-epyc-2cpu>/fp16_realphoto.json`` (or ``--out DIR/fp16_realphoto.json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploykit.util.system import cpu_identity, cpu_model, cpu_slug  # noqa: E402  (the results/<slug> naming of deploykit bench)

from deploykit.runtime.ort import OrtBackend
from deploykit.exporting.pipeline import export
from deploykit.zoo.factory import build_model
from deploykit.exporting.forms import ImageOutput
from deploykit.exporting.fp16 import Fp16RoundingEmulation
from deploykit.artifacts.manifest import tool_versions
from deploykit.verify.parity import compare
from deploykit.zoo.registry import get_spec

PHOTO = Path("/work/shared/images/noisy_real.png")
VAPSR_X4 = Path("/work/shared/weights/VapSR_X4.pth")
DEFAULT_ROWS = ["mirnetv2", "mirnet", "mprnet", "vapsr", f"vapsr={VAPSR_X4}", "edsr", "rcan", "srresnet", "udvd"]
FP16_MAX = 65504.0


def load_photo(size: int) -> tuple[np.ndarray, dict]:
    """The photo as 1x3xSxS float32 0..1: reflect-padded right/bottom to >= size, then the top-left SxS crop."""
    from PIL import Image

    rgb = np.asarray(Image.open(PHOTO).convert("RGB"), dtype=np.float32) / 255.0  # H, W, 3
    h, w = rgb.shape[:2]
    pad_h, pad_w = max(0, size - h), max(0, size - w)
    padded = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")[:size, :size]
    how = {"photo": str(PHOTO), "photo_hw": [h, w], "reflect_pad_bottom_right": [pad_h, pad_w],
           "crop": f"top-left {size}x{size}"}
    return np.ascontiguousarray(padded.transpose(2, 0, 1)[None]), how


def model_feed(spec, image: np.ndarray) -> dict[str, np.ndarray]:
    """Named inputs: the image (bicubic-downsampled by the SR scale) plus constant UDVD maps / MIRNet-v2 6-ch."""
    x = torch.from_numpy(image)
    if spec.scale > 1:
        lr = image.shape[-1] // spec.scale
        x = F.interpolate(x, size=(lr, lr), mode="bicubic", align_corners=False, antialias=True)
    if spec.in_channels == 2 * x.shape[1]:  # MIRNet-v2 defocus: [L, R] = [image, image]
        x = torch.cat([x, x], 1)
    n, _, h, w = x.shape
    feed = {spec.inputs[0].name: x.numpy().astype(np.float32)}
    for t in spec.inputs[1:]:  # UDVD: kernel code zeros (mean kernel), noise level 0.0
        feed[t.name] = np.zeros((n, t.channels, h, w), np.float32)
    return feed


def leaf_modules(module: torch.nn.Module):
    return [(name, m) for name, m in module.named_modules() if not list(m.children())]


def run_torch_fp32(module, args) -> tuple[np.ndarray, dict, float]:
    """FP32 output and the largest |leaf-module output| (with the module that produced it)."""
    peak = {"max_abs": 0.0, "module": None}

    def hook(name):
        def _track(_m, _i, out):
            if isinstance(out, torch.Tensor) and out.is_floating_point():
                value = float(out.abs().max())
                if value > peak["max_abs"]:
                    peak.update(max_abs=value, module=f"{name} ({type(_m).__name__})")
        return _track

    handles = [m.register_forward_hook(hook(name)) for name, m in leaf_modules(module)]
    try:
        start = time.perf_counter()
        out = module(*args)
        seconds = time.perf_counter() - start
    finally:
        for h in handles:
            h.remove()
    return out.numpy(), peak, seconds


def run_emulation(module, args) -> tuple[np.ndarray, str | None, float]:
    """Fp16RoundingEmulation output and the first leaf module whose (rounded) output is non-finite."""
    first = []
    with Fp16RoundingEmulation(module) as emu:
        def hook(name):
            def _check(_m, _i, out):  # registered after the rounding hook, so it sees the rounded output
                if not first and isinstance(out, torch.Tensor) and not bool(torch.isfinite(out).all()):
                    first.append(f"{name} ({type(_m).__name__})")
            return _check

        for name, m in leaf_modules(emu.module):
            m.register_forward_hook(hook(name))
        start = time.perf_counter()
        out = emu(*args)
        seconds = time.perf_counter() - start
    return out.numpy(), (first[0] if first else None), seconds


def run_ort(path: Path, feed: dict, precision: str, threads: int) -> tuple[np.ndarray, float]:
    with OrtBackend(path, precision=precision, threads=threads) as backend:
        start = time.perf_counter()
        out = backend.run(feed)
        seconds = time.perf_counter() - start
    return next(iter(out.values())), seconds


def figures(record, seconds: float) -> dict:
    return {"psnr_db": round(record.psnr_db, 2), "max_abs": record.max_abs, "mean_abs": record.mean_abs,
            "nonfinite": record.nonfinite, "passed": record.passed, "tolerance": record.tolerance,
            "seconds": round(seconds, 2)}


def check_row(item: str, row: dict, image: np.ndarray, workdir: Path, threads: int) -> dict:
    name, _, weights = item.partition("=")
    weights = weights or None
    spec = get_spec(name)
    feed = model_feed(spec, image)
    args = [torch.from_numpy(feed[t.name]) for t in spec.inputs]
    row.update(input={k: list(v.shape) for k, v in feed.items()})
    print(f"== {spec.name} ({row['weights']}) input {row['input']}", flush=True)

    start = time.perf_counter()
    result = export(name, weights=weights, out=workdir / str(len(list(workdir.iterdir()))), fp16=True)
    row["export_s"] = round(time.perf_counter() - start, 1)
    files = {a["precision"]: result.out_dir / a["file"] for a in result.manifest["artifacts"]}
    fp16_art = next(a for a in result.manifest["artifacts"] if a["precision"] == "fp16")
    row["fp32_kept_nodes"] = fp16_art["fp32_node_count"]
    row["fp32_kept_op_types"] = fp16_art["fp32_op_types"]
    print(f"   exported in {row['export_s']} s; {row['fp32_kept_nodes']} nodes kept FP32", flush=True)

    model, _, _ = build_model(spec, weights, seed=0)
    module = ImageOutput(model, spec.image_output).eval()
    with torch.inference_mode():
        ref, peak, t32 = run_torch_fp32(module, args)
        row["output_shape"] = list(ref.shape)
        row["torch_fp32"] = {"seconds": round(t32, 2), "max_abs_activation": peak["max_abs"],
                             "max_activation_module": peak["module"],
                             "max_activation_fraction_of_fp16_max": peak["max_abs"] / FP16_MAX,
                             "output_min": float(ref.min()), "output_max": float(ref.max()),
                             "output_std": float(ref.std())}
        print(f"   torch fp32 {t32:.1f} s, max |act| {peak['max_abs']:.4g} at {peak['module']}", flush=True)

        out, seconds = run_ort(files["fp32"], feed, "fp32", threads)
        row["ort_fp32"] = figures(compare(ref, out, backend="ort-cpu", precision="fp32", output="output"), seconds)
        out, seconds = run_ort(files["fp16"], feed, "fp16", threads)
        rec = compare(ref, out, backend="ort-cpu", precision="fp16", output="output",
                      min_psnr_db=spec.fp16.min_psnr_db)
        row["ort_fp16"] = figures(rec, seconds)
        out, first_bad, seconds = run_emulation(module, args)
        rec = compare(ref, out, backend="torch-fp16-emulation", precision="fp16", output="output",
                      min_psnr_db=spec.fp16.min_psnr_db)
        row["emulation"] = {**figures(rec, seconds), "first_nonfinite_module": first_bad}
    for key in ("ort_fp32", "ort_fp16", "emulation"):
        f = row[key]
        print(f"   {key:9s} {f['seconds']:6.1f} s  PSNR {f['psnr_db']:6.2f} dB  max abs {f['max_abs']:.2e}  "
              f"non-finite {f['nonfinite']}", flush=True)
    return row


def merge(old: dict, new: dict) -> dict:
    """Old result with this run's rows replacing those of the same model + weights (and this run recorded)."""
    key = lambda row: (row["model"], row.get("weights"))
    fresh = {key(r): r for r in new["rows"]}
    rows = [fresh.pop(key(r), r) for r in old["rows"]] + list(fresh.values())
    runs = old.get("runs", [{k: old[k] for k in ("date", "command", "total_s") if k in old}])
    return {**new, "rows": rows, "total_s": round(sum(r.get("row_s", 0) for r in rows), 1),
            "runs": runs + [{k: new[k] for k in ("date", "command", "total_s")}]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=DEFAULT_ROWS, help="zoo names, optionally NAME=WEIGHTS")
    parser.add_argument("--size", type=int, default=512, help="output side (and restoration input side)")
    parser.add_argument("--threads", type=int, default=2, help="torch and ORT intra-op threads")
    parser.add_argument("--out", type=Path, default=None, help="result folder (default results/<machine slug>)")
    parser.add_argument("--update", action="store_true",
                        help="keep the other rows of an existing result file; replace rows of the same model+weights")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    cpu = cpu_model()
    out_dir = args.out or ROOT / "benchmarks" / "results" / cpu_slug()
    image, photo = load_photo(args.size)
    result = {
        "benchmark": "fp16_realphoto", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpu_model": cpu, "cpu_identity": cpu_identity(), "logical_cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "versions": tool_versions(), "threads": args.threads, "size": args.size, "input": photo,
        "notes": ["random-init models (seed 0) unless weights are named: a numerics check, not a quality claim",
                  "UDVD kernel code = zeros (PCA mean kernel) and noise = 0.0, constant maps",
                  "seconds: one run each, batch 1, after session creation; torch FP32 includes the max-|act| hooks"],
        "rows": [],
    }
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fp16_realphoto_") as tmp:
        for item in args.models:
            row_start = time.perf_counter()
            name, _, weights = item.partition("=")
            row = {"model": get_spec(name).name, "weights": Path(weights).name if weights else "random-init (seed 0)"}
            try:
                check_row(item, row, image, Path(tmp), args.threads)
            except Exception as exc:  # noqa: BLE001  one failing model must not lose the others' figures
                row["error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
                print(f"   ERROR {row['error']}", flush=True)
            row["row_s"] = round(time.perf_counter() - row_start, 1)
            row["loadavg_1min_after"] = os.getloadavg()[0]
            result["rows"].append(row)
    result["total_s"] = round(time.perf_counter() - start, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "fp16_realphoto.json"
    if args.update and path.exists():
        result = merge(json.loads(path.read_text()), result)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"total {result['total_s']} s; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
