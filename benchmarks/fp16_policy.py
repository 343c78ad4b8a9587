"""FP32 islands of the FP16 ONNX, three ways, on crops of the real photo: the zoo's hand policy (``spec``),
``--fp16-policy auto`` (deploykit.exporting.fp16_policy) and NVIDIA ModelOpt AutoCast (its own venv, a subprocess).

Per model (the default variant of each family; all random-init (seed 0) except ``vapsr:x4`` with VapSR_X4.pth):

1. ``deploykit.export(name, fp16=False)`` -> the FP32 ONNX (simplified, parity-proven);
2. calibration: two crops (96², 64² for the heavy models) from the top half of ../shared/images/noisy_real.png and
   nested 1/2, 3/4, 1x crops for the growth fit (``fp16_calib.calibration_set``); held out: three crops (128², 96²
   heavy) from the bottom half (``held_out_boxes``) -- the only real photo here, so held-out = other regions;
3. per policy: FP32 compute-node count; PSNR vs the FP32 graph (peak = value range) on calibration and held-out
   crops two ways: the FP16 file in ONNX Runtime CPU (which runs FP16-less ops in FP32 and folds the casts
   between them) and deploykit's FP16-storage emulation (every FP16 tensor rounded; ``fp16_policy.emulate``);
   NaN/Inf at 2048²: *predicted* from the growth fit over the nested crops (``predicted_overflow``: nodes whose
   stored value or running sum passes 65504), and *run* at 256² (ORT file and emulation; 2048² itself is out
   of reach on this CPU for most models; PANet and PA-EDSR at their 112² tile limit: their (H·W)² attention
   asks ONNX Runtime for a 56 GB buffer at 256²).

ModelOpt: ``python -m modelopt.onnx.autocast --low_precision_type fp16 --keep_io_types --calibration_data``
(the first calibration crop), run by --modelopt-python (default /tmp/venv-modelopt/bin/python; install with
``python3 -m venv /tmp/venv-modelopt && /tmp/venv-modelopt/bin/pip install 'nvidia-modelopt[onnx]'``).

Usage::

    python3 benchmarks/fp16_policy.py [MODEL ...] [--out DIR] [--table] [--run-side N]
    python3 benchmarks/fp16_policy.py --update benchmarks/fp16_policy.md   # its tables, from the committed JSON

Each model's row is merged into ``benchmarks/results/<cpu slug>/fp16_policy.json`` as soon as it is done;
``--table`` prints the markdown table of that JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploykit.artifacts.manifest import tool_versions  # noqa: E402
from deploykit.exporting import fp16_policy as fp  # noqa: E402
from deploykit.exporting.fp16 import convert_to_fp16  # noqa: E402
from deploykit.exporting.fp16_calib import calibration_set, crop, feed_for, held_out_boxes, photo  # noqa: E402
from deploykit.exporting.pipeline import export  # noqa: E402
from deploykit.util.system import cpu_count, cpu_identity, cpu_slug  # noqa: E402
from deploykit.verify.parity import psnr  # noqa: E402
from deploykit.zoo.registry import families, get_spec  # noqa: E402

SHARED = ROOT.parent / "shared"
PHOTO = SHARED / "images" / "noisy_real.png"
VAPSR_X4 = SHARED / "weights" / "VapSR_X4.pth"
HEAVY = {"mirnetv2", "mirnet", "mprnet", "rcan", "panet", "paedsr"}
ORDER = ["vapsr", "srresnet", "edsr", "udvd", "rcan", "mprnet", "mirnet", "mirnetv2", "panet", "paedsr"]
RUN_SIDE = 256


def default_models() -> list[str]:
    fams = families()
    return [f"{f}:{fams[f].default}" for f in ORDER if f in fams]


def modelopt_autocast(python: str, src: Path, feed, out: Path) -> dict:
    calib = out.with_suffix(".calib.npz")
    np.savez(calib, **feed.inputs)
    cmd = [python, "-m", "modelopt.onnx.autocast", "--onnx_path", str(src), "--output_path", str(out),
           "--low_precision_type", "fp16", "--keep_io_types", "--calibration_data", str(calib), "--providers", "cpu"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    ver = subprocess.run([python, "-c", "import modelopt, onnx, onnxruntime; print(modelopt.__version__, "
                          "onnx.__version__, onnxruntime.__version__)"], capture_output=True, text=True)
    return {"ok": proc.returncode == 0 and out.exists(), "seconds": round(time.perf_counter() - start, 1),
            "versions": ver.stdout.strip(), "error": None if proc.returncode == 0 else proc.stderr[-600:]}


def fp32_compute_nodes(model: onnx.ModelProto) -> list[str]:
    """Compute nodes of a mixed-precision file whose first output is float32."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(inferred.graph.value_info)
             + list(inferred.graph.output)}
    return [n.name for n in fp.compute_nodes(model) if n.output and types.get(n.output[0]) == onnx.TensorProto.FLOAT]


