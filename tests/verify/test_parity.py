"""The parity comparator against hand-computed figures: max abs, mean abs, PSNR, NaN/Inf, tolerance edges."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deploykit.runtime.base import Backend
from deploykit.verify.parity import (
    FP32_MAX_ABS,
    PSNR_CAP_DB,
    ParityRecord,
    check_parity,
    compare,
    psnr,
)
from deploykit.zoo.registry import get_spec

REF = np.array([0.0, 0.5, 1.0, 0.25], np.float64)
CAND = np.array([0.1, 0.5, 0.8, 0.25], np.float64)  # errors 0.1, 0, 0.2, 0
HAND_PSNR = 10 * math.log10(1 / ((0.1 ** 2 + 0.2 ** 2) / 4))  # mse 0.0125 -> 19.0309 dB


def _cmp(ref, cand, precision="fp32", **kw) -> ParityRecord:
    return compare(np.asarray(ref), np.asarray(cand), backend="b", precision=precision, output="out", **kw)


def test_figures_match_a_hand_computation():
    r = _cmp(REF, CAND, precision="fp16")
    assert r.max_abs == pytest.approx(0.2, abs=1e-15)
    assert r.mean_abs == pytest.approx(0.075, abs=1e-15)
    assert r.psnr_db == pytest.approx(HAND_PSNR, abs=1e-9) and round(r.psnr_db, 4) == 19.0309
    assert r.nonfinite == 0 and r.shape == [4] and not r.passed  # 19 dB < 40 dB
    assert (r.backend, r.precision, r.output, r.tolerance) == ("b", "fp16", "out", "PSNR >= 40 dB")
    assert psnr(REF, CAND) == pytest.approx(HAND_PSNR, abs=1e-9)
    assert psnr(REF * 255, CAND * 255, peak=255.0) == pytest.approx(HAND_PSNR, abs=1e-9)


def test_errors_are_symmetric_and_signless():
    assert _cmp(CAND, REF).max_abs == _cmp(REF, CAND).max_abs == _cmp(REF, 2 * REF - CAND).max_abs
    assert _cmp(REF, REF - 0.3).mean_abs == pytest.approx(0.3)


def test_float32_inputs_are_compared_in_float64():
    ref = np.full(8, 1.0, np.float32)
    cand = np.full(8, np.float32(1.0) + np.float32(2.0 ** -23), np.float32)  # one float32 ulp apart
    assert _cmp(ref, cand).max_abs == 2.0 ** -23 and _cmp(ref, cand).mean_abs == 2.0 ** -23


@pytest.mark.parametrize("limit", [FP32_MAX_ABS, 2.5e-3])
def test_fp32_tolerance_edge_is_inclusive(limit):
    ref = np.zeros((1, 3, 2, 2))
    at = ref.copy()
    at[0, 1, 1, 0] = limit
    beyond = ref.copy()
    beyond[0, 1, 1, 0] = limit * (1 + 1e-9)
    kw = {} if limit == FP32_MAX_ABS else {"fp32_max_abs": limit}
    r = _cmp(ref, at, **kw)
    assert r.max_abs == limit and r.passed and r.tolerance == f"max abs <= {limit:g}"
    assert r.mean_abs == pytest.approx(limit / 12)
    assert not _cmp(ref, beyond, **kw).passed
    assert not _cmp(ref, -beyond, **kw).passed  # a negative error counts the same


def test_fp32_ignores_psnr_and_fp16_ignores_max_abs():
    ref = np.zeros(10000)
    one_spike = ref.copy()
    one_spike[0] = 0.5  # PSNR 46 dB (fp16 passes), max abs 0.5 (fp32 fails)
    assert _cmp(ref, one_spike, precision="fp16").passed
    assert not _cmp(ref, one_spike, precision="fp32").passed
    small_everywhere = ref + 9e-5  # max abs below 1e-4 (fp32 passes), PSNR 81 dB
    assert _cmp(ref, small_everywhere, precision="fp32").passed
    assert not _cmp(ref, small_everywhere, precision="fp16", min_psnr_db=90).passed


def test_fp16_tolerance_edge_is_inclusive():
    value = psnr(REF, CAND)
    assert _cmp(REF, CAND, precision="fp16", min_psnr_db=value).passed
    assert not _cmp(REF, CAND, precision="fp16", min_psnr_db=math.nextafter(value, math.inf)).passed
    r = _cmp(REF, CAND, precision="fp16", min_psnr_db=19.0)
    assert r.passed and r.tolerance == "PSNR >= 19 dB"


def test_identical_outputs_report_the_cap_and_huge_psnr_is_capped():
    r = _cmp(REF, REF.copy(), precision="fp16")
    assert r.psnr_db == PSNR_CAP_DB == 150.0 and r.max_abs == 0.0 and r.mean_abs == 0.0 and r.passed
    tiny = REF + 1e-12  # 240 dB in real arithmetic
    assert psnr(REF, tiny) == PSNR_CAP_DB
    just_below = REF + 10 ** (-149 / 20)  # 149 dB: not capped
    assert psnr(REF, just_below) == pytest.approx(149.0, abs=1e-6)


def test_nan_and_inf_are_counted_and_fail_the_check():
    ref = np.zeros(8)
    cand = ref.copy()
    cand[1], cand[4], cand[6] = np.nan, np.inf, -np.inf
    cand[2] = 3e-5
    for precision in ("fp32", "fp16"):
        r = _cmp(ref, cand, precision=precision, min_psnr_db=0.0)
        assert r.nonfinite == 3 and not r.passed
        assert r.max_abs == pytest.approx(3e-5)  # over the finite errors only
        assert r.mean_abs == pytest.approx(3e-5 / 5)
    # NaN counts as 0, +/-Inf as +/-1e4 in the PSNR: (1e8 + 1e8 + 9e-10) / 8
    assert _cmp(ref, cand).psnr_db == pytest.approx(10 * math.log10(8 / (2e8 + 9e-10)))
    all_nan = np.full(4, np.nan)
    r = _cmp(np.zeros(4), all_nan)
    assert r.nonfinite == 4 and r.max_abs == math.inf and r.mean_abs == math.inf and not r.passed
    assert psnr(np.zeros(2), np.array([np.inf, 0.0])) == 0.0  # an infinite MSE has no PSNR


def test_nonfinite_reference_values_are_not_counted_against_the_candidate():
    ref = np.array([np.nan, 0.0, 0.0])
    cand = np.array([0.0, 0.0, 1e-5])
    r = _cmp(ref, cand)
    assert r.nonfinite == 0 and r.max_abs == pytest.approx(1e-5)


def test_shape_mismatch_is_refused():
    r = _cmp(np.zeros((1, 3, 4, 4)), np.zeros((1, 3, 4, 5)))
    assert not r.passed and r.shape == [1, 3, 4, 5] and r.tolerance == "shape [1, 3, 4, 4] expected"
    assert r.max_abs == math.inf and r.mean_abs == math.inf and r.psnr_db == 0.0 and r.nonfinite == 0
    assert not _cmp(np.zeros(4), np.zeros((1, 4)), precision="fp16").passed  # same size, other shape


def test_record_summary_and_dict():
    r = _cmp(REF, CAND, precision="fp16")
    assert r.summary() == "b/fp16 out 4: max abs 2.00e-01, PSNR 19.0 dB, non-finite 0 (FAIL, PSNR >= 40 dB)"
    assert r.to_dict()["psnr_db"] == r.psnr_db and set(r.to_dict()) == {
        "backend", "precision", "output", "shape", "max_abs", "mean_abs", "psnr_db", "nonfinite", "tolerance",
        "passed"}
    ok = _cmp(np.zeros((2, 3)), np.zeros((2, 3)))
    assert ok.summary() == "b/fp32 out 2x3: max abs 0.00e+00, PSNR 150.0 dB, non-finite 0 (pass, max abs <= 0.0001)"


class _Fixed(Backend):
    """A runner that returns ``image * gain + offset`` under two output names."""

    def __init__(self, name, precision, gain=1.0, offset=0.0):
        self.name, self.precision, self.gain, self.offset, self.feeds = name, precision, gain, offset, []

    input_names = property(lambda self: ["image"])
    output_names = property(lambda self: ["output", "extra"])

    def run(self, feed):
        self.feeds.append(feed)
        y = feed["image"] * self.gain + self.offset
        return {"output": y, "extra": y + 1}


def test_check_parity_runs_both_on_the_same_inputs_per_shape():
    spec = get_spec("srresnet:x2")
    ref, cand = _Fixed("torch", "fp32"), _Fixed("ort-cpu", "fp16", offset=0.01)
    records = check_parity(spec, ref, cand, [(1, 8, 12), (2, 6, 10)], seed=3)
    assert [(r.output, r.shape) for r in records] == [("output", [1, 3, 8, 12]), ("extra", [1, 3, 8, 12]),
                                                      ("output", [2, 3, 6, 10]), ("extra", [2, 3, 6, 10])]
    assert all(r.backend == "ort-cpu" and r.precision == "fp16" for r in records)
    assert all(r.max_abs == pytest.approx(0.01, abs=3e-7) for r in records)
    assert all(r.psnr_db == pytest.approx(40.0, abs=1e-3) for r in records)
    assert all(r.tolerance == f"PSNR >= {spec.fp16.min_psnr_db:g} dB" for r in records)
    for a, b in zip(ref.feeds, cand.feeds):
        np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(ref.feeds[0]["image"][0, :, :6, :10], ref.feeds[1]["image"][0])  # seed + k per shape
    only = check_parity(spec, ref, _Fixed("x", "fp32"), [(1, 4, 4)], outputs=["extra"])
    assert [r.output for r in only] == ["extra"] and only[0].passed and only[0].max_abs == 0.0


def test_infinities_enter_the_psnr_clamped_to_plus_minus_1e4():
    ref = np.array([-5e3, 5e3, 0.0, 0.0])
    r = _cmp(ref, np.array([-np.inf, np.inf, 0.0, 0.0]), precision="fp16", min_psnr_db=-1e9)
    assert r.psnr_db == pytest.approx(10 * math.log10(4 / (2 * 5e3 ** 2)))  # each 5e3 away from its clamp
    assert r.nonfinite == 2 and not r.passed  # whatever the PSNR floor
    only_nan = _cmp(np.full(4, 0.25), np.array([np.nan, 0.25, 0.25, 0.25]), precision="fp16")
    assert only_nan.psnr_db == pytest.approx(10 * math.log10(4 / 0.25 ** 2))  # NaN counts as 0


def test_shape_mismatch_record_keeps_who_and_what():
    r = compare(np.zeros((2, 2)), np.zeros((2, 3)), backend="ort-cpu", precision="fp16", output="image")
    assert (r.backend, r.precision, r.output) == ("ort-cpu", "fp16", "image") and r.passed is False


def test_check_parity_seeds_and_uses_the_models_psnr_floor():
    import dataclasses

    from deploykit.zoo.sample_inputs import random_inputs
    from deploykit.zoo.spec import Fp16Policy

    spec = dataclasses.replace(get_spec("srresnet:x2"), fp16=Fp16Policy(min_psnr_db=35.0))
    shapes = [(1, 8, 12), (1, 6, 10)]
    ref, cand = _Fixed("torch", "fp32"), _Fixed("ort-cpu", "fp16", offset=0.015)  # 36.5 dB
    records = check_parity(spec, ref, cand, shapes, outputs=["output"])
    for k, shape in enumerate(shapes):  # default seed 1, one more per shape
        np.testing.assert_array_equal(ref.feeds[k]["image"], random_inputs(spec, shape, seed=1 + k)["image"])
    assert all(r.passed and r.tolerance == "PSNR >= 35 dB" for r in records)
    assert all(36 < r.psnr_db < 37 for r in records)
    ref2 = _Fixed("torch", "fp32")
    check_parity(spec, ref2, _Fixed("x", "fp32"), shapes, seed=7, outputs=["output"])
    for k, shape in enumerate(shapes):
        np.testing.assert_array_equal(ref2.feeds[k]["image"], random_inputs(spec, shape, seed=7 + k)["image"])
