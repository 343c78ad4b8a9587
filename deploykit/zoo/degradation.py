"""UDVD / SRMD degradation inputs: Gaussian blur kernels, a deterministic PCA basis, the code and noise maps.

SRMD (Zhang et al., CVPR 2018) and UDVD (Xu et al., CVPR 2020) tell the network which degradation to undo with
two extra inputs at the low-resolution size: the blur kernel, flattened (15 x 15 = 225 values) and projected onto
a 15-dimensional PCA basis learnt from many Gaussian kernels, and the noise standard deviation; both are
stretched into constant maps. Neither paper's basis matrix ships with UDVD (it has no official weights), so the
basis is generated here, deterministically, on first use and cached in memory:

- 8192 kernels of 15 x 15 drawn with ``numpy.random.default_rng(PCA_SEED)``: the first half isotropic with
  sigma ~ U(0.2, 4.0), the second half anisotropic with sigma_x, sigma_y ~ U(0.2, 4.0) and theta ~ U(0, 180)
  degrees (the SRMD/UDVD training ranges for x2..x4 blur);
- each kernel is the Gaussian ``exp(-1/2 p^T S^-1 p)`` on the integer grid centred on pixel (7, 7), with
  ``S = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T``, normalised to sum 1;
- PCA: ``mean`` of the 8192 flattened kernels, the top 15 eigenvectors of the centred scatter matrix
  (``numpy.linalg.eigh`` of X^T X, 225 x 225: the right singular vectors of X), each signed so its
  largest-magnitude entry is positive (eigenvector signs are arbitrary).

The code of a kernel ``k`` is ``components @ (vec(k) - mean)`` (15 values): all zeros means the mean kernel. This
is the convention ``deploykit.zoo.sample_inputs`` and the FP16 benchmark use. The kernel map is [1, 15, 1, 1] and the noise
map [1, 1, 1, 1] = sigma / 255 (sigma on the 0..255 scale); the tiler broadcasts both to every tile.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from deploykit.errors import InputError
from deploykit.zoo.spec import ModelSpec

KERNEL_SIZE = 15
CODE_DIM = 15
PCA_SEED = 200406965  # UDVD's arXiv id, 2004.06965
PCA_SAMPLES = 8192
SIGMA_RANGE = (0.2, 4.0)
DEFAULT_BLUR = 0.2  # the sharp end of the SRMD/UDVD kernel range: "no extra blur"
DEFAULT_NOISE = 0.0


@dataclass(frozen=True)
class Blur:
    """A Gaussian blur: ``sigma_x`` along the axis at ``theta_deg`` (counter-clockwise from the horizontal, as
    displayed), ``sigma_y`` across it. Isotropic when the two sigmas are equal."""

    sigma_x: float
    sigma_y: float
    theta_deg: float = 0.0

    @property
    def isotropic(self) -> bool:
        return self.sigma_x == self.sigma_y

    def describe(self) -> str:
        if self.isotropic:
            return f"isotropic Gaussian sigma {self.sigma_x:g}"
        return f"anisotropic Gaussian sigma_x {self.sigma_x:g}, sigma_y {self.sigma_y:g}, theta {self.theta_deg:g} deg"


def parse_blur(spec: str | float | Blur) -> Blur:
    """``"2.0"`` (isotropic), ``"2.0,1.0"`` or ``"2.0,1.0,30"`` (sigma_x, sigma_y, theta in degrees)."""
    if isinstance(spec, Blur):
        blur = spec
    elif isinstance(spec, (int, float)):
        blur = Blur(float(spec), float(spec))
    else:
        parts = [p.strip() for p in str(spec).split(",")]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            values = []
        if not 1 <= len(values) <= 3:
            raise InputError(f"bad --blur-sigma '{spec}': use SIGMA (isotropic) or SIGMA_X,SIGMA_Y[,THETA_DEG]")
        blur = Blur(values[0], values[1] if len(values) > 1 else values[0], values[2] if len(values) > 2 else 0.0)
    for value in (blur.sigma_x, blur.sigma_y, blur.theta_deg):
        if not math.isfinite(value):
            raise InputError(f"bad blur {blur}: values must be finite")
    if blur.sigma_x <= 0 or blur.sigma_y <= 0:
        raise InputError(f"bad blur sigma ({blur.sigma_x:g}, {blur.sigma_y:g}): sigmas must be > 0")
    return blur


def _gaussian_kernels(sigma_x: np.ndarray, sigma_y: np.ndarray, theta_deg: np.ndarray,
                      size: int = KERNEL_SIZE) -> np.ndarray:
    """Batched normalised Gaussians [N, size, size]: ``exp(-(u^2/sx^2 + v^2/sy^2)/2)`` with (u, v) the pixel
    offset rotated by theta (x to the right, y up as displayed)."""
    theta = np.radians(np.asarray(theta_deg, np.float64))[:, None, None]
    c = (size - 1) / 2
    cols, rows = np.meshgrid(np.arange(size) - c, np.arange(size) - c)
    x, y = cols[None], -rows[None]
    u = x * np.cos(theta) + y * np.sin(theta)
    v = -x * np.sin(theta) + y * np.cos(theta)
    sx = np.asarray(sigma_x, np.float64)[:, None, None]
    sy = np.asarray(sigma_y, np.float64)[:, None, None]
    k = np.exp(-0.5 * (u ** 2 / sx ** 2 + v ** 2 / sy ** 2))
    return k / k.sum(axis=(1, 2), keepdims=True)


def gaussian_kernel(sigma_x: float, sigma_y: float | None = None, theta_deg: float = 0.0,
                    size: int = KERNEL_SIZE) -> np.ndarray:
    """A normalised ``size x size`` Gaussian kernel (float64); anisotropic when ``sigma_y`` differs."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    return _gaussian_kernels(np.array([sigma_x]), np.array([sigma_y]), np.array([theta_deg]), size)[0]


