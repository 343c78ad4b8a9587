"""Writers for benchmark results: rich table, JSON (schema ``deploykit.bench`` v1), CSV, PNG plot, Markdown.

Every writer takes the JSON-shaped dict (``BenchResult.to_dict()`` or a loaded file), so tables and plots can be
regenerated from committed JSON without re-running anything::

    python3 -m deploykit.bench.report benchmarks/results/<device>/<name>.json   # prints the Markdown tables
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from deploykit.util.files import (
    ensure_writable_dir,
    write_bytes_atomic,
    write_json_atomic,
)
from deploykit.util.locks import folder_lock
from deploykit.util.sizes import fmt_wxh

CSV_COLUMNS = (
    "model", "backend", "runtime", "precision", "device", "batch", "input_wxh", "output_wxh", "status", "reason",
    "warmup", "iterations", "first_run_ms", "lat_min_ms", "lat_median_ms", "lat_mean_ms", "lat_p90_ms",
    "lat_p95_ms", "lat_p99_ms", "lat_max_ms", "lat_stdev_ms", "megapixels_per_s", "output_megapixels_per_s",
    "flops_per_image", "tflops", "mem_estimate_bytes", "mem_available_bytes", "rss_peak_delta_bytes",
    "graph_floor_bytes",
    "gpu_peak_allocated_bytes", "engine_device_memory_bytes", "parity_reference", "parity_max_abs",
    "parity_mean_abs", "parity_psnr_db", "parity_nonfinite", "parity_passed", "tile", "overlap", "tiles",
    "tiles_timed", "loadavg_1m_start", "loadavg_1m_end", "latency_includes", "artifact", "auto_tile",
    "tile_check_psnr_db",
    "mem_estimate_method", "threads_torch", "threads_ort_intra", "threads_ort_inter", "cpu_per_wall",
    "peak_gflops", "peak_fraction", "cpu_peak_fraction", "suspect", "suspect_reasons",
    "traffic_bytes_per_image", "arithmetic_intensity", "bound", "roof_gflops", "roofline_fraction",
)


def _gib(n) -> str:
    return "" if n is None else f"{n / 2**30:.2f} GiB"


def _mib(n) -> str:
    if n is None:
        return ""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _ms(v) -> str:
    if v is None:
        return ""
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _num(v, digits: int = 3) -> str:
    return "" if v is None else f"{v:.{digits}g}"


def _flops(v) -> str:
    if v is None:
        return ""
    return f"{v / 1e12:.3g} T" if v >= 1e12 else f"{v / 1e9:.3g} G"


def _gflop(flops: float) -> str:
    g = flops / 1e9
    return f"{g:,.0f}" if g >= 100 else f"{g:.3g}"


def parity_text(parity: dict | None) -> str:
    if not parity:
        return ""
    if parity.get("reference"):
        return "reference"
    if not parity.get("checked", True):
        return "not checked"
    status = "pass" if parity.get("passed") else "FAIL"
    max_abs = parity.get("max_abs")
    psnr = parity.get("psnr_db")
    return (f"{status} {'' if psnr is None else f'{psnr:.1f} dB'} / "
            f"{'inf' if max_abs is None else f'{max_abs:.1e}'}" + (f" / NaN {parity['nonfinite']}"
                                                                    if parity.get("nonfinite") else ""))


def tile_label(record: dict) -> str:
    """'' for a whole frame, else ' [auto-tiled: 9 x 1024x1024, overlap 64]' (or 'tiled' for --tile)."""
    tile = record.get("tile") or {}
    if not tile.get("tile"):
        return ""
    hw = tile.get("tile_hw") or [tile["tile"], tile["tile"]]
    sampled = tile.get("sampled")
    return (f" [{'auto-tiled' if tile.get('auto') else 'tiled'}: {tile.get('tiles')} x {hw[1]}x{hw[0]}, "
            f"overlap {tile.get('overlap')}"
            + (f"; {sampled['tiles_timed']} tiles timed, latency x {sampled['scale']:.2f}" if sampled else "") + "]")


def peak_text(record: dict) -> str:
    """'0.62' of the same-run GEMM rate, or '⚠ 1.9 SUSPECT' when the record cannot be true."""
    frac = record.get("peak_fraction")
    if frac is None:
        return ""
    cpu = record.get("cpu_peak_fraction")
    text = f"{frac:.2f}" + (f" / {cpu:.2f}" if cpu is not None else "")
    return f"⚠ {text} SUSPECT" if record.get("suspect") else text


def flat_row(record: dict) -> dict:
    """One CSV row (flat columns) for a record dict."""
    lat = record.get("latency_ms") or {}
    mem = record.get("memory") or {}
    par = record.get("parity") or {}
    tile = record.get("tile") or {}
    art = record.get("artifact") or {}
    threads = record.get("threads") or {}
    row = {
        "model": record["model"], "backend": record["backend"], "runtime": record.get("runtime"),
        "precision": record["precision"], "device": record.get("device"), "batch": record["batch"],
        "input_wxh": record["input_wxh"], "output_wxh": record["output_wxh"], "status": record["status"],
        "reason": record.get("reason"), "warmup": record.get("warmup"), "iterations": record.get("iterations"),
        "first_run_ms": record.get("first_run_ms"),
        **{f"lat_{k}_ms": lat.get(k) for k in ("min", "median", "mean", "p90", "p95", "p99", "max", "stdev")},
        "megapixels_per_s": record.get("megapixels_per_s"),
        "output_megapixels_per_s": record.get("output_megapixels_per_s"),
        "flops_per_image": record.get("flops_per_image"), "tflops": record.get("tflops"),
        "mem_estimate_bytes": mem.get("estimate_bytes"), "mem_available_bytes": mem.get("available_bytes"),
        "rss_peak_delta_bytes": mem.get("rss_peak_delta_bytes"), "graph_floor_bytes": mem.get("graph_floor_bytes"),
        "gpu_peak_allocated_bytes": mem.get("gpu_peak_allocated_bytes"),
        "engine_device_memory_bytes": mem.get("engine_device_memory_bytes"),
        "parity_reference": bool(par.get("reference")) if par else None,
        "parity_max_abs": par.get("max_abs"), "parity_mean_abs": par.get("mean_abs"),
        "parity_psnr_db": par.get("psnr_db"), "parity_nonfinite": par.get("nonfinite"),
        "parity_passed": par.get("passed"), "tile": tile.get("tile"), "overlap": tile.get("overlap"),
        "tiles": tile.get("tiles"), "tiles_timed": (tile.get("sampled") or {}).get("tiles_timed"),
        "loadavg_1m_start": ((record.get("loadavg") or {}).get("start") or [None])[0],
        "loadavg_1m_end": ((record.get("loadavg") or {}).get("end") or [None])[0],
        "latency_includes": record.get("latency_includes"),
        "artifact": art.get("file"), "auto_tile": tile.get("auto"),
        "tile_check_psnr_db": (tile.get("psnr_check") or {}).get("psnr_db"),
        "mem_estimate_method": mem.get("estimate_method"),
        "threads_torch": threads.get("torch_intra_op"), "threads_ort_intra": threads.get("ort_intra_op"),
        "threads_ort_inter": threads.get("ort_inter_op"), "cpu_per_wall": record.get("cpu_per_wall"),
        "peak_gflops": record.get("peak_gflops"), "peak_fraction": record.get("peak_fraction"),
        "cpu_peak_fraction": record.get("cpu_peak_fraction"),
        "suspect": record.get("suspect"), "suspect_reasons": "; ".join(record.get("suspect_reasons") or []),
        "traffic_bytes_per_image": record.get("traffic_bytes_per_image"),
        **{k: (record.get("roofline") or {}).get(k)
           for k in ("arithmetic_intensity", "bound", "roof_gflops", "roofline_fraction")},
    }
    return row


def csv_text(data: dict) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in data["records"]:
        writer.writerow({k: ("" if v is None else v) for k, v in flat_row(record).items()})
    return buf.getvalue()


# --- rich table ---------------------------------------------------------------------------------------------------

def rich_table(data: dict, title: str | None = None):
    """A rich Table of every record (skips and errors show their reason)."""
    device = data.get("device", {})
    table = Table(title=title or f"deploykit bench on {device.get('name', '?')}", show_lines=False)
    columns = ("model", "backend", "prec", "input → output", "first ms", "median ms", "p90 ms", "p99 ms", "runs",
               "MPix/s", "FLOP/img", "TFLOP/s", "of GEMM", "CPU/wall", "RSS Δ / est.", "parity vs torch fp32")
    wrap = ("parity vs torch fp32", "model")
    for col in columns:
        table.add_column(col, no_wrap=col not in wrap, overflow="fold",
                         justify="right" if col.endswith(("ms", "runs", "MPix/s", "TFLOP/s", "FLOP/img")) else "left")
    for r in data["records"]:
        lat = r.get("latency_ms") or {}
        mem = r.get("memory") or {}
        base = [r["model"], r.get("runtime") or r["backend"], r["precision"],
                f"{r['input_wxh']} → {r['output_wxh']}{tile_label(r)}"]
        if r["status"] != "ok":
            style = "yellow" if r["status"] == "skipped" else "red"
            table.add_row(*base, f"[{style}]{r['status']}[/]", "", "", "", "", "", _flops(r.get("flops_per_image")),
                          "", "", "", f"– / {_mib(mem.get('estimate_bytes'))}",
                          f"[{style}]{escape(r.get('reason') or '')}[/]")
            continue
        par = parity_text(r.get("parity"))
        par_style = "red" if par.startswith("FAIL") else "green" if par.startswith("pass") else "dim"
        table.add_row(*base, _ms(r.get("first_run_ms")), _ms(lat.get("median")), _ms(lat.get("p90")),
                      _ms(lat.get("p99")), str(lat.get("count", "")), _num(r.get("megapixels_per_s")),
                      _flops(r.get("flops_per_image")), _num(r.get("tflops")),
                      f"[red]{peak_text(r)}[/]" if r.get("suspect") else peak_text(r), _num(r.get("cpu_per_wall"), 2),
                      f"{_mib(mem.get('rss_peak_delta_bytes'))} / {_mib(mem.get('estimate_bytes'))}",
                      f"[{par_style}]{par}[/]")
    return table


# --- Markdown (benchmarks/README.md) --------------------------------------------------------------------------------

def markdown_table(data: dict, *, reasons: bool = True) -> str:
    """The records as a GitHub Markdown table (latency in ms; skipped rows with their reason)."""
    head = ("| model | backend | prec | input → output | first run ms | median ms | p90 ms | p99 ms | runs | MPix/s "
            "| GFLOP/img | TFLOP/s | of GEMM peak (wall / CPU-s) | CPU/wall | peak RSS Δ | mem. estimate | load 1m "
            "| parity vs PyTorch FP32 (PSNR / max abs) |")
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    for r in data["records"]:
        lat = r.get("latency_ms") or {}
        mem = r.get("memory") or {}
        gflop = "" if r.get("flops_per_image") is None else _gflop(r["flops_per_image"])
        io_ = f"{r['input_wxh']} → {r['output_wxh']}{tile_label(r)}"
        backend = r.get("runtime") or r["backend"]
        if r["status"] != "ok":
            why = (r.get("reason") or "").replace("|", "\\|") if reasons else ""
            lines.append(f"| {r['model']} | {backend} | {r['precision']} | {io_} | **{r['status']}** | | | | | | {gflop} "
                         f"| | | | | {_mib(mem.get('estimate_bytes'))} | | {why} |")
            continue
        lines.append(
            f"| {r['model']} | {backend} | {r['precision']} | {io_} | {_ms(r.get('first_run_ms'))} | "
            f"{_ms(lat.get('median'))} | {_ms(lat.get('p90'))} | {_ms(lat.get('p99'))} | {lat.get('count', '')} | "
            f"{_num(r.get('megapixels_per_s'))} | {gflop} | {_num(r.get('tflops'))} | {peak_text(r)} | "
            f"{_num(r.get('cpu_per_wall'), 2)} | {_mib(mem.get('rss_peak_delta_bytes'))} | {_mib(mem.get('estimate_bytes'))} | {_load(r)} | "
            f"{parity_text(r.get('parity'))} |")
    return "\n".join(lines)


def _load(record: dict) -> str:
    load = record.get("loadavg") or {}
    start, end = (load.get("start") or [None])[0], (load.get("end") or [None])[0]
    return "" if start is None else f"{start:.1f}→{end:.1f}" if end is not None else f"{start:.1f}"


def markdown_header(data: dict) -> str:
    d, s, v, load = data["device"], data["settings"], data["versions"], data.get("load", {})
    timed = f"{s['iters']} timed runs" if s.get("iters") else f"timed runs for {s.get('seconds')} s"
    threads = d.get("threads", {})
    return (f"Device: **{d.get('name')}**; threads: torch {threads.get('torch_intra_op')}, ORT "
            f"{threads.get('ort_intra_op')}. torch {v.get('torch')}, onnxruntime {v.get('onnxruntime')}, onnx "
            f"{v.get('onnx')}, Python {v.get('python')}. Warm-up {s['warmup']}, {timed}, batch {s['batch']}"
            + (f", tile {s['tile']} overlap {s['overlap']}" if s.get("tile") else "")
            + f". Load average before {load.get('loadavg_before')}, after {load.get('loadavg_after')}. "
            + probe_sentence(data) + f"Command: `{data.get('command')}`")


def probe_sentence(data: dict) -> str:
    """'Same-run GEMM probe (FP32, 1 thread): 15 GFLOP/s before, 17 after. ' ('' for files without a probe); a
    file measured over several runs (--resume) names each run's probe, which its records are judged against."""
    segments = [seg for seg in data.get("segments") or [] if seg.get("probe")]
    if len(segments) > 1:
        return (f"Measured in {len(segments)} runs (`--resume`), each record against its own run's probe: "
                + " ".join(f"run {i + 1} (started {seg.get('started')}): {_probe_rates(seg['probe'])}"
                           for i, seg in enumerate(segments)) + " ")
    return _probe_rates(data.get("probe") or {})


