"""``infer``: image files -> padded or tiled run on a backend -> image files, one result per file.

The library entry is :func:`infer`; ``deploykit infer`` (``deploykit.cli_infer``) only parses options and prints.
Building the runner (:func:`open_backend`), running one picture (:func:`restore`), and file handling (reading,
writing, per-file errors) are separate, so benchmarks and tests can reuse each piece.

Failures that concern one file (unreadable, corrupt, truncated, unsupported, unwritable, a dual-pixel pair of
different sizes, a runtime error on that image) become that file's ``FileResult.error`` and the batch goes on;
failures that concern every file (unknown model, bad weights, missing artifact, unavailable backend, bad options)
raise before any file is touched.
"""

from __future__ import annotations

import glob
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from deploykit.backends.base import Backend
from deploykit.chop import chop_settings, forward_chop
from deploykit.degradation import Blur, degradation_maps, parse_blur
from deploykit.errors import ArtifactError, BackendUnavailableError, DeployKitError, InputError
from deploykit.images import (FORMATS, SUFFIX, Picture, read_image, resize_plane, rgb_to_ycbcr, write_image,
                              ycbcr_to_rgb)
from deploykit.tiling import (FALLBACK_BYTES_PER_PIXEL, Contract, MemoryEstimate, auto_tile, available_memory,
                              check_tile, fits_whole, measure_memory, padded_size, plan_tiles, run_tiled)
from deploykit.zoo import ModelSpec, get_spec

BACKENDS = ("torch", "ort", "ort-cuda", "trt")
PRECISIONS = ("fp32", "fp16")
DEFAULT_OVERLAP = 32
DEFAULT_BLUR = 0.2  # the sharp end of the SRMD/UDVD kernel range: "no extra blur"
DEFAULT_NOISE = 0.0


# --- results and progress ------------------------------------------------------------------------------------

@dataclass
class FileResult:
    """What happened to one input file."""

    input: Path
    output: Path | None = None
    ok: bool = False
    error: str | None = None
    right: Path | None = None
    in_size: tuple[int, int] | None = None  # (width, height)
    out_size: tuple[int, int] | None = None
    in_kind: str = ""
    out_bit_depth: int | None = None
    plan: str = ""
    tiles: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        """One line: sizes in/out, tiling, time (or the error)."""
        if not self.ok:
            error = self.error or "failed"
            return error if str(self.input) in error else f"{self.input}: {error}"
        (wi, hi), (wo, ho) = self.in_size, self.out_size
        return (f"{self.input.name} {wi}x{hi} ({self.in_kind}) -> {self.output} {wo}x{ho} {self.out_bit_depth}-bit, "
                f"{self.plan}, {self.seconds:.2f} s")


@dataclass
class InferReport:
    model: str
    backend: dict
    results: list[FileResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tile: str = ""
    memory_note: str | None = None  # how --tile auto sized tiles (when it measured)

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if not r.ok]

    @property
    def written(self) -> list[FileResult]:
        return [r for r in self.results if r.ok]

    @property
    def exit_code(self) -> int:
        """0 when every file was written, 1 when at least one failed."""
        return 1 if self.failed else 0


class Progress(Protocol):
    def run_started(self, report: "InferReport", files: int) -> None: ...

    def file_started(self, index: int, total: int, path: Path, tiles: int) -> None: ...

    def tile_done(self, done: int, total: int) -> None: ...

    def file_done(self, result: FileResult) -> None: ...


class _Silent:
    def run_started(self, report, files):
        pass

    def file_started(self, index, total, path, tiles):
        pass

    def tile_done(self, done, total):
        pass

    def file_done(self, result):
        pass


# --- inputs --------------------------------------------------------------------------------------------------

@dataclass
class Job:
    """One image to restore: its file, the dual-pixel right view (defocus), and the output path."""

    source: Path
    output: Path
    right: Path | None = None
    error: str | None = None  # known before reading (missing file, collision)


