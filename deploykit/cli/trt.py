"""``deploykit build``: the TensorRT command, registered onto the main typer app by ``register(app)``.

Thin like cli.py: parse, call deploykit.trt.build, print with rich. Errors are DeployKitErrors, which the main
entry point turns into one line and a non-zero exit code (BackendUnavailableError when TensorRT or a GPU is
missing, naming ``pip install 'deploykit[gpu]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from deploykit.cli.console import console, fail, print_step


def build_cmd(
    name: Annotated[str, typer.Argument(help="NAME or NAME:VARIANT of an exported model (see 'deploykit list')")],
    precision: Annotated[str, typer.Option(help="fp16 (FP32 islands kept) or fp32")] = "fp16",
    res: Annotated[Optional[str], typer.Option(
        help="resolutions the engine must take, e.g. 512,1024,2048 or 1920x1080 (W x H): min / middle / max")] = None,
    profile: Annotated[Optional[str], typer.Option(
        help="explicit optimisation profile MIN:OPT:MAX, each N or WxH, e.g. 256:1024:2048")] = None,
    batch: Annotated[int, typer.Option(help="maximum batch of the profile (min and opt are 1)")] = 1,
    workspace: Annotated[Optional[float], typer.Option(help="builder workspace limit in GB (default: TensorRT's)")] = None,
    opt_level: Annotated[int, typer.Option(help="builder optimisation level 0..5")] = 3,
    timing_cache: Annotated[Optional[Path], typer.Option(
        help="timing cache file (default: one per TensorRT version and GPU next to the engine)")] = None,
    typing: Annotated[str, typer.Option(
        help="auto (TRT 10: FP16 flag + FP32 layers; TRT 11: strongly typed FP16 ONNX), weak or strong")] = "auto",
    out: Annotated[Path, typer.Option(help="export root; the model is read from OUT/<model>/<variant>/")] = Path("exports"),
    device: Annotated[int, typer.Option(help="CUDA device index")] = 0,
    parity: Annotated[bool, typer.Option("--parity/--no-parity", help="check the engine against PyTorch FP32")] = True,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="fail at once if another run is writing the "
                                                            "export folder (default: wait for it)")] = False,
) -> None:
    """Build a TensorRT engine from an export and record it (identity, profile, parity) in its manifest."""
    from deploykit.artifacts.lookup import export_dir
    from deploykit.runtime.gpu import import_tensorrt
    from deploykit.trt.build import build_engine
    from deploykit.trt.plan import resolve_profile
    from deploykit.zoo.registry import get_spec

    spec = get_spec(name)
    resolve_profile(spec, res=res, profile=profile, max_batch=batch)  # bad --res/--profile fail first
    import_tensorrt()  # one-line BackendUnavailableError with the install hint when absent
    from deploykit.util.locks import lock_policy

    with lock_policy(wait=not no_wait):
        entry = build_engine(export_dir(spec, out), precision=precision, res=res, profile=profile,
                             max_batch=batch, workspace_gb=workspace, opt_level=opt_level, timing_cache=timing_cache,
                             typing=typing, device=device, parity=parity, on_step=print_step)
    table = Table(title=f"{spec.name} engine", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    p = entry["profile"]
    rows = [("file", entry["file"]), ("key", entry["key"]), ("precision", entry["precision"]),
            ("build path", entry["build"]["path"]), ("TensorRT", entry["tensorrt"]),
            ("GPU", f"{entry['gpu_name']} (compute capability {entry['compute_capability']})"),
            ("profile H x W", f"min {p['min_hw']}, opt {p['opt_hw']}, max {p['max_hw']}, batch {p['batch']}"),
            ("size", f"{entry['bytes'] / 2**20:.1f} MiB"),
            ("timing cache", f"{entry['build']['timing_cache']['file']} ({entry['build']['timing_cache']['state']})")]
    if "fp32_layers" in entry["build"]:
        f = entry["build"]["fp32_layers"]
        rows.append(("FP32 layers", f"{f['pinned_layers']} pinned, {len(f['unmatched_nodes'])} FP32 nodes without "
                                    "a layer"))
    for backend, summary in entry.get("parity_summary", {}).items():
        rows.append((f"parity {backend}", f"{'pass' if summary['passed'] else 'FAIL'}: min PSNR "
                                          f"{summary['min_psnr_db']:.1f} dB, max abs {summary['max_abs']:.2e}"))
    for key, value in rows:
        table.add_row(key, escape(str(value)))
    console.print(table)
    failed = [b for b, s in entry.get("parity_summary", {}).items() if not s["passed"]]
    if failed:
        fail(f"engine parity failed for {', '.join(failed)}")


def register(app: typer.Typer) -> None:
    """Add ``build`` to the main app (idempotent: a second call does nothing)."""
    if any(getattr(c, "name", None) == "build" for c in app.registered_commands):
        return
    app.command("build")(build_cmd)