def _probe_rates(probe: dict) -> str:
    if not probe:
        return ""
    parts = []
    for dtype in ("fp32", "fp16"):
        rates = [f"{probe[k][dtype]['gflops_best']:.0f} GFLOP/s {k}" for k in ("before", "after")
                 if dtype in (probe.get(k) or {})]
        if rates:
            parts.append(f"{dtype.upper()} {', '.join(rates)}")
    threads = (probe.get("before") or {}).get("torch_threads")
    bandwidth = [f"{probe[k]['bandwidth']['gbps_best']:.1f} GB/s {k}" for k in ("before", "after")
                 if "bandwidth" in (probe.get(k) or {})]
    return (f"Same-run GEMM probe (torch.mm 2048³, {threads} thread(s)): {'; '.join(parts)}. "
            + (f"Memory bandwidth probe (torch.add / copy_ on 128 MiB arrays): {', '.join(bandwidth)}. "
               if bandwidth else ""))


# --- plot -----------------------------------------------------------------------------------------------------------

def write_plot(data: dict, path: Path) -> Path | None:
    """latency vs input megapixels (log-log) and achieved TFLOP/s vs megapixels, one line per model/backend/precision.

    Returns None (and writes nothing) when matplotlib is not installed or nothing ran."""
    plt = _pyplot()
    if plt is None:
        return None
    series = plot_series(data)
    if not series:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 6))
    try:
        _draw_series(plt, ax1, ax2, series)
        _label_axes(ax1, ax2, series)
        _title_and_legend(fig, ax1, data)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
    finally:
        plt.close(fig)
    path = Path(path)
    write_bytes_atomic(path, buf.getvalue())
    return path


