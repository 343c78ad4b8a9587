"""The gate's page for people: one self-contained offline HTML file (no CDN, no script; images inline as base64
PNG made with Pillow): the verdict, a summary table, PSNR per resolution, and per case the input, the reference,
the candidate, an amplified absolute-difference heatmap and the worst region side by side."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from PIL import Image

from deploykit.util.files import write_bytes_atomic
from deploykit.util.sizes import fmt_wxh

CROP_ZOOM = 4  # the worst region is shown at 4x, nearest neighbour
_HEAT = np.array([[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]], np.float64)
_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}td.l{text-align:left}
.pass{color:#0a7d22;font-weight:600}.fail{color:#c21a1a;font-weight:600}.skip{color:#8a6d00;font-weight:600}
figure{display:inline-block;margin:4px 8px 4px 0;vertical-align:top}figcaption{font-size:12px;color:#555}
img{image-rendering:pixelated;border:1px solid #ddd}img.main{width:320px}
section{border-top:1px solid #ddd;margin-top:18px}
"""


def png_data_uri(array: np.ndarray) -> str:
    """[C, H, W] floats 0..1 (C = 1 or 3+), [H, W] floats 0..1, or [H, W, 3] uint8 -> data:image/png;base64."""
    if array.dtype != np.uint8:
        a = np.clip(np.nan_to_num(array.astype(np.float32)), 0.0, 1.0)
        a = a[0] if a.ndim == 3 and a.shape[0] == 1 else a
        a = np.moveaxis(a[:3], 0, -1) if a.ndim == 3 else a
        array = np.rint(a * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def heatmap(diff: np.ndarray, gain: float) -> np.ndarray:
    """[H, W] abs difference x gain, clipped to 0..1, through a magma-like colour ramp -> [H, W, 3] uint8."""
    t = np.clip(np.nan_to_num(diff, nan=1.0, posinf=1.0) * gain, 0.0, 1.0) * (len(_HEAT) - 1)
    lo = np.floor(t).astype(int).clip(0, len(_HEAT) - 2)
    frac = (t - lo)[..., None]
    return np.rint(_HEAT[lo] * (1 - frac) + _HEAT[lo + 1] * frac).astype(np.uint8)


def gain_for(diff: np.ndarray) -> float:
    """Amplification that maps the largest difference to the top of the ramp (a power of ten, at least 1)."""
    peak = float(np.nanmax(diff)) if diff.size else 0.0
    return 1.0 if peak <= 0 else float(max(1.0, 10 ** np.floor(np.log10(1.0 / peak))))


def _zoom(crop: np.ndarray) -> np.ndarray:
    return crop.repeat(CROP_ZOOM, axis=-2).repeat(CROP_ZOOM, axis=-1)


def _fig(uri: str, caption: str, cls: str = "crop") -> str:
    return f'<figure><img class="{cls}" src="{uri}" alt="{html.escape(caption)}"><figcaption>' \
           f'{html.escape(caption)}</figcaption></figure>'


def _status(case) -> str:
    cls = {"passed": "pass", "failed": "fail"}.get(case.status, "skip")
    return f'<span class="{cls}">{case.status.upper()}</span>'


def _num(value, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _summary_table(report) -> str:
    rows = []
    for k, c in enumerate(report.cases):
        rows.append(f'<tr><td class="l"><a href="#case{k}">{html.escape(c.key)}</a></td><td class="l">'
                    f"{c.backend}/{c.precision}</td><td>{_num(c.max_abs, '.3g')}</td><td>{_num(c.mean_abs, '.3g')}"
                    f"</td><td>{_num(c.psnr_db, '.2f')}</td><td>{_num(c.nonfinite, 'd')}</td><td class=\"l\">"
                    f"{html.escape(c.plan)}</td><td class=\"l\">{html.escape(c.tolerance.describe())}</td>"
                    f"<td>{_status(c)}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("case", "backend", "max abs", "mean abs", "PSNR dB", "NaN/Inf",
                                              "plan", "tolerance", "result"))
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _psnr_table(report) -> str:
    """Lowest PSNR over the inputs, per resolution (rows) and backend/precision (columns)."""
    columns = list(dict.fromkeys(f"{c.backend}/{c.precision}" for c in report.cases))
    resolutions = list(dict.fromkeys(c.res for c in report.cases))
    body = []
    for res in resolutions:
        cells = []
        for col in columns:
            values = [c.psnr_db for c in report.cases if c.res == res and f"{c.backend}/{c.precision}" == col
                      and c.psnr_db is not None]
            cells.append(f"<td>{min(values):.2f}</td>" if values else "<td>skipped</td>")
        body.append(f"<tr><td class=\"l\">{fmt_wxh(res)}</td>{''.join(cells)}</tr>")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    return f"<table><tr><th>resolution (input)</th>{head}</tr>{''.join(body)}</table>"


def _case_section(k: int, case) -> str:
    title = f'<section id="case{k}"><h3>{html.escape(case.name)} {_status(case)}</h3>'
    if case.status == "skipped":
        return title + f"<p>skipped: {html.escape(case.reason)}</p></section>"
    v = case.visuals
    gain = gain_for(v["diff"])
    y, x, h, w = case.worst_box
    figs = [_fig(png_data_uri(v["input"]), f"input {fmt_wxh(case.res)} ({case.fit})", "main"),
            _fig(png_data_uri(v["reference"]), "reference (PyTorch FP32)", "main"),
            _fig(png_data_uri(v["candidate"]), f"candidate {case.backend}/{case.precision}", "main"),
            _fig(png_data_uri(heatmap(v["diff"], gain)), f"|difference| x{gain:g} (block maxima)", "main")]
    worst_diff = np.abs(v["worst_reference"] - v["worst_candidate"])
    zoomed_heat = heatmap(worst_diff.max(axis=0), gain).repeat(CROP_ZOOM, axis=0).repeat(CROP_ZOOM, axis=1)
    crops = [_fig(png_data_uri(_zoom(v["worst_reference"])), "worst region: reference"),
             _fig(png_data_uri(_zoom(v["worst_candidate"])), "worst region: candidate"),
             _fig(png_data_uri(zoomed_heat), f"worst region |difference| x{gain:g}")]
    return (title + f"<p>{html.escape(case.summary())}</p><div>{''.join(figs)}</div>"
            f"<p>worst region: {w}x{h} output pixels at x={x}, y={y} (mean abs {worst_diff.mean():.3g})</p>"
            f"<div>{''.join(crops)}</div></section>")


def render_html(report) -> str:
    cls = "pass" if report.passed else ("fail" if report.failed else "skip")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
    ident = report.identity
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>parity {html.escape(report.model)}</title><style>{_CSS}</style></head><body>"
            f"<h1>Parity of {html.escape(report.model)}</h1>"
            f"<p class=\"{cls}\">{html.escape(report.verdict())}</p>"
            f"<p>export {html.escape(str(report.export_dir))}; weights {html.escape(str(ident.get('weights_sha256')))};"
            f" manifest sha256 {html.escape(str(ident.get('manifest_sha256')))[:16]}; inputs: "
            f"{html.escape(report.inputs)}</p><ul>{notes}</ul>"
            f"<h2>Summary</h2>{_summary_table(report)}<h2>PSNR per resolution (lowest over inputs)</h2>"
            f"{_psnr_table(report)}<h2>Cases</h2>"
            + "".join(_case_section(k, c) for k, c in enumerate(report.cases)) + "</body></html>\n")


def write_html(report, path: str | Path) -> Path:
    path = Path(path)
    write_bytes_atomic(path, render_html(report).encode("utf-8"))
    return path