def score(model16, fp32: onnx.ModelProto, kept: list[str], feeds, refs, peak) -> dict:
    """PSNR per feed: the FP16 file in ORT CPU, and the FP16-storage emulation of the same FP32 set."""
    out = {}
    try:
        session = fp._session(model16)
        out["ort"] = [round(psnr(r, fp._run_all(session, f)["output"].astype(np.float32), peak), 2)
                      for f, r in zip(feeds, refs)]
    except Exception as exc:  # AutoCast's MIRNet-v2 file does not load in ORT
        out["ort"], out["ort_error"] = None, f"{type(exc).__name__}: {str(exc)[:300]}"
    emu = fp._session(fp.emulate(fp32, kept), emulated=True)
    out["emulated"] = [round(psnr(r, fp._run_all(emu, f)["output"], peak), 2) for f, r in zip(feeds, refs)]
    return out


def finite_at(model16, fp32, kept, feed, watch) -> dict:
    res = {}
    try:
        vals = fp._run_all(fp._session(model16), feed)
        res["ort_nonfinite"] = int(sum((~np.isfinite(v.astype(np.float32))).sum() for v in vals.values()))
    except Exception as exc:
        res["ort_nonfinite"], res["ort_error"] = None, f"{type(exc).__name__}: {str(exc)[:200]}"
    res["emulated_nonfinite"] = fp.check_finite(fp32, kept, feed, watch)["emulated_nonfinite"]
    return res


def run_model(name: str, tmp: Path, modelopt_python: str, run_side: int = RUN_SIDE) -> dict:
    spec = get_spec(name)
    weights = VAPSR_X4 if name == "vapsr:x4" and VAPSR_X4.exists() else None
    heavy = spec.family in HEAVY
    side, held_side = (64, 96) if heavy else (96, 128)
    t0 = time.perf_counter()
    result = export(name, weights=weights, out=tmp, fp16=False)
    src = result.out_dir / next(a["file"] for a in result.manifest["artifacts"] if a["precision"] == "fp32")
    fp32 = fp.name_nodes(onnx.load(str(src)))
    feeds, growth, what = calibration_set(spec, [PHOTO], side)
    image = photo(PHOTO, spec)
    held = [feed_for(spec, crop(image, b), f"held{b}") for b in held_out_boxes(*image.shape[2:], held_side)]
    ref = fp._session(fp32)
    refs_c = [fp._run_all(ref, f)["output"] for f in feeds]
    refs_h = [fp._run_all(ref, f)["output"] for f in held]
    peak = spec.value_range[1] - spec.value_range[0]
    stats = fp.measure(fp32, growth, 2048)
    big = fp.pad_feed(spec, feeds[0], spec.valid_size(min(run_side, spec.tile or run_side)))  # PANet: 112
    row = {"model": name, "weights": weights.name if weights else "random-init (seed 0)", "calibration": what,
           "held_out": f"{len(held)} crops of {held_side}x{held_side}, bottom half of {PHOTO.name}",
           "compute_nodes": len(fp.compute_nodes(fp32)), "export_seconds": round(time.perf_counter() - t0, 1),
           "policies": {}}
    spec16, record = convert_to_fp16(fp32, spec.fp16)
    t = time.perf_counter()
    auto = fp.search_policy(fp32, feeds, growth, "output", min_psnr_db=50.0, max_res=2048, peak=peak,
                            calibration=what)
    auto_s = time.perf_counter() - t
    candidates = {"spec": (spec16, list(record.fp32_nodes), {"keep_fp32_ops": list(spec.fp16.keep_fp32_ops)}),
                  "auto": (fp.to_fp16(fp32, auto.fp32_nodes), list(auto.fp32_nodes),
                           {"seconds": round(auto_s, 1), "evaluations": auto.evaluations,
                            "reasons": {r: sum(1 for v in auto.reasons.values() if v["reason"] == r)
                                        for r in ("range", "accumulation", "accuracy", "converter")},
                            "predicted_safe_side": auto.predicted_safe_side})}
    # auto held to the hand policy's own calibration PSNR (emulated): fewer FP32 nodes at the same accuracy?
    floor = min(score(spec16, fp32, list(record.fp32_nodes), feeds, refs_c, peak)["emulated"]) - 0.005  # rounded
    t = time.perf_counter()
    match = fp.search_policy(fp32, feeds, growth, "output", min_psnr_db=floor, margin_db=0.0, max_res=2048,
                             peak=peak, calibration=what)
    candidates["auto_match"] = (fp.to_fp16(fp32, match.fp32_nodes), list(match.fp32_nodes),
                                {"seconds": round(time.perf_counter() - t, 1), "evaluations": match.evaluations,
                                 "min_psnr_db": floor})
    ac_path = tmp / f"{spec.family}_autocast.onnx"
    ac = modelopt_autocast(modelopt_python, src, feeds[0], ac_path)
    if ac["ok"]:
        ac_model = onnx.load(str(ac_path))
        names = {n.name for n in fp.compute_nodes(fp32)}
        kept = [n for n in fp32_compute_nodes(ac_model) if n in names]
        candidates["autocast"] = (ac_model, kept, {**ac, "fp32_nodes_in_file": len(fp32_compute_nodes(ac_model))})
    else:
        row["policies"]["autocast"] = {"failed": ac}
    for key, (model16, kept, extra) in candidates.items():
        over = fp.predicted_overflow(fp32, stats, kept)
        row["policies"][key] = {
            "fp32_nodes": extra.get("fp32_nodes_in_file", len(kept)), "calib_psnr": score(model16, fp32, kept, feeds,
                                                                                          refs_c, peak),
            "held_psnr": score(model16, fp32, kept, held, refs_h, peak),
            "predicted_overflow_2048": {"count": len(over), "nodes": over[:5]},
            f"run_{big.hw[0]}": finite_at(model16, fp32, kept, big, auto.watch),
            **{k: v for k, v in extra.items() if k != "fp32_nodes_in_file"}}
        print(f"  {name} {key}: {row['policies'][key]['fp32_nodes']} FP32, held {row['policies'][key]['held_psnr']}, "
              f"overflow@2048 {len(over)}", flush=True)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / cpu_slug())
    ap.add_argument("--modelopt-python", default="/tmp/venv-modelopt/bin/python")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--update", type=Path, metavar="FILE.md",
                    help="regenerate FILE.md's fp16-policy-table blocks from the JSON they name")
    ap.add_argument("--run-side", type=int, default=RUN_SIDE,
                    help="side of the NaN/Inf run, capped at the model's tile limit (PA-EDSR at 112 took over 21 GB)")
    args = ap.parse_args()
    path = args.out / "fp16_policy.json"
    data = json.loads(path.read_text()) if path.exists() else {"rows": {}}
    if args.table:
        print(table(data))
        return
    if args.update:
        args.update.write_text(render_blocks(args.update.read_text()))
        print(f"updated {args.update}")
        return
    data.update({"command": "python3 benchmarks/fp16_policy.py " + " ".join(args.models)
                 + (f" --run-side {args.run_side}" if args.run_side != RUN_SIDE else ""),
                 "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 "cpu": cpu_identity(), "threads": cpu_count(), "versions": tool_versions(),
                 "note": "accuracy figures only (no timings); PSNR vs the FP32 ONNX graph on the same input"})
    for name in args.models or default_models():
        with tempfile.TemporaryDirectory() as tmp:
            print(f"{name} ...", flush=True)
            try:
                data["rows"][name] = run_model(name, Path(tmp), args.modelopt_python, args.run_side)
            except Exception as exc:  # record and go on: one model's failure must not lose the others
                data["rows"][name] = {"model": name, "error": f"{type(exc).__name__}: {str(exc)[:500]}"}
            data["rows"][name]["run"] = {"command": data["command"], "date": data["date"]}  # rows merge over runs
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n")
    print(table(data))


