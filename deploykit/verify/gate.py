"""The parity gate: every (input x resolution x backend x precision) against the PyTorch FP32 reference or a
golden, with figures, the worst region, tiles where a resolution does not fit whole, and a verdict for CI.

:func:`check` is the library entry (``deploykit parity`` only parses and prints)::

    from deploykit.verify.gate import check
    report = check("exports/vapsr/x4", images=["photo.png"], res=["256", "1024"], backends=["ort"],
                   precisions=["fp32", "fp16"])
    assert report.passed, report.worst.summary()

Exit codes of :attr:`ParityReport.exit_code`: 0 every case passed, 1 a case failed, 2 a case could not run (a
backend or artifact missing here: the case is *skipped*, never passed). With ``golden=DIR`` no torch is imported.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deploykit.artifacts.lookup import locate, onnx_artifacts
from deploykit.artifacts.manifest import read_manifest
from deploykit.errors import InputError
from deploykit.imaging.images import image_files
from deploykit.imaging.tiling import Contract
from deploykit.runtime.open import PRECISIONS
from deploykit.util.sizes import Size, fmt_wxh, parse_sizes
from deploykit.verify.candidates import Candidate, open_candidates
from deploykit.verify.figures import Figures, Sampler, Tolerance, default_tolerances
from deploykit.verify.goldens import (
    GoldenWriter,
    check_identity,
    export_identity,
    read_golden,
)
from deploykit.verify.plan import Run, case_runs, choose_tile, preview_step
from deploykit.verify.sources import CaseInput, image_cases, random_cases
from deploykit.zoo.registry import get_spec
from deploykit.zoo.sample_inputs import parity_shapes

REPORT_SCHEMA = "deploykit.parity-report"
REPORT_SCHEMA_VERSION = 1


@dataclass
class Case:
    """One (input x resolution x backend x precision) and its verdict: ``status`` passed / failed / skipped."""

    key: str
    source: str
    kind: str
    res: Size
    batch: int
    fit: str
    backend: str
    precision: str
    tolerance: Tolerance
    status: str = "skipped"
    reason: str = ""
    max_abs: float | None = None
    mean_abs: float | None = None
    psnr_db: float | None = None
    nonfinite: int | None = None
    worst_box: tuple[int, int, int, int] | None = None  # output pixels (y, x, h, w)
    plan: str = "whole"
    tiles: int = 1
    seconds: float = 0.0
    visuals: dict = field(default_factory=dict, repr=False)  # previews for the HTML page (not serialised)

    @property
    def name(self) -> str:
        return f"{self.backend}/{self.precision} {self.key}"

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def summary(self) -> str:
        if self.status == "skipped":
            return f"{self.name}: skipped ({self.reason})"
        y, x, h, w = self.worst_box or (0, 0, 0, 0)
        return (f"{self.name}: max abs {self.max_abs:.3g}, mean abs {self.mean_abs:.3g}, PSNR {self.psnr_db:.2f} dB,"
                f" NaN/Inf {self.nonfinite}, worst {w}x{h} at x={x} y={y} ({self.plan}); {self.status.upper()} "
                f"({self.tolerance.describe()})")

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("key", "source", "kind", "batch", "fit", "backend", "precision", "status",
                                           "reason", "max_abs", "mean_abs", "psnr_db", "nonfinite", "plan", "tiles",
                                           "seconds")}
        d["res"] = fmt_wxh(self.res)
        d["tolerance"] = self.tolerance.to_dict()
        d["worst_region"] = (dict(zip(("y", "x", "h", "w"), self.worst_box)) if self.worst_box else None)
        return d


@dataclass
class ParityReport:
    model: str
    export_dir: Path
    identity: dict
    inputs: str  # "images", "random (seeded)" or "golden DIR"
    tolerances: dict[str, Tolerance]
    cases: list[Case] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    golden_saved: Path | None = None

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    @property
    def failed(self) -> list[Case]:
        return [c for c in self.cases if c.status == "failed"]

    @property
    def skipped(self) -> list[Case]:
        return [c for c in self.cases if c.status == "skipped"]

    @property
    def worst(self) -> Case | None:
        """The failed case with the lowest PSNR, else the lowest-PSNR case that ran."""
        ran = [c for c in self.cases if c.status != "skipped"]
        pool = [c for c in ran if c.status == "failed"] or ran
        return min(pool, key=lambda c: c.psnr_db, default=None)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 2 if (self.skipped or not self.cases) else 0

    def verdict(self) -> str:
        """One line: what passed, failed, was skipped and why."""
        counts = f"{len(self.cases) - len(self.failed) - len(self.skipped)} passed, {len(self.failed)} failed, " \
                 f"{len(self.skipped)} skipped"
        if self.failed:
            return f"parity failed ({counts}); worst: {self.worst.summary()}"
        if self.skipped:
            reasons = sorted({f"{c.backend}/{c.precision}: {c.reason}" for c in self.skipped})
            return f"parity incomplete ({counts}): {'; '.join(reasons)}"
        return f"parity passed ({counts})"


def check(export: str | Path, *, images: Sequence[str | Path] | None = None, res: Sequence[str] | None = None,
          batch: int = 1, backends: Sequence[str] = ("ort",), precisions: Sequence[str] | None = None,
          min_psnr: float | None = None, max_abs: float | None = None, tile: int | str | None = "auto",
          save_golden: str | Path | None = None, golden: str | Path | None = None,
          weights: str | Path | None = None, unsafe_pickle: bool = False, seed: int = 1,
          threads: int | None = None) -> ParityReport:
    """Run the gate on the export at ``export`` (directory or manifest.json) and return the report.

    ``images`` files or folders (else seeded random inputs), ``res`` sizes ('512', '1920x1080'; else each image's
    own size, or the export's parity shapes), ``batch`` images per run, ``backends`` (ort, ort-cuda,
    ort-tensorrt, trt, aoti), ``precisions`` (default: the export's ONNX precisions), tolerances ``min_psnr`` /
    ``max_abs`` (default: the manifest's, else the spec's), ``tile`` ('auto': tiles only when a resolution does not
    fit in memory whole; a size; None: always whole), ``save_golden`` DIR or ``golden`` DIR (no torch).
    """
    if save_golden and golden:
        raise InputError("give --save-golden or --golden, not both")
    if batch < 1:
        raise InputError(f"bad --batch {batch}: must be at least 1")
    out_dir, only = locate(export)
    manifest = read_manifest(out_dir)
    spec = get_spec(manifest["model"]["name"])
    identity = export_identity(out_dir, manifest)
    tolerances = default_tolerances(manifest, spec, max_abs=max_abs, min_psnr_db=min_psnr)
    have = {a["precision"] for a in onnx_artifacts(manifest)}
    if only and not precisions:  # an .onnx file given: its precision only
        have = {a["precision"] for a in onnx_artifacts(manifest) if a["file"] in only}
    precisions = list(precisions or [p for p in PRECISIONS if p in have] or ["fp32"])
    source = _Golden(golden, identity) if golden else _Reference(manifest, spec, weights, unsafe_pickle)
    if golden and min_psnr is None and max_abs is None:
        tolerances = {p: Tolerance(**t) for p, t in source.golden.index["tolerances"].items()}
    report = ParityReport(spec.name, out_dir, identity, source.describe(images), tolerances)
    cases = source.cases(spec, manifest, images, res, batch, seed)
    candidates = open_candidates(out_dir, manifest, spec, backends, precisions, threads=threads)
    writer = (GoldenWriter(save_golden, identity, tolerances={p: t.to_dict() for p, t in tolerances.items()},
                           value_range=spec.value_range, scale=spec.scale, inputs=report.inputs)
              if save_golden else None)
    try:
        for case_input in cases:
            report.cases += _run_case(spec, case_input, source, candidates, tolerances, tile, writer)
        if writer:
            report.golden_saved = writer.finish()
    finally:
        if writer and report.golden_saved is None:
            writer.abort()
        for cand in candidates:
            cand.close()
    report.notes += source.notes
    return report


def _run_case(spec, case_input, source, candidates: list[Candidate], tolerances, tile, writer) -> list[Case]:
    """All candidates over one input: the same runs (whole image or tiles) through the reference and each."""
    contract = Contract.of(spec)
    h, w = case_input.res
    out_hw = (h * spec.scale, w * spec.scale)
    runs, plan_text = source.runs(case_input, contract, tile)
    step = preview_step(out_hw)
    low, high = spec.value_range
    figures = {id(c): Figures(out_hw, step, peak=high - low) for c in candidates if c.runner is not None}
    cand_previews = {id(c): Sampler(out_hw, step) for c in candidates if c.runner is not None}
    ref_preview, in_preview = Sampler(out_hw, step), Sampler((h, w), max(1, step // spec.scale))
    entry = writer.add_case({"key": case_input.key, "source": case_input.source, "kind": case_input.kind,
                             "res": list(case_input.res), "batch": case_input.batch,
                             "fit": case_input.fit, "plan": plan_text, "tiles": len(runs)}) if writer else None
    seconds = {id(c): 0.0 for c in candidates}
    image_name = spec.inputs[0].name
    for run in runs:
        feed, reference = source.run(run)
        if entry is not None:
            writer.add_run(entry, feed, reference, run.window)
        y, x, hh, ww = run.window
        ref = reference[:, :, :hh, :ww]
        ref_preview.put(ref[0], y, x)
        in_preview.put(feed[image_name][0, :, :hh // spec.scale, :ww // spec.scale], y // spec.scale,
                       x // spec.scale)
        for cand in candidates:
            if cand.runner is None:
                continue
            start = time.perf_counter()
            out = cand.run(feed)[:, :, :hh, :ww]
            seconds[id(cand)] += time.perf_counter() - start
            figures[id(cand)].add(ref, out, y, x)
            cand_previews[id(cand)].put(out[0], y, x)
    results = []
    for cand in candidates:
        case = Case(case_input.key, case_input.source, case_input.kind, case_input.res,
                    case_input.batch, case_input.fit, cand.backend, cand.precision,
                    tolerances[cand.precision], plan=plan_text, tiles=len(runs))
        if cand.runner is None:
            case.reason = cand.reason
        else:
            f = figures[id(cand)]
            case.status = "passed" if f.passed(case.tolerance) else "failed"
            case.max_abs, case.mean_abs, case.psnr_db, case.nonfinite = f.max_abs, f.mean_abs, f.psnr_db, f.nonfinite
            case.worst_box, case.seconds = f.worst.box, seconds[id(cand)]
            case.visuals = {"input": in_preview.image, "reference": ref_preview.image,
                            "candidate": cand_previews[id(cand)].image, "diff": f.preview,
                            "worst_reference": f.worst.reference, "worst_candidate": f.worst.candidate}
        results.append(case)
    return results


class _Reference:
    """Inputs from images or seeded random; outputs from the PyTorch FP32 reference (imported only here)."""

    def __init__(self, manifest: dict, spec, weights, unsafe_pickle: bool):
        from deploykit.verify.reference import reference_backend

        self.runner, _ = reference_backend(manifest, weights=weights, unsafe_pickle=unsafe_pickle)
        self.output = spec.outputs[spec.image_output].name
        self.notes: list[str] = []
        self.static = manifest.get("export", {}).get("static_hw")

    def describe(self, images) -> str:
        return "images" if images else "random (seeded uniform: no --images given)"

    def cases(self, spec, manifest, images, res, batch, seed) -> list[CaseInput]:
        sizes = parse_sizes(res) if res else None
        if self.static and sizes and any(tuple(s) != tuple(self.static) for s in sizes):
            raise InputError(f"this export takes exactly {fmt_wxh(self.static)} (--static); give --res "
                             f"{fmt_wxh(self.static)} or re-export without --static")
        if images:
            return image_cases(spec, image_files(images, "--images"), sizes or ([tuple(self.static)] if self.static else None),
                               batch)
        if sizes is None:
            _, shapes = parity_shapes(spec, static_hw=self.static)
            sizes = [tuple(s[1:]) for s in shapes]
            self.notes.append("no --res: the export's own parity shapes")
        return random_cases(spec, sizes, batch, seed)

    def runs(self, case_input: CaseInput, contract, tile) -> tuple[list[Run], str]:
        chosen = choose_tile(case_input.res, contract, tile, self.runner, case_input.feed)
        return case_runs(case_input.feed, case_input.res, contract, chosen)

    def run(self, run: Run) -> tuple[dict[str, np.ndarray], np.ndarray]:
        return run.feed, self.runner.run(run.feed)[self.output]


class _Golden:
    """Inputs and outputs from a golden folder: no torch."""

    def __init__(self, folder, identity: dict):
        self.golden = read_golden(folder)
        check_identity(self.golden, identity)
        self.notes = [f"reference: golden {self.golden.folder} (saved {self.golden.index.get('created')})"]

    def describe(self, images) -> str:
        return f"golden {self.golden.folder} ({self.golden.index.get('inputs')})"

    def cases(self, spec, manifest, images, res, batch, seed) -> list[CaseInput]:
        if images or res:
            raise InputError("--golden replays the golden's own inputs: drop --images / --res")
        return [CaseInput(c["source"], "golden", tuple(c["res"]), {}, c["fit"], c["batch"]) for c in self.golden.cases]

    def runs(self, case_input: CaseInput, contract, tile) -> tuple[list[Run], str]:
        entry = next(c for c in self.golden.cases if c["key"] == case_input.key)
        return [Run(None, (r["y"], r["x"], r["h"], r["w"]), r) for r in entry["runs"]], entry["plan"]

    def run(self, run: Run) -> tuple[dict[str, np.ndarray], np.ndarray]:
        return self.golden.load_run(run.golden)

