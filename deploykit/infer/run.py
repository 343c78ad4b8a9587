"""``infer``: image files -> padded or tiled run on a backend -> image files, one result per file.

The library entry is :func:`infer`; ``deploykit infer`` (``deploykit.cli.infer``) only parses options and prints.
Building the runner (:func:`open_runner`), running one picture (:func:`restore`), and file handling (reading,
writing, per-file errors) are separate, so benchmarks and tests can reuse each piece.

Failures that concern one file (unreadable, corrupt, truncated, unsupported, unwritable, a dual-pixel pair of
different sizes, a runtime error on that image) become that file's ``FileResult.error`` and the batch goes on;
failures that concern every file (unknown model, bad weights, missing artifact, unavailable backend, bad options)
raise before any file is touched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from deploykit.errors import DeployKitError, InputError
from deploykit.imaging.tiling import Contract, check_tile
from deploykit.infer.files import (
    Job,
    _format_option,
    load_feed,
    plan_jobs,
    write_output,
)
from deploykit.infer.restore import (
    DEFAULT_OVERLAP,
    Restorer,
    Settings,
    parse_tile,
)
from deploykit.infer.runner import open_runner
from deploykit.runtime.base import Backend
from deploykit.util.system import available_memory
from deploykit.util.text import one_line
from deploykit.zoo.degradation import DEFAULT_BLUR, DEFAULT_NOISE, extra_inputs, parse_blur
from deploykit.zoo.registry import get_spec
from deploykit.zoo.spec import ModelSpec

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


# --- backends ------------------------------------------------------------------------------------------------


# --- one picture ---------------------------------------------------------------------------------------------


# --- the library entry -----------------------------------------------------------------------------------------


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
    fmt = _format_option(out_format)
    settings = _settings(spec, fmt, tile=tile, overlap=overlap, batch_tiles=batch_tiles, bit_depth=bit_depth,
                         blur_sigma=blur_sigma, noise_level=noise_level, right=right)
    extras = extra_inputs(spec, settings.blur, noise_level)
    jobs = plan_jobs([inputs] if isinstance(inputs, (str, Path)) else list(inputs), Path(out_dir), out_format=fmt,
                     right=Path(right) if right is not None else None, recursive=recursive,
                     needs_right=spec.in_channels == 6)
    notes = []
    if runner is None:
        runner, image_out, notes = open_runner(spec, backend, precision=precision,
                                               weights=Path(weights) if weights else None,
                                               onnx=Path(onnx) if onnx else None, exports=Path(exports),
                                               seed=seed, unsafe_pickle=unsafe_pickle)
    else:
        image_out = spec.outputs[spec.image_output].name
        if image_out not in runner.output_names:
            image_out = runner.output_names[0]
    if _is_udvd(spec):
        notes.append(f"degradation: {(settings.blur or parse_blur(DEFAULT_BLUR)).describe()}, noise sigma "
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


def _is_udvd(spec: ModelSpec) -> bool:
    return [t.name for t in spec.inputs[1:]] == ["kernel", "noise"]


def _settings(spec: ModelSpec, fmt: str | None, *, tile, overlap: int, batch_tiles: int, bit_depth: int | None,
              blur_sigma, noise_level: float | None, right) -> Settings:
    """Check every option against the model before anything is built or read."""
    if bit_depth not in (None, 8, 16):
        raise InputError(f"bad --bit-depth {bit_depth}: use 8 or 16")
    if bit_depth == 16 and fmt in ("JPEG", "WEBP"):
        raise InputError(f"--bit-depth 16 cannot be written as {fmt}; use --format png or tiff")
    if batch_tiles < 1:
        raise InputError(f"bad --batch-tiles {batch_tiles}: must be at least 1")
    if not _is_udvd(spec) and (blur_sigma is not None or noise_level is not None):
        raise InputError(f"--blur-sigma / --noise-level describe UDVD's degradation; {spec.name} does not take them")
    if spec.in_channels != 6 and right is not None:
        raise InputError(f"--right is the dual-pixel right view for mirnetv2:defocus_deblurring; "
                         f"{spec.name} takes one image")
    blur = parse_blur(blur_sigma) if blur_sigma is not None else None
    settings = Settings(parse_tile(tile), overlap, batch_tiles, blur, noise_level)
    if isinstance(settings.tile, int):
        check_tile(settings.tile, overlap, Contract.of(spec))
    return settings


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
        result.error = f"{job.source}: {one_line(exc, 300, name_type=True)}"
    result.seconds = time.perf_counter() - start
    return result