def plot_missing_reason(data: dict) -> str:
    """Why :func:`write_plot` wrote nothing: matplotlib missing, or no record that ran (with the statuses)."""
    if _pyplot() is None:
        return "matplotlib is not installed (pip install 'deploykit[plot]')"
    counts: dict[str, int] = {}
    for r in data.get("records", []):
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return ("nothing ran to plot (" + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + ")"
            if counts else "nothing was planned to plot")


def _pyplot():
    """matplotlib.pyplot on the Agg backend, None when matplotlib is not installed (it is optional)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_series(data: dict) -> dict[tuple, list]:
    """{(model, runtime, precision): [(input megapixels x batch, median ms, TFLOP/s, input WxH), ...]} of the
    records that ran."""
    series: dict[tuple, list] = {}
    for r in data["records"]:
        if r["status"] != "ok" or not (r.get("latency_ms") or {}).get("median"):
            continue
        tile = r.get("tile") or {}
        tiled = (f" ({'auto-' if tile.get('auto') else ''}tiled {tile['tile']}, ov {tile.get('overlap')})"
                 if tile.get("tile") else "")
        key = (r["model"], (r.get("runtime") or r["backend"]) + tiled, r["precision"])
        mpix = r["input_hw"][0] * r["input_hw"][1] * r["batch"] / 1e6
        series.setdefault(key, []).append((mpix, r["latency_ms"]["median"], r.get("tflops"), r["input_wxh"]))
    return series


def _draw_series(plt, ax1, ax2, series: dict[tuple, list]) -> None:
    """One line per series on both axes: colour per model, line style and marker per backend/precision."""
    models = sorted({k[0] for k in series})
    backends = sorted({(k[1], k[2]) for k in series})
    cmap = plt.get_cmap("tab10" if len(models) <= 10 else "tab20")
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D", "v", "P"]
    for (model, backend, prec), points in sorted(series.items()):
        points.sort()
        b = backends.index((backend, prec))
        kw = {"color": cmap(models.index(model) % cmap.N), "linestyle": styles[b % len(styles)],
              "marker": markers[b % len(markers)], "label": f"{model} · {backend}/{prec}"}
        ax1.plot([p[0] for p in points], [p[1] for p in points], **kw)
        ax2.plot([p[0] for p in points], [p[2] or 0 for p in points], **kw)


def _label_axes(ax1, ax2, series: dict[tuple, list]) -> None:
    """Log axes, one x tick per input size (WxH and megapixels), titles and units."""
    sizes = sorted({(p[0], p[3]) for pts in series.values() for p in pts})
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xticks([s[0] for s in sizes])
        ax.set_xticklabels([f"{s[1]}\n{s[0]:.2g} MP" for s in sizes], fontsize=8)
        ax.minorticks_off()
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xlabel("input resolution (W x H, megapixels)")
    ax1.set_yscale("log")
    ax1.set_ylabel("median latency per image (ms, log)")
    ax1.set_title("latency vs resolution")
    ax2.set_yscale("log")
    ax2.set_ylabel("achieved TFLOP/s (conv/matmul FLOPs, log)")
    ax2.set_title("achieved TFLOP/s")


def _title_and_legend(fig, ax1, data: dict) -> None:
    """The device and load average as the title, the series' legend below the plots."""
    device = data.get("device", {})
    load = data.get("load", {})
    fig.suptitle(f"deploykit bench — {device.get('name', '')} — load avg {load.get('loadavg_before')} → "
                 f"{load.get('loadavg_after')}", fontsize=10)
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.025 * ((len(labels) + 3) // 4), 1, 0.95))


# --- all files --------------------------------------------------------------------------------------------------------

def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "bench"


def results_dir(out_root: str | Path, data: dict) -> Path:
    return Path(out_root) / data["device"]["slug"]


def results_path(out_root: str | Path, device: dict, name: str, suffix: str) -> Path:
    """``<out_root>/<device-slug>/<name>.<suffix>``: where a run's files go (``device``: ``device_info()``)."""
    return Path(out_root) / device["slug"] / f"{_safe_name(name)}.{suffix}"


def write_all(data: dict, out_root: str | Path = "benchmarks/results", name: str | None = None) -> dict[str, Path]:
    """Write ``<out_root>/<device-slug>/<name>.json / .csv / .png``; returns the paths written."""
    out = ensure_writable_dir(results_dir(out_root, data))
    stem = name or "bench-" + data["created"].replace(":", "").replace("+0000", "Z")[:17]
    paths = {kind: results_path(out_root, data["device"], stem, kind) for kind in ("json", "csv")}
    with folder_lock(out, "deploykit bench"):  # one writer per results folder: json, csv and png of one run
        write_json_atomic(paths["json"], data)
        write_bytes_atomic(paths["csv"], csv_text(data).encode())
        png = write_plot(data, results_path(out_root, data["device"], stem, "png"))
    if png is not None:
        paths["png"] = png
    return paths


def load(path: str | Path) -> dict:
    data = json.loads(Path(path).read_text())
    if data.get("schema") != "deploykit.bench":
        raise ValueError(f"{path} is not a deploykit bench result (schema {data.get('schema')!r})")
    return data


# --- tables embedded in Markdown, kept in step with their JSON ---------------------------------------------------

TABLE_MARK = re.compile(r"<!-- bench-table: (?P<json>[^ ]+?)(?P<opts>(?: [a-z-]+)*) -->\n(?P<body>.*?)"
                        r"<!-- /bench-table -->", re.DOTALL)


def table_block(data: dict, opts: str = "") -> str:
    """What a ``<!-- bench-table: FILE.json [no-header] [summary] -->`` block holds: the header line and the
    table, or (``summary``) the figures prose may quote, computed from the records."""
    if "summary" in opts:
        return summary_text(data) + "\n"
    head = "" if "no-header" in opts else markdown_header(data) + "\n\n"
    return head + markdown_table(data) + "\n"


def _span(values: list[float], digits: int = 2) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.{digits}f}" if round(lo, digits) == round(hi, digits) else f"{lo:.{digits}f}–{hi:.{digits}f}"