@dataclass(frozen=True)
class PcaBasis:
    mean: np.ndarray  # [225]
    components: np.ndarray  # [15, 225]
    explained: np.ndarray  # [15] fraction of variance per component
    seed: int
    samples: int

    def digest(self) -> str:
        """Short hash of the basis rounded to 1e-9 (equal on every machine that reproduces it)."""
        data = np.round(np.concatenate([self.mean, self.components.ravel()]), 9).astype(np.float64)
        return hashlib.sha256(data.tobytes()).hexdigest()[:16]


@lru_cache(maxsize=4)
def pca_basis(seed: int = PCA_SEED, samples: int = PCA_SAMPLES, dim: int = CODE_DIM) -> PcaBasis:
    """The deterministic PCA basis described in the module docstring (generated once per process)."""
    rng = np.random.default_rng(seed)
    lo, hi = SIGMA_RANGE
    half = samples // 2
    iso = rng.uniform(lo, hi, half)
    aniso = rng.uniform(lo, hi, (samples - half, 2))
    theta = rng.uniform(0.0, 180.0, samples - half)
    kernels = np.concatenate([_gaussian_kernels(iso, iso, np.zeros(half)),
                              _gaussian_kernels(aniso[:, 0], aniso[:, 1], theta)])
    data = kernels.reshape(samples, -1)
    mean = data.mean(axis=0)
    centred = data - mean
    eigval, eigvec = np.linalg.eigh(centred.T @ centred)  # ascending; = squared singular values / vectors
    order = np.argsort(eigval)[::-1][:dim]
    comps = eigvec[:, order].T
    signs = np.sign(comps[np.arange(dim), np.abs(comps).argmax(axis=1)])
    comps = comps * signs[:, None]
    explained = eigval[order] / eigval.sum()
    return PcaBasis(mean, comps, explained, seed, samples)


def kernel_code(kernel: np.ndarray, basis: PcaBasis | None = None) -> np.ndarray:
    """The 15-value PCA code of a 15 x 15 kernel: ``components @ (vec(k) - mean)`` (float32)."""
    basis = basis or pca_basis()
    kernel = np.asarray(kernel, np.float64)
    if kernel.shape != (KERNEL_SIZE, KERNEL_SIZE):
        raise InputError(f"blur kernels are {KERNEL_SIZE}x{KERNEL_SIZE}, got {kernel.shape}")
    return (basis.components @ (kernel.ravel() - basis.mean)).astype(np.float32)


def blur_code(blur: str | float | Blur) -> np.ndarray:
    b = parse_blur(blur)
    return kernel_code(gaussian_kernel(b.sigma_x, b.sigma_y, b.theta_deg))


def noise_map_value(noise_level: float) -> float:
    """sigma on the 0..255 scale -> the value of UDVD's noise map (sigma / 255)."""
    if not math.isfinite(noise_level) or not 0 <= noise_level <= 255:
        raise InputError(f"bad --noise-level {noise_level:g}: use a sigma between 0 and 255 (0..255 image scale)")
    return float(noise_level) / 255.0


def degradation_maps(blur: str | float | Blur, noise_level: float, *, kernel_name: str = "kernel",
                     noise_name: str = "noise", height: int = 1, width: int = 1) -> dict[str, np.ndarray]:
    """Constant maps for UDVD's extra inputs: {kernel: [1, 15, h, w], noise: [1, 1, h, w]} (h = w = 1 by default:
    ``deploykit.imaging.tiling`` broadcasts them to each tile, so no full-size map is ever allocated)."""
    code = blur_code(blur)
    kernel = np.broadcast_to(code.reshape(1, CODE_DIM, 1, 1), (1, CODE_DIM, height, width))
    noise = np.full((1, 1, height, width), noise_map_value(noise_level), np.float32)
    return {kernel_name: np.ascontiguousarray(kernel, np.float32), noise_name: noise}


def extra_inputs(spec: ModelSpec, blur: Blur | None, noise_level: float | None) -> dict[str, np.ndarray]:
    """The model's extra inputs as ``infer`` and ``parity`` build them: UDVD's kernel code and noise maps
    (per-image constants [1, C, 1, 1], ``DEFAULT_BLUR`` / ``DEFAULT_NOISE`` when not given), {} for one-input
    models."""
    names = [t.name for t in spec.inputs[1:]]
    if not names:
        return {}
    if set(names) != {"kernel", "noise"}:
        raise InputError(f"{spec.name} takes extra inputs {names} that deploykit cannot build from images")
    return degradation_maps(blur if blur is not None else DEFAULT_BLUR,
                            DEFAULT_NOISE if noise_level is None else noise_level)