def _has_magic(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def expand_inputs(inputs: list[str | Path], recursive: bool = False) -> list[tuple[Path, Path]]:
    """Files, folders (their PNG/JPEG/TIFF/WebP files; ``recursive`` walks sub-folders) and globs ->
    ``[(file, name relative to the output folder)]`` in order, without duplicates. A name that matches nothing
    stays in the list (its job fails with 'no such file'), so a typo is reported, not skipped."""
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            walk = path.rglob("*") if recursive else path.iterdir()
            files = sorted(f for f in walk if f.is_file() and f.suffix.lower() in FORMATS)
            found += [(f, f.relative_to(path)) for f in files]
        elif path.exists() or not _has_magic(str(item)):
            found.append((path, Path(path.name)))
        else:
            matches = sorted(Path(m) for m in glob.glob(str(item), recursive=True))
            matches = [m for m in matches if m.is_file()]
            found += [(m, Path(m.name)) for m in matches] or [(path, Path(path.name))]
    seen, unique = set(), []
    for src, rel in found:
        key = src.resolve() if src.exists() else src
        if key not in seen:
            seen.add(key)
            unique.append((src, rel))
    return unique


def _output_suffix(src: Path, out_format: str | None) -> str:
    if out_format:
        return SUFFIX[out_format]
    suffix = src.suffix.lower()
    return src.suffix if suffix in FORMATS else ".png"


def plan_jobs(inputs: list[str | Path], out_dir: Path, *, out_format: str | None = None, right: Path | None = None,
              recursive: bool = False, needs_right: bool = False) -> list[Job]:
    """Expand inputs and decide every output path; collisions and self-overwrites become per-file errors."""
    pairs = expand_inputs(inputs, recursive)
    if not pairs:
        raise InputError(f"no input images found in {', '.join(map(str, inputs)) or '(nothing given)'}")
    jobs, taken = [], {}
    for src, rel in pairs:
        out = out_dir / rel.with_suffix(_output_suffix(src, out_format))
        job = Job(src, out)
        if needs_right:
            job.right, job.error = _right_view(src, right, len(pairs))
        if not src.exists():
            job.error = f"{src}: no such file"
        elif out.resolve() == src.resolve():
            job.error = f"{src}: the output would overwrite the input; choose another output folder (-o)"
        elif out.resolve() in taken:
            job.error = f"{src}: output {out} is also the output of {taken[out.resolve()]}; rename one of them"
        if job.error is None:
            taken[out.resolve()] = src
        jobs.append(job)
    return jobs


def _right_view(left: Path, right: Path | None, count: int) -> tuple[Path | None, str | None]:
    if right is None:
        return None, (f"{left}: the dual-pixel model needs the right view: --right FILE (one input) or "
                      "--right FOLDER (same file names)")
    if right.is_dir():
        candidate = right / left.name
        if not candidate.exists():
            return None, f"{left}: no right view {candidate} (--right FOLDER pairs views by file name)"
        return candidate, None
    if count > 1:
        return None, f"{left}: --right FILE pairs one input; for several inputs give --right FOLDER"
    if not right.exists():
        return None, f"{left}: right view {right}: no such file"
    return right, None


# --- backends ------------------------------------------------------------------------------------------------

def _artifact_path(spec: ModelSpec, precision: str, onnx: Path | None, exports: Path) -> tuple[Path, list[str]]:
    """The ONNX file to run: ``--onnx`` or the manifest's artifact of that precision; notes about its weights."""
    from deploykit.manifest import read_manifest

    if onnx is not None:
        if not Path(onnx).is_file():
            raise ArtifactError(f"ONNX file {onnx} not found")
        return Path(onnx), []
    folder = Path(exports) / spec.family / spec.variant
    fp16 = " (with FP16)" if precision == "fp16" else ""
    hint = f"run 'deploykit export {spec.name}'{fp16} first, or pass --onnx FILE"
    try:
        manifest = read_manifest(folder)
    except ArtifactError as exc:
        raise ArtifactError(f"no exported {spec.name} under {folder} ({exc}); {hint}") from exc
    if manifest.get("model", {}).get("name") != spec.name:
        raise ArtifactError(f"{folder} holds {manifest.get('model', {}).get('name')}, not {spec.name}; {hint}")
    files = [a for a in manifest.get("artifacts", []) if a.get("kind", "onnx") == "onnx"
             and a.get("precision") == precision]
    if not files or not (folder / files[0]["file"]).is_file():
        raise ArtifactError(f"no {precision} ONNX artifact for {spec.name} in {folder}; {hint}")
    notes = []
    if manifest.get("weights", {}).get("source") == "random-init":
        notes.append(f"{files[0]['file']} was exported from a random initialisation: outputs are not meaningful "
                     "images (export with --weights)")
    return folder / files[0]["file"], notes


def _tensorrt_backend(spec: ModelSpec, precision: str, onnx: Path | None, exports: Path) -> Backend:
    """``deploykit.backends.tensorrt.TensorRTBackend`` on the engine recorded in the export's manifest."""
    try:
        from deploykit.backends.tensorrt import TensorRTBackend
        from deploykit.trt_build import import_tensorrt
    except ImportError as exc:
        raise BackendUnavailableError("backend trt is not available here: install deploykit[gpu] / TensorRT "
                                      "(pip install 'deploykit[gpu]' on an NVIDIA GPU machine)") from exc
    try:
        import_tensorrt()
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(f"backend trt is not available here: {exc}") from exc
    if onnx is not None:
        raise InputError("--onnx is for the ort backends; trt runs the engine recorded in "
                         f"{Path(exports) / spec.family / spec.variant} (built by 'deploykit build')")
    return TensorRTBackend(Path(exports) / spec.family / spec.variant, precision=precision)


def _ort_cuda_backend(path: Path, precision: str) -> Backend:
    try:
        from deploykit.backends.ort_gpu import OrtGpuBackend
    except ImportError:
        from deploykit.backends.ort import OrtBackend

        return OrtBackend(path, device="cuda", precision=precision)
    return OrtGpuBackend(path, provider="cuda", precision=precision)


def open_backend(spec: ModelSpec, backend: str = "torch", *, precision: str = "fp32", weights: Path | None = None,
                 onnx: Path | None = None, exports: Path = Path("exports"), seed: int = 0,
                 unsafe_pickle: bool = False) -> tuple[Backend, str, list[str]]:
    """Build the runner: (backend, name of its image output, notes to show the user)."""
    if backend not in BACKENDS:
        raise InputError(f"unknown backend '{backend}' (use {', '.join(BACKENDS)})")
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}' (use fp32 or fp16)")
    image_out = spec.outputs[spec.image_output].name
    if backend == "torch":
        from deploykit.backends.torch_backend import TorchBackend
        from deploykit.factory import build_model
        from deploykit.forms import ImageOutput

        if onnx is not None:
            raise InputError("--onnx runs with --backend ort or ort-cuda, not torch")
        model, _, _ = build_model(spec, weights, seed=seed, unsafe_pickle=unsafe_pickle)
        notes = [] if weights else [f"no --weights: {spec.name} runs from a seeded random initialisation (seed "
                                    f"{seed}); outputs are not meaningful images"]
        runner = TorchBackend(ImageOutput(model, spec.image_output), [t.name for t in spec.inputs], [image_out],
                              precision=precision)
        return runner, image_out, notes
    if weights is not None:
        raise InputError(f"--weights is for --backend torch; the {backend} backend runs an exported artifact with "
                         f"its weights inside (run 'deploykit export {spec.name} --weights FILE')")
    if backend == "ort-cuda":
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise BackendUnavailableError("backend ort-cuda is not available here: ONNX Runtime has no CUDA provider; "
                                          "install deploykit[gpu] (pip install 'deploykit[gpu]') on an NVIDIA GPU "
                                          "machine")
    if backend == "trt":
        runner, notes = _tensorrt_backend(spec, precision, onnx, exports), []
    else:
        path, notes = _artifact_path(spec, precision, onnx, exports)
        try:
            if backend == "ort-cuda":
                runner = _ort_cuda_backend(path, precision)
            else:
                from deploykit.backends.ort import OrtBackend

                runner = OrtBackend(path, device="cpu", precision=precision)
        except DeployKitError:
            raise
        except Exception as exc:  # onnxruntime's own errors for a broken file
            raise ArtifactError(f"ONNX Runtime cannot load {path}: {' '.join(str(exc).split())[:200]}") from exc
    expected = [t.name for t in spec.inputs]
    if list(runner.input_names) != expected:
        raise ArtifactError(f"{runner.name} takes inputs {runner.input_names}, {spec.name} needs {expected}; "
                            f"re-export it with 'deploykit export {spec.name}'")
    if image_out not in runner.output_names:
        image_out = runner.output_names[0]
    return runner, image_out, notes