def summary_text(data: dict) -> str:
    """Bullet figures over the ok records: peak fraction and CPU/wall per backend, ORT / eager speed and memory
    per model and size, the worst FP32 parity, and estimate / measured peak for whole frames >= 512^2."""
    ok = [r for r in data["records"] if r.get("status") == "ok"]
    lines = []
    for backend in sorted({r["runtime"] for r in ok}):
        rows = [r for r in ok if r["runtime"] == backend]
        fr = [r["peak_fraction"] for r in rows if r.get("peak_fraction") is not None]
        cw = [r["cpu_per_wall"] for r in rows if r.get("cpu_per_wall") is not None]
        lines.append(f"* {backend}: {len(rows)} records, of the same-run peak {_span(fr)}, CPU/wall {_span(cw)}, "
                     f"{sum(bool(r.get('suspect')) for r in rows)} suspect")
    by_case = {}
    for r in ok:
        by_case.setdefault((r["model"], tuple(r["input_hw"]), r["batch"]), {})[r["runtime"].split("-")[0]] = r
    for (model, hw, _), pair in sorted(by_case.items()):
        if {"torch", "ort"} <= set(pair):
            t, o = pair["torch"], pair["ort"]
            mem = [x["memory"].get("rss_peak_delta_bytes") for x in (o, t)]
            ratio = f", peak RSS Δ ORT/eager {mem[0] / mem[1]:.2f}" if all(mem) else ""
            floor = o["memory"].get("graph_floor_bytes")
            if floor and all(mem):
                ratio += (f" (graph floor {floor / 2**20:,.0f} MiB: ORT {mem[0] / floor:.2f}x, eager "
                          f"{mem[1] / floor:.2f}x it)")
            lines.append(f"* {model} {fmt_wxh(hw)}: ORT {t['latency_ms']['median'] / o['latency_ms']['median']:.2f}x "
                         f"eager's speed{ratio}")
    for r in sorted((r for r in ok if near_the_ridge(r)), key=lambda r: (r["model"], r["input_hw"], r["runtime"])):
        roof = r["roofline"]
        balance = r["peak_gflops"] / roof["peak_bandwidth_gbps"]
        lines.append(f"* {r['model']} {r['runtime']} {fmt_wxh(r['input_hw'])}: {roof['bound']}-bound by the roofline "
                     f"({roof['arithmetic_intensity']:.1f} FLOP/B of unfused traffic, the machine's balance "
                     f"{balance:.1f}): {roof['roofline_fraction']:.2f} of its roof, "
                     f"{roof['bandwidth_gbps']:.1f} of {roof['peak_bandwidth_gbps']:.1f} GB/s")
    worst = [r["parity"] for r in ok if (r.get("parity") or {}).get("checked")]
    if worst:
        lines.append(f"* FP32 parity: max abs <= {max(p['max_abs'] for p in worst):.1e}, PSNR >= "
                     f"{min(p['psnr_db'] for p in worst):.1f} dB, NaN/Inf {sum(p['nonfinite'] for p in worst)}")
    est = [(r["memory"]["estimate_bytes"] / r["memory"]["rss_peak_delta_bytes"], r) for r in ok
           if not r.get("tile") and r["input_hw"][0] * r["input_hw"][1] >= 512 * 512
           and (r.get("memory") or {}).get("rss_peak_delta_bytes")]
    if est:
        off = [e for e, _ in est if not 0.75 <= e <= 1.25]
        lines.append(f"* memory estimate / measured peak RSS Δ, whole frames >= 512²: {_span([e for e, _ in est])} "
                     f"over {len(est)} records, {len(off)} outside ±25 %")
    return "\n".join(lines)


