"""Numerical parity of a backend against PyTorch FP32 (reused by export, bench and engines).

Per output: max abs, mean abs, PSNR (peak 1.0), NaN/Inf count, and pass/fail against the tolerance for the
precision: FP32 max abs <= 1e-4, FP16 PSNR >= the model's floor (40 dB unless its spec explains otherwise).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from deploykit.runtime.base import Backend
from deploykit.zoo.sample_inputs import Shape, random_inputs
from deploykit.zoo.spec import ModelSpec

FP32_MAX_ABS = 1e-4
PSNR_CAP_DB = 150.0  # reported for identical outputs (JSON has no infinity)


@dataclass
class ParityRecord:
    backend: str
    precision: str
    output: str
    shape: list[int]
    max_abs: float
    mean_abs: float
    psnr_db: float
    nonfinite: int
    tolerance: str
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"{self.backend}/{self.precision} {self.output} {'x'.join(map(str, self.shape))}: "
                f"max abs {self.max_abs:.2e}, PSNR {self.psnr_db:.1f} dB, non-finite {self.nonfinite} "
                f"({'pass' if self.passed else 'FAIL'}, {self.tolerance})")


def psnr(reference: np.ndarray, candidate: np.ndarray, peak: float = 1.0) -> float:
    mse = float(np.mean((reference.astype(np.float64) - candidate.astype(np.float64)) ** 2))
    if mse == 0.0:
        return PSNR_CAP_DB
    if not math.isfinite(mse):
        return 0.0
    return min(PSNR_CAP_DB, 10.0 * math.log10(peak * peak / mse))


def compare(reference: np.ndarray, candidate: np.ndarray, *, backend: str, precision: str, output: str,
            min_psnr_db: float = 40.0, fp32_max_abs: float = FP32_MAX_ABS) -> ParityRecord:
    if reference.shape != candidate.shape:
        return ParityRecord(backend, precision, output, list(candidate.shape), math.inf, math.inf, 0.0, 0,
                            f"shape {list(reference.shape)} expected", False)
    nonfinite = int(np.size(candidate) - np.count_nonzero(np.isfinite(candidate)))
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    finite = diff[np.isfinite(diff)]
    max_abs = float(finite.max()) if finite.size else math.inf
    mean_abs = float(finite.mean()) if finite.size else math.inf
    value = psnr(reference, np.nan_to_num(candidate, nan=0.0, posinf=1e4, neginf=-1e4))
    if precision == "fp32":
        tolerance, passed = f"max abs <= {fp32_max_abs:g}", max_abs <= fp32_max_abs
    else:
        tolerance, passed = f"PSNR >= {min_psnr_db:g} dB", value >= min_psnr_db
    return ParityRecord(backend, precision, output, list(candidate.shape), max_abs, mean_abs, value, nonfinite,
                        tolerance, passed and nonfinite == 0)


def check_parity(spec: ModelSpec, reference: Backend, candidate: Backend, shapes: list[Shape], *,
                 seed: int = 1, outputs: list[str] | None = None) -> list[ParityRecord]:
    """Run both backends on random inputs at each shape; compare every candidate output by name."""
    records = []
    for k, shape in enumerate(shapes):
        feed = random_inputs(spec, shape, seed=seed + k)
        ref = reference.run(feed)
        out = candidate.run(feed)
        for name in outputs or candidate.output_names:
            records.append(compare(ref[name], out[name], backend=candidate.name, precision=candidate.precision,
                                   output=name, min_psnr_db=spec.fp16.min_psnr_db))
    return records
