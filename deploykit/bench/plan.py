"""What a benchmark runs, decided before anything runs: the options read and checked, the backends that can run
here, and the ordered cases (model x resolution x backend x precision) with the shape each backend call sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

from deploykit.bench.sources import Target
from deploykit.bench.timing import DEFAULT_SECONDS
from deploykit.errors import BenchError
from deploykit.imaging.tiling import plan_tiles
from deploykit.runtime.open import unavailable_reason
from deploykit.util.sizes import Size, fmt_wxh
from deploykit.zoo.spec import ModelSpec

BENCH_BACKENDS = ("torch", "torch-compile", "ort", "ort-cuda", "trt")  # the runner kinds bench can time
AUTO_BACKENDS = ("torch", "ort", "ort-cuda", "trt")  # what "auto" asks for (torch-compile only when named)
DEFAULT_RES = "256,512,1024,2048"
PARITY_SEED = 1  # every case's input: a seeded uniform image, the same for the reference and each backend

Event = Callable[[str, str], None]  # (kind, message): kind in info, export, start, done, skip, error


def parse_choices(items: str | Iterable[str] | None, allowed: Sequence[str], what: str,
                  default: Sequence[str]) -> list[str]:
    """Comma-separated / repeated option values, validated against ``allowed`` (order kept, duplicates dropped)."""
    if items is None:
        return list(default)
    parts = [p.strip().lower() for item in ([items] if isinstance(items, str) else items) for p in str(item).split(",")]
    parts = [p for p in parts if p]
    bad = [p for p in parts if p not in allowed]
    if bad:
        raise BenchError(f"unknown {what} {', '.join(repr(b) for b in bad)}; use {', '.join(allowed)}")
    return list(dict.fromkeys(parts)) or list(default)


def check_options(*, batch: int, warmup: int, iters: int | None, seconds: float | None, tile: int | None,
                  threads: int | None, sample_over: float | None = None) -> None:
    """BenchError naming the option and its bound for a count or size the benchmark cannot run with."""
    checks = ((batch < 1, f"--batch must be >= 1, not {batch}"),
              (warmup < 0, f"--warmup must be >= 0, not {warmup}"),
              (iters is not None and iters < 1, f"--iters must be >= 1, not {iters}"),
              (seconds is not None and seconds <= 0, f"--seconds must be > 0, not {seconds}"),
              (tile is not None and tile < 8, f"--tile must be at least 8 pixels, not {tile}"),
              (threads is not None and threads < 1, f"--threads must be >= 1, not {threads}"),
              (sample_over is not None and sample_over <= 0,
               f"--sample-tiles-over must be > 0 seconds, not {sample_over}"))
    for bad, message in checks:
        if bad:
            raise BenchError(message)


def resolve_backends(requested: Sequence[str] | str | None) -> tuple[list[str], dict[str, str]]:
    """'auto' = every backend that runs here: torch and ort everywhere, plus ort-cuda and trt with a CUDA GPU and
    their packages (torch-compile only when named: compilation takes minutes per shape).

    Returns (backends to run, {backend: why it is unavailable}); unavailable backends are reported, never run.
    """
    names = parse_choices(requested, ("auto", *BENCH_BACKENDS), "backend", ("auto",))
    wanted: list[str] = []
    for name in names:
        wanted += list(AUTO_BACKENDS) if name == "auto" else [name]
    run, unavailable = [], {}
    for name in dict.fromkeys(wanted):
        reason = unavailable_reason(name)
        if reason is None:
            run.append(name)
        else:
            unavailable[name] = reason
    return run, unavailable


@dataclass
class Case:
    target: Target
    backend: str
    precision: str
    hw: Size
    batch: int

    @property
    def key(self) -> tuple:
        return (self.target.name, self.hw, self.backend, self.precision)

    @property
    def label(self) -> str:
        """'vapsr:s_x4 ort/fp32 512x512': how the case is named in every event."""
        return f"{self.target.name} {self.backend}/{self.precision} {fmt_wxh(self.hw)}"

    @property
    def is_reference(self) -> bool:
        """The PyTorch FP32 case: its output is the parity reference of its resolution."""
        return self.backend == "torch" and self.precision == "fp32"


def plan_cases(targets: Sequence[Target], sizes: Sequence[Size], backends: Sequence[str],
               precisions: Sequence[str], batch: int = 1) -> list[Case]:
    """Per model, per resolution: the PyTorch FP32 case first (it is the parity reference), then the rest."""
    cases = []
    for target in targets:
        for hw in sizes:
            group = [Case(target, b, p, hw, batch) for b in backends for p in precisions]
            group.sort(key=lambda c: not c.is_reference)
            cases += group
    return cases


@dataclass
class BenchSettings:
    sizes: list[Size]
    backends: list[str]
    precisions: list[str]
    batch: int = 1
    warmup: int = 2
    iters: int | None = None
    seconds: float | None = None
    tile: int | None = None
    overlap: int = 32
    threads: int | None = None
    exports_root: str = "exports"
    cache_dir: str | None = None
    plan_only: bool = False  # guard, calibrate and tile every case, time none (status "planned")
    ort_graph: str = "all"  # ONNX Runtime CPU graph level of this case: "extended" when only that fits whole
    sample_over: float | None = None  # s: a tiled run longer than this at the GEMM rate times a sample of tiles
    tile_sample: list[int] | None = None  # this case's sampled tile indices (bench.run._sample_tiles)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["sizes"] = [fmt_wxh(s) for s in self.sizes]
        if self.iters is None and self.seconds is None:
            data["seconds"] = DEFAULT_SECONDS
        return data


@dataclass
class Work:
    """What one case runs: the shape of one backend call, images per timed run, calls batched, output bytes held."""

    hw: Size
    images: int
    run_batch: int
    held_bytes: int


def work_hw(hw: Size, settings: BenchSettings, spec: ModelSpec) -> Size:
    """The shape one backend call sees: the image, or with --tile the tile shape deploykit.imaging.tiling picks."""
    if not settings.tile:
        return tuple(hw)
    return tuple(plan_tiles(hw[0], hw[1], spec, settings.tile, settings.overlap).tile_shape)
