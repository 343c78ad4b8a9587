"""deploykit infer: degradation inputs, input expansion, per-file errors, the CLI, ORT vs PyTorch."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

import deploykit
from deploykit.zoo.degradation import (PCA_SEED, blur_code, degradation_maps, gaussian_kernel, kernel_code, parse_blur,
                                   pca_basis)
from deploykit.errors import ArtifactError, BackendUnavailableError, EngineError, InputError
from deploykit.imaging.images import read_image
from deploykit.infer.files import expand_inputs
from deploykit.infer.run import infer
from deploykit.infer.runner import open_runner
from deploykit.runtime.open import unavailable_reason
from deploykit.zoo.sample_inputs import random_inputs
from deploykit.imaging.tiling import run_tiled
from deploykit.zoo.registry import get_spec


def _photo(path, h=20, w=24, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    data = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    Image.fromarray(data[..., 0] if channels == 1 else data, mode).save(path)
    return path


# --- UDVD degradation ----------------------------------------------------------------------------------------

def test_gaussian_kernels():
    iso = gaussian_kernel(2.0)
    assert iso.shape == (15, 15) and abs(iso.sum() - 1) < 1e-12
    assert np.allclose(iso, iso.T) and np.allclose(iso, iso[::-1, ::-1]) and iso.argmax() == 7 * 15 + 7
    wide = gaussian_kernel(3.0, 1.0, 0.0)  # long axis horizontal
    assert wide[7, 3] > wide[3, 7]
    assert np.allclose(gaussian_kernel(3.0, 1.0, 90.0), wide.T)
    diag = gaussian_kernel(3.0, 0.5, 45.0)  # counter-clockwise as displayed: towards the top-right corner
    assert diag[4, 10] > diag[10, 10] and np.isclose(diag[4, 10], diag[10, 4])


def test_pca_basis_is_deterministic_and_codes_have_the_right_shape():
    basis = pca_basis()
    assert basis is pca_basis()  # cached in memory
    assert basis.components.shape == (15, 225) and basis.mean.shape == (225,)
    assert np.allclose(basis.components @ basis.components.T, np.eye(15), atol=1e-9)
    assert basis.explained.sum() > 0.95
    small_a, small_b = pca_basis.__wrapped__(PCA_SEED, 1024), pca_basis.__wrapped__(PCA_SEED, 1024)
    assert small_a.digest() == small_b.digest()
    assert np.allclose(kernel_code(basis.mean.reshape(15, 15)), 0, atol=1e-6)
    iso, aniso = blur_code("2.0"), blur_code("2.0,1.0,30")
    assert iso.shape == aniso.shape == (15,) and iso.dtype == np.float32 and not np.allclose(iso, aniso)
    assert np.array_equal(blur_code(2.0), iso)
    recon = basis.components.T @ iso + basis.mean  # the code describes the kernel it came from
    assert np.abs(recon - gaussian_kernel(2.0).ravel()).max() < 0.01


def test_degradation_maps_and_bad_specs():
    maps = degradation_maps("1.5", 25.0)
    assert maps["kernel"].shape == (1, 15, 1, 1) and maps["noise"].shape == (1, 1, 1, 1)
    assert maps["noise"].item() == pytest.approx(25 / 255)
    assert np.array_equal(maps["kernel"].ravel(), blur_code(1.5))
    assert parse_blur("2,1,30").theta_deg == 30 and parse_blur("2").isotropic
    for bad in ("", "a", "1,2,3,4", "-1", "0,1"):
        with pytest.raises(InputError, match="blur"):
            parse_blur(bad)
    with pytest.raises(InputError, match="noise"):
        degradation_maps(1.0, -3)


# --- inputs -------------------------------------------------------------------------------------------------

def test_expand_inputs_files_folders_globs(tmp_path):
    folder = tmp_path / "set"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.png", "a.jpg", "notes.txt", "sub/c.tif"):
        (folder / name).write_bytes(b"x")
    found = expand_inputs([folder, str(folder / "*.png"), tmp_path / "missing.png"])
    assert [str(rel) for _, rel in found] == ["a.jpg", "b.png", "missing.png"]  # b.png once; missing kept
    assert [str(rel) for _, rel in expand_inputs([folder], recursive=True)] == ["a.jpg", "b.png", "sub/c.tif"]


def test_output_collisions_and_self_overwrite_fail_per_file(tmp_path):
    from deploykit.infer.run import plan_jobs

    for sub in ("a", "b", "empty"):
        (tmp_path / sub).mkdir()
    a, b = _photo(tmp_path / "a" / "x.png"), _photo(tmp_path / "b" / "x.png")
    first, second = plan_jobs([a, b], tmp_path / "out")
    assert first.error is None and "also the output of" in second.error
    (same,) = plan_jobs([a], tmp_path / "a")
    assert "overwrite the input" in same.error
    with pytest.raises(InputError, match="no input images"):
        plan_jobs([tmp_path / "empty"], tmp_path / "out")


# --- the library entry ----------------------------------------------------------------------------------------

def test_infer_keeps_gray_alpha_and_scale(tmp_path):
    gray = _photo(tmp_path / "gray.png", mode="L")
    rgba = _photo(tmp_path / "rgba.png", h=10, w=12, mode="RGBA", seed=1)
    report = infer("vapsr:s_x4", [gray, rgba], tmp_path / "out", tile=None)
    assert report.exit_code == 0 and len(report.written) == 2
    out_gray, out_rgba = Image.open(tmp_path / "out" / "gray.png"), Image.open(tmp_path / "out" / "rgba.png")
    assert out_gray.mode == "L" and out_gray.size == (96, 80)
    assert out_rgba.mode == "RGBA" and out_rgba.size == (48, 40)
    src_alpha = np.asarray(Image.open(rgba))[..., 3].astype(float)
    assert abs(np.asarray(out_rgba)[..., 3].mean() - src_alpha.mean()) < 8  # alpha carried and resized
    assert "random initialisation" in report.notes[0]


def test_infer_16bit_keeps_depth_unless_asked(tmp_path):
    from deploykit.imaging.images import write_image

    src = write_image(tmp_path / "d.png", np.random.default_rng(2).random((3, 12, 16), dtype=np.float32), bit_depth=16)
    infer("vapsr:s_x4", [src], tmp_path / "o16", tile=None)
    infer("vapsr:s_x4", [src], tmp_path / "o8", tile=None, bit_depth=8, out_format="jpeg")
    assert read_image(tmp_path / "o16" / "d.png").bit_depth == 16
    assert read_image(tmp_path / "o8" / "d.jpg").bit_depth == 8


def test_udvd_takes_blur_and_noise(tmp_path):
    src = _photo(tmp_path / "lr.png", h=12, w=14)
    a = infer("udvd", [src], tmp_path / "a", tile=None, blur_sigma="2.0", noise_level=10)
    b = infer("udvd", [src], tmp_path / "b", tile=None, blur_sigma="2.0,1.0,30", noise_level=10)
    assert a.exit_code == b.exit_code == 0 and "anisotropic" in b.notes[-1]
    out_a, out_b = (np.asarray(Image.open(d / "lr.png")) for d in (tmp_path / "a", tmp_path / "b"))
    assert out_a.shape == (24, 28, 3) and not np.array_equal(out_a, out_b)  # the code reaches the model
    with pytest.raises(InputError, match="UDVD"):
        infer("vapsr:s_x4", [src], tmp_path / "c", blur_sigma="2.0")


def test_defocus_takes_left_right_pairs(tmp_path):
    from deploykit.imaging.images import write_image

    rng = np.random.default_rng(4)
    (tmp_path / "L").mkdir()
    (tmp_path / "R").mkdir()
    for name in ("p1.png", "p2.png"):
        write_image(tmp_path / "L" / name, rng.random((3, 16, 20), dtype=np.float32), bit_depth=16)
    write_image(tmp_path / "R" / "p1.png", rng.random((3, 16, 20), dtype=np.float32), bit_depth=16)
    report = infer("mirnetv2:defocus_deblurring", [tmp_path / "L"], tmp_path / "out", right=tmp_path / "R",
                   tile=None)
    ok, bad = report.results
    assert ok.ok and read_image(ok.output).bit_depth == 16 and ok.out_size == (20, 16)
    assert not bad.ok and "p2.png" in bad.error and "right view" in bad.error
    with pytest.raises(InputError, match="dual-pixel"):
        infer("vapsr:s_x4", [tmp_path / "L" / "p1.png"], tmp_path / "x", right=tmp_path / "R")


def test_backend_errors_are_clear(tmp_path):
    spec = get_spec("vapsr:s_x4")
    with pytest.raises(ArtifactError, match=r"run 'deploykit export vapsr:s_x4'.*--onnx"):
        open_runner(spec, "ort", exports=tmp_path)
    for backend in ("ort-cuda", "trt"):
        reason = unavailable_reason(backend)
        if reason is not None:  # the runtime is absent: refused, naming the backend, why, and what to install
            with pytest.raises(BackendUnavailableError) as info:
                open_runner(spec, backend, exports=tmp_path)
            assert str(info.value) == f"backend {backend} is not available here: {reason}"
            assert "deploykit[gpu]" in str(info.value)
        else:  # a GPU machine with the runtime installed gets as far as the missing export
            with pytest.raises((ArtifactError, EngineError)) as info:
                open_runner(spec, backend, exports=tmp_path)
            assert str(tmp_path) in str(info.value) and "deploykit export vapsr:s_x4" in str(info.value) \
                or "deploykit build" in str(info.value)


def test_trt_backend_is_tensorrt_or_refused(tmp_path):
    """--backend trt is TensorRT or nothing: never another runner answering in its place."""
    spec = get_spec("vapsr:s_x4")
    reason = unavailable_reason("trt")
    try:
        runner, _, _ = open_runner(spec, "trt", exports=tmp_path)
    except BackendUnavailableError as exc:
        assert reason is not None, f"TensorRT is here, yet trt was refused: {exc}"
        assert str(exc) == f"backend trt is not available here: {reason}"
        return
    except (ArtifactError, EngineError) as exc:  # TensorRT is here; this folder has no engine
        assert reason is None and ("deploykit build" in str(exc) or "deploykit export" in str(exc)), str(exc)
        return
    from deploykit.runtime.tensorrt import TensorRTBackend

    assert type(runner) is TensorRTBackend, f"--backend trt ran {type(runner).__name__} ({runner.name})"
    assert runner.name == "tensorrt" and runner.device.startswith("cuda:")


def test_ort_on_exported_artifact_matches_torch(tmp_path):
    deploykit.export("vapsr:s_x4", out=tmp_path / "exports", fp16=False, exporter="legacy", simplify_graph=False)
    spec = get_spec("vapsr:s_x4")
    ort_runner, ort_name, notes = open_runner(spec, "ort", exports=tmp_path / "exports")
    torch_runner, torch_name, _ = open_runner(spec, "torch")
    assert "random initialisation" in notes[0]
    feed = random_inputs(spec, (1, 37, 50), seed=5)
    outs = [run_tiled(lambda f, r=r, n=n: r.run(f)[n], feed, spec, tile=24, overlap=8, batch=3)
            for r, n in ((ort_runner, ort_name), (torch_runner, torch_name))]
    assert outs[0].shape == (1, 3, 148, 200)
    assert np.abs(outs[0] - outs[1]).max() <= 1e-4
    src = _photo(tmp_path / "x.png")
    report = infer("vapsr:s_x4", [src], tmp_path / "out", backend="ort", exports=tmp_path / "exports", tile=None)
    assert report.exit_code == 0 and report.backend["backend"] == "ort-cpu"
    assert Image.open(tmp_path / "out" / "x.png").size == (96, 80)


# --- the command ----------------------------------------------------------------------------------------------


def test_cli_corrupt_file_is_one_line_and_the_rest_is_written(cli_run, tmp_path):
    good_a, good_b = _photo(tmp_path / "a.png"), _photo(tmp_path / "b.jpg", seed=1)
    bad = tmp_path / "broken.png"
    bad.write_bytes(good_a.read_bytes()[:120])
    code, out, err = cli_run("infer", "vapsr:s_x4", str(good_a), str(bad), str(good_b),
                             "-o", str(tmp_path / "out"), "--tile", "16", "--overlap", "4", "--batch-tiles", "2")
    assert code == 1
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and str(bad) in lines[0]
    assert "Traceback" not in out + err
    assert (tmp_path / "out" / "a.png").exists() and (tmp_path / "out" / "b.jpg").exists()
    assert not (tmp_path / "out" / "broken.png").exists()
    assert "a.png 24x20 (8-bit RGB)" in out and "96x80" in out and "2 written" in out and "1 failed" in out


@pytest.mark.parametrize("args,message", [
    (("infer", "nosuchnet", "x.png", "-o", "out"), "unknown model 'nosuchnet'"),
    (("infer", "vapsr:s_x4", "x.png", "-o", "out", "--backend", "ort-cuda"), "not available here"),
    (("infer", "vapsr:s_x4", "x.png", "-o", "out", "--backend", "trt"), "not available here"),
    (("infer", "vapsr:s_x4", "x.png", "-o", "out", "--tile", "big"), "bad --tile"),
    (("infer", "vapsr:s_x4", "x.png", "-o", "out", "--bit-depth", "16", "--format", "jpeg"), "--bit-depth 16"),
])
def test_cli_fatal_errors(cli_run, monkeypatch, tmp_path, args, message):
    monkeypatch.chdir(tmp_path)
    _photo(tmp_path / "x.png")
    code, out, err = cli_run(*args)
    kind = args[args.index("--backend") + 1] if "--backend" in args else None
    if "not available" in message and unavailable_reason(kind) is None:
        # the GPU runtime is here: x.png must still fail (no export under tmp_path), never run another backend
        assert code == 2 and "not available" not in err and ("deploykit export" in err or "deploykit build" in err)
        return
    assert code == 2 and message in err
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1 and "Traceback" not in out + err


# --- Y-channel models (PANet CAR) ---------------------------------------------------------------------------------

def test_ycbcr_is_skimages_bt601_studio_range():
    from deploykit.imaging.images import rgb_to_ycbcr, ycbcr_to_rgb

    colours = np.array([[1, 1, 1], [0, 0, 0], [1, 0, 0], [0.5, 0.5, 0.5]], np.float32).T[:, :, None]  # [3, 4, 1]
    ycc = rgb_to_ycbcr(colours)[:, :, 0].T * 255
    np.testing.assert_allclose(ycc, [[235, 128, 128], [16, 128, 128], [81.481, 90.203, 240.0], [125.5, 128, 128]],
                               atol=1e-4)
    rgb = np.random.default_rng(0).random((3, 9, 7)).astype(np.float32)
    assert np.abs(ycbcr_to_rgb(rgb_to_ycbcr(rgb)) - rgb).max() < 1e-6


def test_y_channel_model_feed_and_output_keep_the_colour(tmp_path):
    """load_feed gives a Y-channel model the picture's luma; write_output puts the picture's Cb/Cr back."""
    from deploykit.imaging.images import rgb_to_ycbcr
    from deploykit.infer.run import Job, load_feed, write_output

    rng = np.random.default_rng(3)
    rgb = np.clip(0.5 + 0.08 * rng.standard_normal((20, 24, 3)), 0, 1)  # mildly coloured: no channel clips
    Image.fromarray((rgb * 255).round().astype(np.uint8)).save(tmp_path / "c.png")
    job = Job(tmp_path / "c.png", tmp_path / "out.png")
    feed, picture = load_feed(get_spec("panet:car"), job, {})
    y = feed["image"]
    assert y.shape == (1, 1, 20, 24) and y.dtype == np.float32
    np.testing.assert_allclose(y[0, 0], rgb_to_ycbcr(picture.rgb)[0], atol=1e-6)
    write_output(job, picture, y + 0.02, bit_depth=None, out_format=None, quality=95)  # "restored": 5 levels brighter
    out = rgb_to_ycbcr(np.asarray(Image.open(job.output), np.float32).transpose(2, 0, 1) / 255)
    src = rgb_to_ycbcr(picture.rgb)
    assert np.abs(out[0] - (src[0] + 0.02)).max() < 1.5 / 255
    assert np.abs(out[1:] - src[1:]).max() < 2 / 255


def test_y_channel_model_end_to_end_colour_and_gray(tmp_path):
    colour, gray = _photo(tmp_path / "c.png", h=40, w=48), _photo(tmp_path / "g.png", h=40, w=48, mode="L")
    report = infer("panet:car", [colour, gray], tmp_path / "out", tile=None)
    assert report.exit_code == 0, report
    out_c, out_g = Image.open(tmp_path / "out" / "c.png"), Image.open(tmp_path / "out" / "g.png")
    assert out_c.size == out_g.size == (48, 40) and out_c.mode == "RGB" and out_g.mode == "L"


def test_auto_tile_measures_memory_once_per_process(tmp_path, monkeypatch):
    """A second infer() of the same model and backend reuses the first measurement (after large runs the
    allocator's reuse would make a new one understate the need)."""
    import deploykit.infer.restore as infer_mod
    from deploykit.imaging.tiling import MemoryEstimate

    calls = []

    def fake_measure(run_at, contract, **_kw):
        calls.append(contract)
        return MemoryEstimate(1024.0, 0.0, "test")

    monkeypatch.setattr(infer_mod, "measure_memory", fake_measure)
    monkeypatch.setattr(infer_mod, "_MEASURED", {})
    monkeypatch.setattr(infer_mod, "fits_whole", lambda *a, **k: False)  # a small test image must still measure
    src = _photo(tmp_path / "a.png")
    for out in ("o1", "o2"):
        assert infer("vapsr:s_x4", [src], tmp_path / out, tile="auto").exit_code == 0
    assert len(calls) == 1