TABLE_BLOCK = re.compile(r"<!-- fp16-policy-table: (?P<json>\S+) -->\n(?P<body>.*?)<!-- /fp16-policy-table -->", re.S)


def render_blocks(text: str) -> str:
    """``text`` with each ``<!-- fp16-policy-table: FILE.json -->`` block regenerated (paths from the repo root)."""
    return TABLE_BLOCK.sub(lambda m: f"<!-- fp16-policy-table: {m['json']} -->\n"
                                     f"{table(json.loads((ROOT / m['json']).read_text()))}\n"
                                     "<!-- /fp16-policy-table -->", text)


def _fmt(p: dict | None, key: str) -> str:
    if not p or "failed" in p:
        return "failed"
    s = p[key]
    ort = "n/a (does not run)" if s["ort"] is None else f"{min(s['ort']):.1f}"
    return f"{ort} / {min(s['emulated']):.1f}"


def table(data: dict) -> str:
    lines = ["| model | weights | policy | FP32 nodes | calib PSNR ORT / emul. | held-out PSNR ORT / emul. | "
             "overflow @2048² (predicted) | NaN/Inf run ORT / emul. (side: 256², PANet/PA-EDSR smaller) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in data["rows"].items():
        if "error" in row:
            lines.append(f"| {name} | | error: {row['error'][:120]} | | | | | |")
            continue
        for key in ("spec", "auto", "auto_match", "autocast"):
            p = row["policies"].get(key)
            if p is None or "failed" in p:
                lines.append(f"| {name} | {row['weights']} | {key} | failed | | | | |")
                continue
            side, run = next((k[4:], v) for k, v in p.items() if k.startswith("run_"))
            lines.append(f"| {name} | {row['weights']} | {key} | {p['fp32_nodes']} / {row['compute_nodes']} | "
                         f"{_fmt(p, 'calib_psnr')} | {_fmt(p, 'held_psnr')} | "
                         f"{p['predicted_overflow_2048']['count']} | {run.get('ort_nonfinite')} / "
                         f"{run['emulated_nonfinite']} ({side}²) |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