# --- one picture ---------------------------------------------------------------------------------------------

@dataclass
class Settings:
    """Everything about how one image is run, resolved from the options."""

    tile: int | str | None = "auto"  # int, "auto" or None (whole image)
    overlap: int = DEFAULT_OVERLAP
    batch: int = 1
    blur: Blur | None = None
    noise_level: float | None = None


def extra_inputs(spec: ModelSpec, blur: Blur | None, noise_level: float | None) -> dict[str, np.ndarray]:
    """UDVD's kernel code and noise maps (per-image constants) or {} for one-input models."""
    names = [t.name for t in spec.inputs[1:]]
    if not names:
        return {}
    if set(names) != {"kernel", "noise"}:
        raise InputError(f"{spec.name} takes extra inputs {names} that infer cannot build")
    return degradation_maps(blur if blur is not None else DEFAULT_BLUR,
                            DEFAULT_NOISE if noise_level is None else noise_level)


# The first measurement of a (model, backend, artifact, precision) in this process, reused by later Restorers:
# measuring again costs seconds, and after large runs the allocator reuses freed memory, so the RSS growth it
# measures would understate what a run needs.
_MEASURED: dict[tuple, MemoryEstimate] = {}


class Restorer:
    """A backend plus the spec's contract: ``restore(feed) -> output`` with padding/tiling and auto tile size."""

    def __init__(self, spec: ModelSpec, runner: Backend, image_output: str, settings: Settings):
        self.spec, self.runner, self.image_output, self.settings = spec, runner, image_output, settings
        self.contract = Contract.of(spec)
        self.memory: MemoryEstimate | None = None
        if isinstance(settings.tile, int):
            check_tile(settings.tile, settings.overlap, self.contract)

    def _run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.runner.run(feed)[self.image_output]

    def _run_at(self, height: int, width: int) -> None:
        from deploykit.inputs import random_inputs

        self.runner.run(random_inputs(self.spec, (1, height, width)))

    def measure(self) -> MemoryEstimate:
        if self.memory is None:
            if self.runner.device != "cpu":
                raise InputError(f"--tile auto sizes tiles from host memory; on {self.runner.name} give --tile T")
            key = (self.spec.name, self.runner.name, str(getattr(self.runner, "path", "")),
                   getattr(self.runner, "precision", ""))
            if key not in _MEASURED:
                _MEASURED[key] = measure_memory(self._run_at, self.contract)
            self.memory = _MEASURED[key]
        return self.memory

    def tile_for(self, height: int, width: int) -> int | None:
        tile = self.settings.tile
        if tile != "auto":
            return tile
        profile = getattr(self.runner, "profile", None)  # a TensorRT engine: its profile is what fits
        if profile is not None and hasattr(profile, "max_hw"):
            max_h, max_w = profile.max_hw
            ph, pw = padded_size(height, width, self.contract)
            if ph <= max_h and pw <= max_w:
                return None
            return self.contract.round_down(min(max_h, max_w))
        bound = MemoryEstimate(FALLBACK_BYTES_PER_PIXEL, 0, "upper bound")
        if self.memory is None and fits_whole(height, width, self.contract, bound,
                                              out_channels=self.spec.out_channels):
            return None  # fits whole even at the conservative bound: no need to measure
        est = self.measure()
        return auto_tile(height, width, self.contract, est, available=available_memory(),
                         batch=self.settings.batch, out_channels=self.spec.out_channels, overlap=self.settings.overlap)

    def restore(self, feed: dict[str, np.ndarray], on_start=None, on_tile=None) -> tuple[np.ndarray, str, int]:
        """(output [1, C, sH, sW], plan description, tile count) for one image feed."""
        image = feed[self.spec.inputs[0].name]
        h, w = image.shape[2:]
        chop = chop_settings(self.spec)
        if chop is not None and self.settings.tile == "auto":
            # PANet: the published protocol is the official recursive chop, not blended tiles (docs/panet.md)
            out = forward_chop(lambda x: self._run({**feed, self.spec.inputs[0].name: x}), image, scale=chop.scale,
                               shave=chop.shave, min_size=chop.min_size)
            if on_start:
                on_start(1)
            return out, f"official chop (shave {chop.shave}, min size {chop.min_size})", 1
        tile = self.tile_for(h, w)
        overlap = self.settings.overlap if tile is not None else 0
        plan = plan_tiles(h, w, self.contract, tile, overlap)
        if on_start:
            on_start(plan.count)
        out = run_tiled(self._run, feed, self.contract, tile=tile, overlap=overlap, batch=self.settings.batch,
                        image_input=self.spec.inputs[0].name, on_tile=on_tile)
        return out, plan.describe(), plan.count


