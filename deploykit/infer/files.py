"""Image files in and out of ``infer``: which files, where each output goes, reading them into a feed, writing
the restored picture back with its bit depth, format and colour."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploykit.errors import InputError
from deploykit.imaging.images import (
    FORMATS,
    SUFFIX,
    Picture,
    read_image,
    resize_plane,
    rgb_to_ycbcr,
    write_image,
    ycbcr_to_rgb,
)
from deploykit.zoo.spec import ModelSpec


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


def _format_option(out_format: str | None) -> str | None:
    if out_format is None:
        return None
    key = "." + out_format.lower().lstrip(".")
    if key not in FORMATS:
        raise InputError(f"bad --format '{out_format}': use png, jpeg, tiff or webp")
    return FORMATS[key]
