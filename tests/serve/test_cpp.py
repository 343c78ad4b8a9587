"""The C++ runners (cpp/): build with CMake, run aoti_run on a real image, compare with the Python path.

Needs cmake, a C++ compiler, nlohmann-json and stb headers (.ci/run installs nlohmann-json3-dev and libstb-dev);
without them every test here skips with the reason. The build directory and the compiled AOTInductor package are
made once per session. trt_run cannot be built without TensorRT: the test checks that CMake says so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from deploykit.artifacts.manifest import MANIFEST_NAME, new_manifest
from deploykit.errors import CppBuildError
from deploykit.imaging.images import read_image, write_image
from deploykit.imaging.tiling import Contract, crop, pad_to_contract, take_region
from deploykit.serve.cpp_build import (CPP_DIR_ENV, build_cpp, find_binary, missing_headers, missing_tools,
                                       source_dir, torch_cmake_prefix)
from deploykit.util.files import sha256_file
from deploykit.zoo.registry import get_spec

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
VAPSR_X4 = SHARED / "weights" / "VapSR_X4.pth"
PHOTO = SHARED / "images" / "noisy_real.png"
MODEL = "vapsr:x4"
H, W = 40, 52  # the test image (H x W)


def _missing() -> str | None:
    missing = missing_tools() + missing_headers()
    if torch_cmake_prefix() is None:
        missing.append("torch's CMake files")
    return "C++ toolchain incomplete, missing: " + "; ".join(missing) if missing else None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


@pytest.fixture(scope="session")
def cpp():
    # the repository's build/cpp (git-ignored), as 'deploykit cpp build' and docs/ci.md's job use: the runners are
    # compiled once per checkout and the CI job test reuses them (an incremental build takes seconds)
    result = build_cpp(REPO / "build" / "cpp")
    if "aoti_run" not in result.binaries:
        pytest.skip(f"aoti_run was not built: {result.skipped.get('aoti_run')}")
    return result


def _write_manifest(out_dir: Path, weights: Path | None) -> Path:
    """The manifest an ONNX export starts from (export_aoti reads only these keys; no ONNX needed here)."""
    spec = get_spec(MODEL)
    out_dir.mkdir(parents=True, exist_ok=True)
    m = new_manifest(spec)
    m["weights"] = ({"source": "file", "path": str(weights), "sha256": sha256_file(weights)} if weights
                    else {"source": "random-init", "seed": 0})
    m["forms"], m["artifacts"], m["parity"] = [], [], []
    m["export"] = {"exporter": "dynamo", "static_hw": None}
    m["io"] = {"layout": "NCHW", "value_range": [0.0, 1.0],
               "inputs": [{"name": "image", "dtype": "float32", "dims": ["batch", 3, "height", "width"]}],
               "outputs": [{"name": "output", "dtype": "float32", "dims": ["batch", 3, "out_height", "out_width"]}]}
    (out_dir / MANIFEST_NAME).write_text(json.dumps(m, indent=2))
    return out_dir


@pytest.fixture(scope="session")
def export(tmp_path_factory):
    """VapSR x4 (official weights when ../shared has them, else seeded) compiled to an AOTInductor package."""
    from deploykit.exporting.aoti import export_aoti

    out = _write_manifest(tmp_path_factory.mktemp("cpp-export") / "vapsr" / "x4",
                          VAPSR_X4 if VAPSR_X4.exists() else None)
    entry = export_aoti(out)
    return out, entry


@pytest.fixture(scope="session")
def reference():
    from deploykit.zoo.factory import build_model
    from deploykit.runtime.torch_backend import ImageOutput

    model, spec, _ = build_model(MODEL, VAPSR_X4 if VAPSR_X4.exists() else None, seed=0)
    wrapped = ImageOutput(model, spec.image_output).eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return wrapped(torch.from_numpy(np.ascontiguousarray(x))).numpy()

    return run


@pytest.fixture(scope="session")
def image(tmp_path_factory) -> Path:
    """A 40x52 crop of the real photo (a textured, noisy region), or a seeded synthetic image without ../shared."""
    path = tmp_path_factory.mktemp("cpp-image") / "crop.png"
    if PHOTO.exists():
        rgb = read_image(PHOTO).rgb[:, 100:100 + H, 100:100 + W]
    else:
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:H, 0:W] / max(H, W)
        rgb = np.stack([yy, xx, 0.5 * (yy + xx)]) + rng.normal(0, 0.05, (3, H, W))
    write_image(path, np.clip(rgb, 0, 1).astype(np.float32))
    return path


def _run(binary: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *map(str, args)], check=False, capture_output=True, text=True,
                          timeout=300)


def test_sources_are_found_beside_the_package(tmp_path, monkeypatch):
    """cpp/ is looked up beside the deploykit package directory; DEPLOYKIT_CPP_DIR must hold a CMakeLists.txt."""
    import deploykit

    monkeypatch.delenv(CPP_DIR_ENV, raising=False)
    assert source_dir() == Path(deploykit.__file__).resolve().parents[1] / "cpp"
    assert (source_dir() / "CMakeLists.txt").is_file()
    monkeypatch.setenv(CPP_DIR_ENV, str(tmp_path))
    with pytest.raises(CppBuildError, match=f"{CPP_DIR_ENV}=.* has no CMakeLists.txt"):
        source_dir()
    with pytest.raises(CppBuildError, match=r"unknown C\+\+ runner 'onnx_run' \(use aoti or trt\)"):
        find_binary("onnx")
    with pytest.raises(CppBuildError, match=r"aoti_run does not exist; run 'deploykit cpp build --build-dir "):
        find_binary("aoti", tmp_path)


def test_selftest(cpp):
    proc = _run(cpp.binaries["dk_selftest"])
    assert proc.returncode == 0, proc.stderr
    assert "checks passed" in proc.stdout


def test_trt_run_skipped_without_tensorrt(cpp, tmp_path):
    if "trt_run" in cpp.binaries:
        pytest.skip("TensorRT and CUDA are installed here: trt_run was built")
    reason = cpp.skipped["trt_run"]
    if "TensorRT not found" not in reason:  # TensorRT headers present, CUDA runtime absent
        assert reason.startswith("CUDA runtime not found")
        return
    assert reason == "TensorRT not found (set TensorRT_ROOT)"
    assert "trt_run: skipped: TensorRT not found (set TensorRT_ROOT)" in cpp.log
    # --with-trt makes it a configure error (configure only: fails before anything compiles)
    with pytest.raises(CppBuildError, match=r"trt_run: TensorRT not found \(set TensorRT_ROOT\)"):
        build_cpp(tmp_path / "with-trt", trt=True, aoti=False)


def test_tensorrt_discovery_names_what_is_missing(cpp, tmp_path):
    """Configure-only checks of the TensorRT search with install layouts made of empty files (--with-trt turns the
    reason into a configure error before anything compiles). One build directory: a changed TensorRT_ROOT must
    re-run the search instead of reusing the cached library."""
    runtime_only = tmp_path / "runtime-only"
    (runtime_only / "lib").mkdir(parents=True)
    (runtime_only / "lib" / "libnvinfer.so.10").write_bytes(b"")  # a deb runtime install: soname only, no headers
    build = tmp_path / "build"
    with pytest.raises(CppBuildError, match=r"TensorRT headers \(NvInferRuntime.h\) not found for .*runtime-only"
                                            r"/lib/libnvinfer.so.10"):
        build_cpp(build, trt=True, aoti=False, tensorrt_root=runtime_only)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CppBuildError, match=r"TensorRT not found under TensorRT_ROOT=.*empty"):
        build_cpp(build, trt=True, aoti=False, tensorrt_root=empty)


def test_aoti_run_matches_python(cpp, export, image, reference, tmp_path):
    """aoti_run's float output vs the Python AOTI package and PyTorch eager on the same input; 8-bit PNG within one
    quantisation step."""
    from deploykit.runtime.aoti import AotiBackend

    out_dir, entry = export
    png, raw = tmp_path / "out.png", tmp_path / "out.npy"
    proc = _run(cpp.binaries["aoti_run"], "--manifest", out_dir / MANIFEST_NAME, "--input", image, "--output", png,
                "--output-raw", raw)
    assert proc.returncode == 0, proc.stderr
    assert f"{H}x{W} -> {4 * H}x{4 * W}" in proc.stdout and "(8-bit)" in proc.stdout
    got = np.load(raw)
    x = read_image(image).nchw()
    eager = reference(x)
    python_aoti = AotiBackend(out_dir / entry["file"], ["image"], ["output"]).run({"image": x})["output"]
    assert got.shape == eager.shape == (1, 3, 4 * H, 4 * W)
    vs_python_aoti = float(np.abs(got - python_aoti).max())
    vs_eager = float(np.abs(got - eager).max())
    print(f"aoti_run vs Python AOTI: max abs {vs_python_aoti:.2e}; vs PyTorch eager: {vs_eager:.2e}")
    assert vs_python_aoti <= 1e-4 and vs_eager <= 1e-4
    written = read_image(png)
    assert written.bit_depth == 8 and written.rgb.shape == (3, 4 * H, 4 * W)
    assert float(np.abs(written.rgb - np.clip(eager[0], 0, 1)).max()) <= 1 / 255 + 1e-4


def test_aoti_run_pads_to_the_contract(cpp, export, image, reference, tmp_path):
    """With multiple_of 8 the runner reflect-pads 40x52 to 40x56, runs, and crops 160x208 back out: same as
    deploykit.imaging.tiling's pad / crop around PyTorch eager."""
    out_dir, _ = export
    manifest = json.loads((out_dir / MANIFEST_NAME).read_text())
    manifest["shape_contract"]["multiple_of"] = 8
    m8 = out_dir / "manifest.m8.json"  # next to the package: artifact files are relative to the manifest
    m8.write_text(json.dumps(manifest))
    raw = tmp_path / "out.npy"
    proc = _run(cpp.binaries["aoti_run"], "--manifest", m8, "--input", image, "--output", tmp_path / "o.png",
                "--output-raw", raw)
    assert proc.returncode == 0, proc.stderr
    assert "padded to 40x56" in proc.stdout
    x = read_image(image).nchw()
    expected = crop(reference(pad_to_contract(x, Contract(8, 1, False, 4))), H, W, 4)
    assert float(np.abs(np.load(raw) - expected).max()) <= 1e-4


