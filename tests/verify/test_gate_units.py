"""The parity gate's pieces without an export: figures against the comparator, tile runs covering each output
pixel once, image fitting, the extra inputs infer and parity share, and the report writers' escaping."""

from __future__ import annotations

import numpy as np
import pytest

from deploykit.imaging.tiling import Contract
from deploykit.verify.figures import Figures, Sampler, Tolerance
from deploykit.verify.parity import compare
from deploykit.verify.plan import case_runs, parse_tile
from deploykit.verify.sources import fit, image_cases, random_cases
from deploykit.zoo.registry import get_spec


def test_figures_match_the_comparator_on_a_whole_image():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 1, (2, 3, 40, 56)).astype(np.float32)
    cand = ref + rng.normal(0, 1e-3, ref.shape).astype(np.float32)
    cand[1, 2, 30, 50] += 0.25  # one bad pixel: the worst block must contain it
    f = Figures((40, 56), step=4)
    f.add(ref, cand)
    r = compare(ref, cand, backend="x", precision="fp16", output="o")
    assert f.max_abs == pytest.approx(r.max_abs) and f.mean_abs == pytest.approx(r.mean_abs)
    assert f.psnr_db == pytest.approx(r.psnr_db) and f.nonfinite == 0
    assert f.preview.shape == (10, 14) and f.preview[30 // 4, 50 // 4] == pytest.approx(0.25, abs=0.01)
    assert f.passed(Tolerance(None, 40.0)) and not f.passed(Tolerance(1e-2, None))


def test_worst_region_and_nonfinite():
    ref = np.zeros((1, 3, 64, 96), np.float32)
    cand = ref.copy()
    cand[0, :, 40:44, 70:74] = 0.1
    f = Figures((64, 96))
    f.add(ref[:, :, :32], cand[:, :, :32], 0, 0)
    f.add(ref[:, :, 32:], cand[:, :, 32:], 32, 0)  # the same image in two pieces
    assert f.worst.box == (32, 64, 32, 32) and f.count == ref.size
    assert float(np.abs(f.worst.candidate - f.worst.reference).max()) == pytest.approx(0.1)
    cand[0, 0, 0, 0] = np.nan
    g = Figures((64, 96))
    g.add(ref, cand)
    assert g.nonfinite == 1 and not g.passed(Tolerance(1.0, None))


def test_tiles_cover_every_output_pixel_once():
    c = Contract(multiple_of=8, scale=2)
    feed = {"image": np.random.default_rng(1).uniform(0, 1, (1, 3, 100, 130)).astype(np.float32)}
    runs, text = case_runs(feed, (100, 130), c, 48)
    assert text.startswith("tiled:") and len(runs) > 4
    cover = np.zeros((200, 260), int)
    for run in runs:
        y, x, h, w = run.window
        th, tw = run.feed["image"].shape[2:]
        assert th <= 48 and tw <= 48 and th % 8 == tw % 8 == 0 and y % 16 == 0 and x % 16 == 0
        cover[y:y + h, x:x + w] += 1
    assert (cover == 1).all()
    whole, text = case_runs(feed, (100, 130), c, None)
    assert len(whole) == 1 and text == "whole (padded to 136x104)" and whole[0].window == (0, 0, 200, 260)
    assert parse_tile("none") is None and parse_tile("256") == 256
    with pytest.raises(Exception, match="bad --tile"):
        parse_tile("big")


def test_fit_scales_to_cover_and_cuts_the_centre():
    yy, xx = np.mgrid[0:40, 0:80].astype(np.float32)
    rgb = np.stack([yy / 40, xx / 80, xx * 0]).astype(np.float32)
    out, note = fit(rgb, (20, 20))
    assert out.shape == (3, 20, 20) and "scaled 0.5x" in note and "centre" in note
    assert abs(float(out[1].mean()) - 0.5) < 0.02  # the middle columns
    same, note = fit(rgb, (40, 80))
    assert np.array_equal(same, rgb) and note == "native size"


def test_udvd_gets_the_maps_infer_builds(tmp_path):
    """One home for the extra inputs: infer and the gate both use zoo.degradation.extra_inputs."""
    from deploykit.imaging.images import write_image
    from deploykit.infer import run as infer_run
    from deploykit.zoo import degradation

    assert infer_run.extra_inputs is degradation.extra_inputs
    spec = get_spec("udvd:x2")
    path = tmp_path / "a.png"
    write_image(path, np.full((3, 12, 16), 0.5, np.float32))
    (case,) = image_cases(spec, [path], [(8, 8)], batch=2)
    expected = degradation.degradation_maps(degradation.DEFAULT_BLUR, degradation.DEFAULT_NOISE)
    assert case.feed["image"].shape == (2, 3, 8, 8)
    for name in ("kernel", "noise"):
        assert case.feed[name].shape == (2, *expected[name].shape[1:])
        assert np.array_equal(case.feed[name][1], expected[name][0])


def test_batch_items_are_flips_and_random_cases_are_seeded(tmp_path):
    from deploykit.imaging.images import write_image

    spec = get_spec("vapsr:s_x4")
    rgb = np.random.default_rng(2).uniform(0, 1, (3, 10, 12)).astype(np.float32)
    write_image(tmp_path / "b.png", rgb, bit_depth=16)
    (case,) = image_cases(spec, [tmp_path / "b.png"], None, batch=3)
    x = case.feed["image"]
    assert case.res == (10, 12) and np.allclose(x[1], x[0][:, :, ::-1]) and np.allclose(x[2], x[0][:, ::-1, :])
    a, b = random_cases(spec, [(8, 8)], 1, seed=5), random_cases(spec, [(8, 8)], 1, seed=5)
    assert np.array_equal(a[0].feed["image"], b[0].feed["image"]) and a[0].source == "random (seed 5)"


def test_sampler_places_pieces():
    s = Sampler((8, 8), 2)
    s.put(np.ones((1, 4, 8)), 0, 0)
    s.put(np.full((1, 4, 8), 2.0), 4, 0)
    assert s.image.shape == (1, 4, 4) and (s.image[0, :2] == 1).all() and (s.image[0, 2:] == 2).all()
