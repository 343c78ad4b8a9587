"""``deploykit infer``: parse options, call ``deploykit.infer.run.infer``, show progress and one line per file.

Registered on the main typer app by ``deploykit.cli`` (``register(app)``). Exit codes: 0 every file written,
1 some files failed (each named on its own ``error:`` line, the others are written), 2 nothing ran (unknown
model, bad options, missing artifact, unavailable backend: one ``error:`` line from ``deploykit.cli.main``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from deploykit.cli.console import RichProgress, console, err_console, fail


def register(app: typer.Typer) -> None:
    """Add the ``infer`` command to ``app``."""

    @app.command("infer")
    def infer_cmd(
        name: Annotated[str, typer.Argument(help="NAME or NAME:VARIANT (see 'deploykit list')")],
        inputs: Annotated[list[str], typer.Argument(help="image files, folders and globs (PNG, JPEG, TIFF, WebP)")],
        out: Annotated[Path, typer.Option("--out", "-o", help="output folder (created; inputs keep their names)")],
        weights: Annotated[Optional[Path], typer.Option(help="official checkpoint (torch backend)")] = None,
        backend: Annotated[str, typer.Option(help="torch | ort | ort-cuda | trt")] = "torch",
        precision: Annotated[str, typer.Option(help="fp32 | fp16 (which artifact ort/trt run)")] = "fp32",
        onnx: Annotated[Optional[Path], typer.Option(help="ONNX file to run instead of the exported artifact")] = None,
        exports: Annotated[Path, typer.Option(help="export root holding <model>/<variant>/manifest.json")]
        = Path("exports"),
        tile: Annotated[str, typer.Option(help="tile size in input pixels, 'auto' (fit memory) or 'none'")] = "auto",
        overlap: Annotated[int, typer.Option(help="minimum tile overlap in input pixels")] = 32,
        batch_tiles: Annotated[int, typer.Option(help="tiles per model call")] = 1,
        bit_depth: Annotated[Optional[int], typer.Option(help="8 or 16 (default: each input's depth)")] = None,
        out_format: Annotated[Optional[str], typer.Option("--format", help="png | jpeg | tiff | webp "
                                                                           "(default: each input's format)")] = None,
        quality: Annotated[int, typer.Option(help="JPEG / WebP quality (WebP 100 = lossless)")] = 95,
        blur_sigma: Annotated[Optional[str], typer.Option(
            help="UDVD blur: SIGMA or SIGMA_X,SIGMA_Y,THETA_DEG (default 0.2, i.e. sharp)")] = None,
        noise_level: Annotated[Optional[float], typer.Option(help="UDVD noise sigma on the 0..255 scale "
                                                                  "(default 0)")] = None,
        right: Annotated[Optional[Path], typer.Option(
            help="dual-pixel right view (mirnetv2:defocus_deblurring): a file, or a folder matched by file name")]
        = None,
        recursive: Annotated[bool, typer.Option(help="walk sub-folders of folder inputs")] = False,
        seed: Annotated[int, typer.Option(help="seed for random init when no --weights")] = 0,
        unsafe_pickle: Annotated[bool, typer.Option(help="allow pickled code in --weights (trusted files only)")]
        = False,
        max_pixels: Annotated[Optional[int], typer.Option(
            help="largest image to decode, in pixels (default 100000000: a decompression-bomb guard)")] = None,
    ) -> None:
        """Restore image files: pad to the model's contract, run whole or in blended tiles, write images."""
        from deploykit.imaging.images import pixel_limit
        from deploykit.infer.run import infer

        with pixel_limit(max_pixels), RichProgress(console, err_console) as progress:
            report = infer(name, inputs, out, weights=weights, backend=backend, precision=precision, onnx=onnx,
                           exports=exports, tile=tile, overlap=overlap, batch_tiles=batch_tiles,
                           bit_depth=bit_depth, out_format=out_format, blur_sigma=blur_sigma,
                           noise_level=noise_level, right=right, recursive=recursive, quality=quality, seed=seed,
                           unsafe_pickle=unsafe_pickle, progress=progress)
        if report.memory_note:
            console.print(f"[dim]{escape(report.memory_note)}[/]", highlight=False, soft_wrap=True)
        total = sum(r.seconds for r in report.results)
        console.print(f"{len(report.written)} written to {escape(str(out))}, {len(report.failed)} failed "
                      f"({total:.1f} s)", highlight=False, soft_wrap=True)
        if report.failed:
            fail()  # each failed file already has its error: line
