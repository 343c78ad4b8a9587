"""The HTML report in a real headless browser (Debian's chromium; skipped with the reason where it is absent): it
renders, every image decodes (naturalWidth > 0), nothing is fetched, and the console stays clean. Control pages
with a broken image and a script error prove the probe sees both."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deploykit.verify.figures import Figures, Tolerance
from deploykit.verify.gate import Case, ParityReport
from deploykit.verify.html import render_html

BROWSER = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
PROBE = ("<script>addEventListener('load', () => document.body.setAttribute('data-probe', "
         "[...document.images].map(i => i.complete ? i.naturalWidth : 0).join(',')));</script>")


def _case(backend: str, precision: str, noise: float, status: str | None = None) -> Case:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:96] / 96
    ref = np.stack([yy, xx, (yy + xx) / 2])[None].astype(np.float32)
    cand = ref + rng.normal(0, noise, ref.shape).astype(np.float32)
    f = Figures((64, 96), 1)
    f.add(ref, cand)
    tol = Tolerance(1e-4, None) if precision == "fp32" else Tolerance(None, 40.0)
    case = Case("photo.png@24x16", "photo.png", "image", (16, 24), 1, "scaled 0.5x", backend, precision, tol,
                status=status or ("passed" if f.passed(tol) else "failed"), max_abs=f.max_abs, mean_abs=f.mean_abs,
                psnr_db=f.psnr_db, nonfinite=f.nonfinite, worst_box=f.worst.box)
    case.visuals = {"input": ref[0, :, ::4, ::4], "reference": ref[0], "candidate": cand[0], "diff": f.preview,
                    "worst_reference": f.worst.reference, "worst_candidate": f.worst.candidate}
    return case


def _report() -> ParityReport:
    skipped = Case("photo.png@24x16", "photo.png", "image", (16, 24), 1, "", "trt", "fp16", Tolerance(None, 40),
                   reason="TensorRT is not installed")
    return ParityReport("vapsr:x4", Path("exports/vapsr/x4"), {"weights_sha256": "ab" * 32, "manifest_sha256": "cd"},
                        "images", {}, [_case("ort", "fp32", 1e-6), _case("ort", "fp16", 0.05), skipped])


def test_page_content_without_a_browser():
    page = render_html(_report())
    assert "parity failed (1 passed, 1 failed, 1 skipped)" in page and "TensorRT is not installed" in page
    assert page.count("<img ") == 14 and "http" not in page.replace("http-equiv", "")
    assert re.search(r"<td class=\"l\">24x16</td><td>1[0-9]{2}\.\d\d</td><td>2\d\.\d\d</td><td>skipped</td>", page)


def _browse(html_file: Path, tmp_path: Path, screenshot: Path | None = None) -> tuple[str, str]:
    args = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'ud'}",
            "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--window-size=1200,1600"]
    args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    proc = subprocess.run([*args, html_file.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


@pytest.mark.skipif(BROWSER is None, reason="no chromium here (apt-get install -y chromium; .ci/run tries)")
def test_page_renders_in_headless_chromium(tmp_path):
    page = render_html(_report())
    probed = tmp_path / "probe.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"))
    dom, stderr = _browse(probed, tmp_path)
    widths = re.search(r'data-probe="([^"]*)"', dom)
    assert widths, dom[:500]
    values = [int(v) for v in widths.group(1).split(",")]
    assert len(values) == 14 and min(values) > 0, values
    assert _console_errors(stderr) == [], _console_errors(stderr)
    shot = tmp_path / "page.png"
    real = tmp_path / "report.html"
    real.write_text(page)
    _browse(real, tmp_path, screenshot=shot)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[1] == 1200 and (pixels.min(axis=2) < 128).mean() > 0.01  # not a blank page
    # controls: the probe must see a broken image and a script error
    broken = tmp_path / "broken.html"
    broken.write_text(page.replace('src="data:image/png;base64,', 'src="data:image/png;base64,AAAA', 1)
                      .replace("</body>", PROBE + "<script>undefined_function();</script></body>"))
    dom, stderr = _browse(broken, tmp_path)
    values = [int(v) for v in re.search(r'data-probe="([^"]*)"', dom).group(1).split(",")]
    assert values[0] == 0 and min(values[1:]) > 0
    assert any("undefined_function" in line for line in _console_errors(stderr)), stderr[-2000:]