def load_feed(spec: ModelSpec, job: Job, extras: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Picture]:
    """Read the job's image(s) into the model's feed; the picture carries alpha, depth, metadata for writing."""
    picture = read_image(job.source)
    image = picture.nchw()
    if spec.in_channels == 6:
        right = read_image(job.right)
        if (right.height, right.width) != (picture.height, picture.width):
            raise InputError(f"{job.source}: left view {picture.width}x{picture.height} and right view {job.right} "
                             f"{right.width}x{right.height} differ in size")
        image = np.concatenate([image, right.nchw()], axis=1)
    elif spec.in_channels == 1:  # a Y-channel model: its luma, the colour is put back when writing
        image = np.ascontiguousarray(rgb_to_ycbcr(picture.rgb)[None, :1])
    elif spec.in_channels != 3:
        raise InputError(f"{spec.name} takes {spec.in_channels}-channel input, which infer cannot build from images")
    return {spec.inputs[0].name: image, **extras}, picture


def write_output(job: Job, picture: Picture, output: np.ndarray, *, bit_depth: int | None, out_format: str | None,
                 quality: int) -> tuple[int, tuple[int, int]]:
    """Write the cropped model output with the picture's alpha, grayscale-ness and metadata. A Y-channel output
    gets the picture's own Cb/Cr back (resized for super-resolution); a gray picture stays gray."""
    if output.shape[1] == 1:
        ycbcr = rgb_to_ycbcr(picture.rgb)
        h, w = output.shape[2], output.shape[3]
        chroma = [resize_plane(ycbcr[c], h, w) for c in (1, 2)]
        rgb = ycbcr_to_rgb(np.stack([output[0, 0], *chroma]))
    else:
        rgb = output[0, :3]
    alpha = picture.alpha
    if alpha is not None:
        alpha = resize_plane(alpha, rgb.shape[1], rgb.shape[2])
    depth = bit_depth or picture.bit_depth
    write_image(job.output, rgb, alpha=alpha, bit_depth=depth, grayscale=picture.grayscale, format=out_format,
                icc_profile=picture.icc_profile, exif=picture.exif, quality=quality)
    return depth, (int(rgb.shape[2]), int(rgb.shape[1]))