def test_aoti_run_16bit_in_16bit_out(cpp, export, image, tmp_path):
    out_dir, _ = export
    src16 = tmp_path / "in16.png"
    write_image(src16, read_image(image).rgb, bit_depth=16)
    png, raw = tmp_path / "out16.png", tmp_path / "out16.npy"
    proc = _run(cpp.binaries["aoti_run"], "--manifest", out_dir, "--input", src16, "--output", png,
                "--output-raw", raw)
    assert proc.returncode == 0, proc.stderr
    written = read_image(png)
    assert written.bit_depth == 16
    assert float(np.abs(written.rgb - np.clip(np.load(raw)[0], 0, 1)).max()) <= 0.5 / 65535 + 1e-6


def test_reflect_padding_matches_python(cpp, image, tmp_path):
    """dkcore's padding vs deploykit.imaging.tiling, including pads larger than the image (periodic reflection)."""
    x = read_image(image).nchw()
    for hw in [(40, 56), (97, 130)]:
        out = tmp_path / f"pad{hw[0]}.npy"
        proc = _run(cpp.binaries["dk_selftest"], "pad", image, *hw, out)
        assert proc.returncode == 0, proc.stderr
        got, expected = np.load(out), take_region(x, 0, hw[0], 0, hw[1])
        assert got.shape == expected.shape and np.array_equal(got, expected), float(np.abs(got - expected).max())


