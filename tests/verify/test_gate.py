"""The parity gate on a real export (VapSR-S x4, seeded init: the lightest SR graph): it passes when it must, fails
when it must (a perturbed FP16 model, a tolerance above what ORT reaches, goldens from other weights or tampered),
skips what cannot run here, writes well-formed JUnit / JSON / HTML, and checks goldens with torch unimportable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import deploykit
from deploykit.artifacts.manifest import MANIFEST_NAME, update_manifest
from deploykit.errors import ArtifactError, InputError
from deploykit.imaging.images import read_image, write_image
from deploykit.util.files import sha256_file
from deploykit.verify.gate import check
from deploykit.verify.reports import write_json, write_junit

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]
SHARED = Path(__file__).resolve().parents[2].parent / "shared"
PHOTO = SHARED / "images" / "noisy_real.png"


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return deploykit.export("vapsr:s_x4", out=tmp_path_factory.mktemp("gate")).out_dir


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """The real photo (or a seeded textured image without ../shared), cut small to keep the CPU time low."""
    path = tmp_path_factory.mktemp("gate-img") / "photo.png"
    if PHOTO.exists():
        rgb = read_image(PHOTO).rgb[:, 100:196, 100:220]
    else:
        rng = np.random.default_rng(0)
        rgb = np.clip(rng.normal(0.5, 0.2, (3, 96, 120)), 0, 1)
    write_image(path, rgb.astype(np.float32))
    return path


def _copy(export: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(export, dst)
    return dst


def test_passes_with_figures_that_match_a_direct_comparison(export, photo):
    from deploykit.runtime.ort import OrtBackend
    from deploykit.verify.reference import reference_backend
    from deploykit.verify.sources import fit

    report = check(export, images=[photo], res=["40x32", "64"], precisions=["fp32", "fp16"])
    assert report.passed and report.exit_code == 0 and len(report.cases) == 4
    case = next(c for c in report.cases if c.precision == "fp32" and c.res == (32, 40))
    manifest = json.loads((export / MANIFEST_NAME).read_text())
    x = fit(read_image(photo).rgb, (32, 40))[0][None]
    ref = reference_backend(manifest)[0].run({"image": x})["output"]
    fp32 = next(a for a in manifest["artifacts"] if a["precision"] == "fp32")["file"]
    out = OrtBackend(export / fp32).run({"image": x})["output"]
    assert case.max_abs == pytest.approx(float(np.abs(ref - out).max()), rel=1e-6)
    assert case.max_abs < 1e-4 and case.plan == "whole"
    fp16 = next(c for c in report.cases if c.precision == "fp16" and c.res == (64, 64))
    assert 40 < fp16.psnr_db < 150 and fp16.nonfinite == 0
    assert report.worst.precision == "fp16"  # the lowest PSNR


def test_tiled_resolution_covers_the_output(export, photo):
    report = check(export, images=[photo], res=["96x80"], precisions=["fp32"], tile=32, batch=2)
    (case,) = report.cases
    assert case.passed and case.plan.startswith("tiled:") and case.tiles > 4 and case.batch == 2
    assert case.visuals["reference"].shape[1:] == (80 * 4, 96 * 4)  # the preview covers the whole output


def test_tolerance_above_what_ort_reaches_fails(export, photo, cli_run, tmp_path):
    code, out, err = cli_run("parity", str(export), "--images", str(photo), "--res", "32", "--precision", "fp32",
                             "--min-psnr", "200", "--junit", str(tmp_path / "j.xml"))
    assert code == 1 and "parity failed" in err and "PSNR >= 200 dB" in err
    failure = ET.parse(tmp_path / "j.xml").getroot().find(".//failure")
    assert failure is not None and "PSNR" in failure.get("message") and "max abs" in failure.get("message")


def test_perturbed_fp16_model_fails(export, photo, tmp_path):
    bad = _copy(export, tmp_path)
    entry = next(a for a in json.loads((bad / MANIFEST_NAME).read_text())["artifacts"] if a["precision"] == "fp16")
    model = onnx.load(bad / entry["file"])
    init = max((i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16),
               key=lambda i: numpy_helper.to_array(i).size)
    w = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array((w * 1.5).astype(w.dtype), init.name))
    onnx.save(model, bad / entry["file"])
    digest = sha256_file(bad / entry["file"])

    def rehash(m):
        next(a for a in m["artifacts"] if a["precision"] == "fp16")["sha256"] = digest

    update_manifest(bad, rehash)
    report = check(bad, images=[photo], res=["32"])
    status = {c.precision: c.status for c in report.cases}
    assert status == {"fp32": "passed", "fp16": "failed"} and report.exit_code == 1
    assert report.failed[0].psnr_db < 40


def test_unavailable_backend_is_skipped_never_passed(export, cli_run, tmp_path):
    junit, js = tmp_path / "j.xml", tmp_path / "r.json"
    code, out, err = cli_run("parity", str(export), "--res", "24", "--backend", "ort,trt", "--precision", "fp32",
                             "--junit", str(junit), "--json", str(js))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "trt/fp32" in err
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("classname").split(".")[-2] for c in cases] == ["ort", "trt"]
    assert cases[1].find("skipped") is not None and cases[0].find("skipped") is None
    assert suite.get("skipped") == "1" and suite.get("failures") == "0"
    data = json.loads(js.read_text())
    assert data["schema"] == "deploykit.parity-report" and data["schema_version"] == 1
    assert data["exit_code"] == 2 and data["passed"] is False and "random" in data["inputs"]
    assert [c["status"] for c in data["cases"]] == ["passed", "skipped"]


def test_bad_input_is_one_line_exit_2(export, cli_run, tmp_path):
    for args, text in ((["--res", "banana"], "cannot read the size"), (["--images", str(tmp_path / "no.png")],
                                                                       "no such file"),
                       (["--backend", "onnx"], "unknown --backend"), (["--json", str(tmp_path / "x" / "r.json")],
                                                                      "does not exist")):
        code, _, err = cli_run("parity", str(export), *args)
        assert code == 2 and text in err and len(err.strip().splitlines()) == 1, err


def _golden(export, photo, folder) -> None:
    report = check(export, images=[photo], res=["32", "48x40"], precisions=["fp32"], save_golden=folder)
    assert report.golden_saved == folder and report.passed


def test_golden_round_trip_without_torch(export, photo, tmp_path):
    folder = tmp_path / "golden"
    _golden(export, photo, folder)
    index = json.loads((folder / "golden.json").read_text())
    assert index["model"] == "vapsr:s_x4" and index["weights_sha256"] == "random-init:0"
    assert index["manifest_sha256"] == sha256_file(export / MANIFEST_NAME) and len(index["cases"]) == 2
    assert np.load(folder / index["cases"][0]["runs"][0]["output"]["file"]).shape == (1, 3, 128, 128)
    script = ("import json, sys; sys.modules['torch'] = None\n"
              "from deploykit.verify.gate import check\n"
              f"r = check({str(export)!r}, golden={str(folder)!r}, precisions=['fp32', 'fp16'])\n"
              "assert 'torch' in sys.modules and sys.modules['torch'] is None\n"
              "print(json.dumps([[c.key, c.precision, c.status, c.max_abs, c.psnr_db] for c in r.cases]))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(deploykit.__file__).parents[1])})
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    with_torch = check(export, images=[photo], res=["32", "48x40"], precisions=["fp32", "fp16"])
    assert [r[:3] for r in rows] == [[c.key, c.precision, "passed"] for c in with_torch.cases]
    for row, case in zip(rows, with_torch.cases):
        assert row[3] == pytest.approx(case.max_abs, rel=1e-6)  # the same figures as against live PyTorch


def test_golden_of_other_weights_or_export_is_refused(export, photo, tmp_path):
    folder = tmp_path / "golden"
    _golden(export, photo, folder)
    other = _copy(export, tmp_path)
    update_manifest(other, lambda m: m.__setitem__("weights", {"source": "file", "sha256": "ab" * 32}))
    with pytest.raises(ArtifactError, match="made for other weights"):
        check(other, golden=folder)
    update_manifest(other, lambda m: m.__setitem__("weights", json.loads(
        (export / MANIFEST_NAME).read_text())["weights"]) or m.__setitem__("note", "re-exported"))
    with pytest.raises(ArtifactError, match="made for another export of vapsr:s_x4"):
        check(other, golden=folder)
    with pytest.raises(InputError, match="replays the golden's own inputs"):
        check(export, golden=folder, res=["64"])


def test_tampered_golden_is_refused_or_fails(export, photo, tmp_path):
    folder = tmp_path / "golden"
    _golden(export, photo, folder)
    index = json.loads((folder / "golden.json").read_text())
    out = folder / index["cases"][1]["runs"][0]["output"]["file"]
    arr = np.load(out)
    np.save(out, arr + 0.01)
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        check(export, golden=folder)
    index["cases"][1]["runs"][0]["output"]["sha256"] = sha256_file(out)  # a consistent forgery: the figures fail
    (folder / "golden.json").write_text(json.dumps(index))
    report = check(export, golden=folder, precisions=["fp32"])
    assert [c.status for c in report.cases] == ["passed", "failed"]
    assert report.cases[1].max_abs == pytest.approx(0.01, rel=1e-3)


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"])
        for key in ("href", "src"):
            if a.get(key) and not a[key].startswith(("data:", "#")):
                self.links.append(a[key])


def test_html_is_self_contained(export, photo, tmp_path):
    import base64
    import io

    from PIL import Image

    from deploykit.verify.html import write_html

    report = check(export, images=[photo], res=["32"], backends=["ort", "trt"], precisions=["fp32"])
    page = _Page()
    page.feed(write_html(report, tmp_path / "r.html").read_text())
    assert page.links == [] and len(page.images) == 7  # input, ref, cand, heatmap + 3 worst crops; trt skipped
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).size[0] > 0
    write_junit(report, tmp_path / "j.xml")
    write_json(report, tmp_path / "r.json")
    assert len(ET.parse(tmp_path / "j.xml").getroot().iter("testcase").__next__().attrib) >= 3