# --- the library entry -----------------------------------------------------------------------------------------

def parse_tile(tile: int | str | None) -> int | str | None:
    """``"auto"``, ``None`` / ``"none"`` / ``0`` (whole image) or a positive int."""
    if tile is None or tile == "auto":
        return tile
    if isinstance(tile, str):
        if tile.strip().lower() in ("none", "0", "off", "whole"):
            return None
        if tile.strip().lower() == "auto":
            return "auto"
        try:
            tile = int(tile)
        except ValueError as exc:
            raise InputError(f"bad --tile '{tile}': use a size in pixels, 'auto' or 'none'") from exc
    if tile == 0:
        return None
    if tile < 0:
        raise InputError(f"bad --tile {tile}: must be positive")
    return int(tile)


def infer(name: str, inputs: list[str | Path] | str | Path, out_dir: str | Path, *, weights: str | Path | None = None,
          backend: str = "torch", precision: str = "fp32", onnx: str | Path | None = None,
          exports: str | Path = "exports", tile: int | str | None = "auto", overlap: int = DEFAULT_OVERLAP,
          batch_tiles: int = 1, bit_depth: int | None = None, out_format: str | None = None,
          blur_sigma: str | float | None = None, noise_level: float | None = None, right: str | Path | None = None,
          recursive: bool = False, quality: int = 95, seed: int = 0, unsafe_pickle: bool = False,
          progress: Progress | None = None, runner: Backend | None = None) -> InferReport:
    """Restore image files with a zoo model; returns one FileResult per input (errors included).

    ``tile``: ``"auto"`` (the default: the whole image when it fits in memory, else the largest tile that does),
    ``None`` (always whole) or a size in input pixels with ``overlap``; ``batch_tiles`` tiles run per call.
    UDVD takes ``blur_sigma`` ("2.0" or "2.0,1.0,30") and ``noise_level`` (0..255); the dual-pixel MIRNet-v2 takes
    ``right`` (the right view: a file, or a folder matched by file name). ``bit_depth`` None keeps each input's
    depth; ``out_format`` (png/jpeg/tiff/webp) None keeps each input's format. ``runner`` (tests, benchmarks)
    replaces the backend built from ``backend``/``weights``.
    """
    spec = get_spec(name)
    progress = progress or _Silent()
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    fmt = _format_option(out_format)
    if bit_depth not in (None, 8, 16):
        raise InputError(f"bad --bit-depth {bit_depth}: use 8 or 16")
    if bit_depth == 16 and fmt in ("JPEG", "WEBP"):
        raise InputError(f"--bit-depth 16 cannot be written as {fmt}; use --format png or tiff")
    if batch_tiles < 1:
        raise InputError(f"bad --batch-tiles {batch_tiles}: must be at least 1")
    udvd = [t.name for t in spec.inputs[1:]] == ["kernel", "noise"]
    if not udvd and (blur_sigma is not None or noise_level is not None):
        raise InputError(f"--blur-sigma / --noise-level describe UDVD's degradation; {spec.name} does not take them")
    if spec.in_channels != 6 and right is not None:
        raise InputError(f"--right is the dual-pixel right view for mirnetv2:defocus_deblurring; "
                         f"{spec.name} takes one image")
    blur = parse_blur(blur_sigma) if blur_sigma is not None else None
    settings = Settings(parse_tile(tile), overlap, batch_tiles, blur, noise_level)
    if isinstance(settings.tile, int):
        check_tile(settings.tile, overlap, Contract.of(spec))  # before anything is built
    extras = extra_inputs(spec, blur, noise_level)
    out_dir = Path(out_dir)
    jobs = plan_jobs(inputs, out_dir, out_format=fmt, right=Path(right) if right is not None else None,
                     recursive=recursive, needs_right=spec.in_channels == 6)
    notes = []
    if runner is None:
        runner, image_out, notes = open_backend(spec, backend, precision=precision,
                                                weights=Path(weights) if weights else None,
                                                onnx=Path(onnx) if onnx else None, exports=Path(exports),
                                                seed=seed, unsafe_pickle=unsafe_pickle)
    else:
        image_out = spec.outputs[spec.image_output].name
        if image_out not in runner.output_names:
            image_out = runner.output_names[0]
    if udvd:
        notes.append(f"degradation: {(blur or parse_blur(DEFAULT_BLUR)).describe()}, noise sigma "
                     f"{DEFAULT_NOISE if noise_level is None else noise_level:g}/255")
    restorer = Restorer(spec, runner, image_out, settings)
    report = InferReport(spec.name, runner.describe(), notes=notes,
                         tile="auto" if settings.tile == "auto" else (str(settings.tile) if settings.tile else "none"))
    progress.run_started(report, len(jobs))
    with runner:
        for index, job in enumerate(jobs):
            result = _run_job(spec, restorer, job, extras, index, len(jobs), progress,
                              bit_depth=bit_depth, out_format=fmt, quality=quality)
            report.results.append(result)
            progress.file_done(result)
    if restorer.memory is not None:
        report.memory_note = (f"--tile auto: {restorer.memory.bytes_per_pixel / 1024:.1f} KiB per input pixel "
                              f"({restorer.memory.method}: {restorer.memory.detail}), "
                              f"{available_memory() / 2**30:.1f} GiB available")
    return report