def test_errors_are_one_line_with_exit_codes(cpp, export, image, tmp_path):
    out_dir, entry = export
    runner = cpp.binaries["aoti_run"]
    manifest = out_dir / MANIFEST_NAME

    def fails(code: int, text: str, *args):
        proc = _run(runner, *args)
        assert proc.returncode == code, (proc.returncode, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("aoti_run: error: ") and text in lines[0], proc.stderr

    out = tmp_path / "o.png"
    fails(3, "no manifest at", "--manifest", tmp_path / "none.json", "--input", image, "--output", out)
    fails(2, "no such file", "--manifest", manifest, "--input", tmp_path / "none.png", "--output", out)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    fails(2, "cannot decode image", "--manifest", manifest, "--input", tmp_path / "broken.png", "--output", out)
    fails(2, "unknown argument '--nope'", "--nope")
    fails(2, "required", "--manifest", manifest)
    fails(2, ".png files only", "--manifest", manifest, "--input", image, "--output", tmp_path / "o.jpg")
    fails(2, "does not exist", "--manifest", manifest, "--input", image, "--output", tmp_path / "no" / "o.png")
    # a package that does not match its manifest entry (torn update) is refused before loading
    torn = tmp_path / "torn"
    shutil.copytree(out_dir, torn)
    with open(torn / entry["file"], "ab") as fh:
        fh.write(b"\0")
    fails(3, "does not match the sha256", "--manifest", torn / MANIFEST_NAME, "--input", image, "--output", out)
    # a manifest without a package
    bare = json.loads(manifest.read_text())
    bare["artifacts"] = []
    (torn / MANIFEST_NAME).write_text(json.dumps(bare))
    fails(3, "--aoti' first", "--manifest", torn / MANIFEST_NAME, "--input", image, "--output", out)
    assert not out.exists()


def test_cli_registers_cpp_group(cpp, cli_run, tmp_path):
    import typer

    from deploykit.cli import cpp as cli_cpp

    app = typer.Typer()

    @app.command("noop")
    def _noop() -> None:
        pass

    cli_cpp.register(app)
    cli_cpp.register(app)  # idempotent
    assert [g.name for g in app.registered_groups] == ["cpp"]
    code, out, err = cli_run("cpp", "run", "trt", "--build-dir", str(tmp_path))
    assert code == 2 and "deploykit cpp build --with-trt" in err and len(err.strip().splitlines()) == 1
    code, _, _ = cli_run("cpp", "run", "aoti", "--build-dir", str(cpp.build_dir), "--help-me")
    assert code == 2  # the runner's own usage error, passed through


def test_aoti_run_check_agrees_with_python(cpp, export, image, tmp_path):
    """aoti_run --check GOLDEN: every golden input through the C++ runner, the same figures as the Python gate's
    aoti case on that golden; a tolerance it cannot reach exits 1, a tampered golden is refused (exit 3)."""
    import re

    from deploykit.verify.gate import check

    out_dir, _ = export
    golden = tmp_path / "golden"
    saved = check(out_dir, images=[image], res=["52x40", "24"], backends=["aoti"], precisions=["fp32"],
                  save_golden=golden)
    assert saved.passed and saved.golden_saved == golden
    python = check(out_dir, golden=golden, backends=["aoti"], precisions=["fp32"])
    runner = cpp.binaries["aoti_run"]
    proc = _run(runner, "--manifest", out_dir / MANIFEST_NAME, "--check", golden)
    assert proc.returncode == 0, proc.stderr
    figures = re.findall(r" (\S+@\S+): max abs (\S+), mean abs (\S+), PSNR (\S+) dB, NaN/Inf (\d+): pass",
                         proc.stdout)
    assert [f[0] for f in figures] == [c.key for c in python.cases] and "2 of 2 cases passed" in proc.stdout
    for (_, max_abs, mean_abs, psnr_db, nonfinite), case in zip(figures, python.cases):
        assert float(max_abs) == pytest.approx(case.max_abs, rel=0.01, abs=1e-9)
        assert float(mean_abs) == pytest.approx(case.mean_abs, rel=0.01, abs=1e-10)
        assert float(psnr_db) == pytest.approx(case.psnr_db, abs=0.05) and int(nonfinite) == 0
    proc = _run(runner, "--manifest", out_dir / MANIFEST_NAME, "--check", golden, "--min-psnr", "200")
    assert proc.returncode == 1 and "0 of 2 cases passed (PSNR >= 200" in proc.stdout
    index = json.loads((golden / "golden.json").read_text())
    out = golden / index["cases"][0]["runs"][0]["output"]["file"]
    np.save(out, np.load(out) * 1.01)
    proc = _run(runner, "--manifest", out_dir / MANIFEST_NAME, "--check", golden)
    assert proc.returncode == 3 and "does not match its sha256 in golden.json" in proc.stderr
    other = json.loads((out_dir / MANIFEST_NAME).read_text())
    other["weights"] = {"source": "file", "sha256": "cd" * 32}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(other))
    proc = _run(runner, "--manifest", tmp_path / MANIFEST_NAME, "--check", golden)
    assert proc.returncode == 3 and "made for other weights" in proc.stderr