def near_the_ridge(record: dict) -> bool:
    """Memory-bound, or within 2x of the roofline's ridge (where bandwidth may be what limits it)."""
    roof = record.get("roofline") or {}
    if not roof or not record.get("peak_gflops"):
        return False
    return roof["bound"] == "memory" or roof["arithmetic_intensity"] < 2 * record["peak_gflops"] / roof[
        "peak_bandwidth_gbps"]


def render_tables(text: str, root: str | Path) -> str:
    """``text`` with every bench-table block regenerated from its JSON (paths relative to ``root``)."""
    def fill(m: re.Match) -> str:
        body = table_block(load(Path(root) / m["json"]), m["opts"])
        return f"<!-- bench-table: {m['json']}{m['opts']} -->\n{body}<!-- /bench-table -->"

    return TABLE_MARK.sub(fill, text)


def table_drift(path: str | Path, root: str | Path) -> list[str]:
    """The JSON files whose block in the Markdown file ``path`` no longer matches what the JSON renders."""
    text = Path(path).read_text()
    drifted = []
    for m in TABLE_MARK.finditer(text):
        if m["body"] != table_block(load(Path(root) / m["json"]), m["opts"]):
            drifted.append(m["json"])
    return drifted


def main(argv: list[str] | None = None) -> int:
    """``FILE.json ...``: print the Markdown header and table of each; ``--update FILE.md ...``: regenerate the
    bench-table blocks of those Markdown files in place (paths relative to the current directory)."""
    args = list(argv if argv is not None else sys.argv[1:])
    if args and args[0] == "--update":
        for md in args[1:]:
            path = Path(md)
            write_bytes_atomic(path, render_tables(path.read_text(), Path.cwd()).encode())
            print(f"updated {md}")
        return 0
    for path in args:
        data = load(path)
        print(f"<!-- bench-table: {path} -->\n{table_block(data)}<!-- /bench-table -->\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