def _format_option(out_format: str | None) -> str | None:
    if out_format is None:
        return None
    key = "." + out_format.lower().lstrip(".")
    if key not in FORMATS:
        raise InputError(f"bad --format '{out_format}': use png, jpeg, tiff or webp")
    return FORMATS[key]


def _run_job(spec: ModelSpec, restorer: Restorer, job: Job, extras: dict, index: int, total: int,
             progress: Progress, *, bit_depth: int | None, out_format: str | None, quality: int) -> FileResult:
    result = FileResult(job.source, right=job.right)
    start = time.perf_counter()
    if job.error:
        result.error = job.error
        progress.file_started(index, total, job.source, 0)
        return result
    try:
        feed, picture = load_feed(spec, job, extras)
        result.in_size, result.in_kind = (picture.width, picture.height), picture.kind
        output, result.plan, result.tiles = restorer.restore(
            feed, on_start=lambda n: progress.file_started(index, total, job.source, n), on_tile=progress.tile_done)
        result.out_bit_depth, result.out_size = write_output(job, picture, output, bit_depth=bit_depth,
                                                             out_format=out_format, quality=quality)
        result.output, result.ok = job.output, True
    except DeployKitError as exc:
        message = str(exc)
        result.error = message if str(job.source) in message else f"{job.source}: {message}"
    except MemoryError:
        result.error = f"{job.source}: out of memory; use a smaller --tile"
    except Exception as exc:  # a runtime error on this image (ORT, torch): report it, go on with the others
        result.error = f"{job.source}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    result.seconds = time.perf_counter() - start
    return result
