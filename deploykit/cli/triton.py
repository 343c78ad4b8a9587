"""``deploykit triton`` (write a Triton model repository), ``deploykit triton-client`` (restore files on a server)
and ``deploykit triton-serve`` (the tritonserver bundled with nvidia-pytriton, for the CPU python backend).

Registered on the main typer app by ``deploykit.cli.app`` (``register(app)``); the logic lives in
``deploykit.serve.triton_repo``, ``deploykit.serve.triton_client`` and ``deploykit.serve.triton_server``, imported
when a command runs (the CLI's help stays light). Errors are DeployKitErrors: one line, non-zero exit.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from deploykit.cli.console import RichProgress, console, err_console, fail


def _tile(value: Optional[int]) -> Optional[int]:
    return value if value else None


def _interrupt(signum, frame):
    """SIGTERM (docker stop, supervisors) and SIGINT stop ``triton-serve`` like Ctrl-C."""
    raise KeyboardInterrupt


def triton_cmd(
    name: Annotated[str, typer.Argument(help="NAME or NAME:VARIANT (exported with 'deploykit export' first)")],
    repo: Annotated[Path, typer.Option(help="Triton model repository (created; other models are kept)")]
    = Path("triton_repo"),
    exports: Annotated[Path, typer.Option(help="export root holding <model>/<variant>/manifest.json")]
    = Path("exports"),
    backend: Annotated[str, typer.Option(help="onnxruntime | tensorrt | python (python runs on CPU-only "
                                              "servers)")] = "onnxruntime",
    precision: Annotated[Optional[str], typer.Option(help="fp32 | fp16 (default fp32; tensorrt: the engines' "
                                                          "precision)")] = None,
    max_batch: Annotated[int, typer.Option(help="max_batch_size (tiles per batch); 0 disables batching")] = 8,
    instances: Annotated[int, typer.Option(help="model instances (instance_group count)")] = 1,
    device: Annotated[str, typer.Option(help="onnxruntime instance kind: auto | cpu | gpu")] = "auto",
    tile: Annotated[Optional[int], typer.Option(help="tile size the clients send (warm-up shape, ORT-TRT "
                                                     "profile, triton-client default)")] = None,
    overlap: Annotated[int, typer.Option(help="tile overlap recorded for triton-client")] = 32,
    ort_trt: Annotated[bool, typer.Option("--ort-trt", help="onnxruntime: accelerate with ONNX Runtime's "
                                                            "TensorRT execution provider")] = False,
    ort_trt_cache: Annotated[str, typer.Option(help="engine/timing cache folder on the server (--ort-trt)")]
    = "/tmp/deploykit-ort-trt",
    threads: Annotated[int, typer.Option(help="python backend: ONNX Runtime threads per instance "
                                              "(0 = cores / instances)")] = 0,
    queue_delay_us: Annotated[int, typer.Option(help="dynamic batcher's max queue delay (microseconds)")] = 2000,
    model_name: Annotated[Optional[str], typer.Option(help="model directory name (default "
                                                           "<family>_<variant>_<onnx|trt|python>)")] = None,
    warmup: Annotated[bool, typer.Option(help="add a model_warmup request")] = True,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="fail at once if another run is writing the "
                                                            "repository (default: wait for it)")] = False,
) -> None:
    """Write a Triton model repository entry (config.pbtxt validated against Triton's schema) from an export."""
    from deploykit.serve.triton_repo import RepoOptions, write_repository
    from deploykit.util.locks import lock_policy

    options = RepoOptions(backend=backend, precision=precision, max_batch=max_batch, instances=instances,
                          device=device, tile=_tile(tile), overlap=overlap, ort_trt=ort_trt,
                          ort_trt_cache=ort_trt_cache, threads=threads, queue_delay_us=queue_delay_us,
                          model_name=model_name, warmup=warmup)
    with lock_policy(wait=not no_wait):
        result = write_repository(name, repo, exports=exports, options=options)
    verb = "replaced" if result.replaced else "wrote"
    console.print(f"{verb} [bold]{escape(str(result.model_dir))}[/] ({result.backend}, {result.precision}): "
                  f"{', '.join(escape(f) for f in result.files)}", highlight=False, soft_wrap=True)
    console.print("config.pbtxt parses as Triton's ModelConfig (tritonclient model_config_pb2)", highlight=False)
    for note in result.notes:
        console.print(f"[bold yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    console.print(f"serve: tritonserver --model-repository={escape(str(result.repo.resolve()))} "
                  "(docs/triton.md); query: deploykit triton-client "
                  f"{escape(name)} --url HOST:8001 IMAGES -o OUT", highlight=False, soft_wrap=True)


def triton_client_cmd(
    name: Annotated[str, typer.Argument(help="NAME or NAME:VARIANT served by the Triton model")],
    inputs: Annotated[list[str], typer.Argument(help="image files, folders and globs (PNG, JPEG, TIFF, WebP)")],
    url: Annotated[str, typer.Option(help="server HOST:PORT (gRPC port with --protocol grpc, HTTP port with "
                                          "http)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (created; inputs keep their names)")],
    protocol: Annotated[str, typer.Option(help="grpc | http")] = "grpc",
    model_name: Annotated[Optional[str], typer.Option(help="Triton model name (default: the one READY model "
                                                           "named <family>_<variant>_*)")] = None,
    tile: Annotated[str, typer.Option(help="tile size in input pixels, 'none' (whole image) or 'auto' (the "
                                           "repository's --tile, else whole)")] = "auto",
    overlap: Annotated[Optional[int], typer.Option(help="minimum tile overlap (default: the repository's, "
                                                        "else 32)")] = None,
    batch_tiles: Annotated[Optional[int], typer.Option(help="tiles per request (default min(4, "
                                                            "max_batch_size))")] = None,
    concurrency: Annotated[int, typer.Option(help="requests in flight")] = 1,
    timeout: Annotated[float, typer.Option(help="seconds per request")] = 120.0,
    connect_timeout: Annotated[float, typer.Option(help="seconds to wait for a live server")] = 10.0,
    bit_depth: Annotated[Optional[int], typer.Option(help="8 or 16 (default: each input's depth)")] = None,
    out_format: Annotated[Optional[str], typer.Option("--format", help="png | jpeg | tiff | webp")] = None,
    quality: Annotated[int, typer.Option(help="JPEG / WebP quality")] = 95,
    recursive: Annotated[bool, typer.Option(help="walk sub-folders of folder inputs")] = False,
    blur_sigma: Annotated[Optional[str], typer.Option(help="UDVD blur (as in infer)")] = None,
    noise_level: Annotated[Optional[float], typer.Option(help="UDVD noise sigma (0..255)")] = None,
    right: Annotated[Optional[Path], typer.Option(help="dual-pixel right view (as in infer)")] = None,
) -> None:
    """Restore image files on a Triton server: same padding, tiling, blending and writing as local infer."""
    from deploykit.serve.triton_client import triton_infer

    with RichProgress(console, err_console) as progress:
        report = triton_infer(name, inputs, out, url=url, model_name=model_name, protocol=protocol, tile=tile,
                              overlap=overlap, batch_tiles=batch_tiles, concurrency=concurrency,
                              timeout_s=timeout, connect_timeout_s=connect_timeout, progress=progress,
                              bit_depth=bit_depth, out_format=out_format, quality=quality, recursive=recursive,
                              blur_sigma=blur_sigma, noise_level=noise_level, right=right)
    total = sum(r.seconds for r in report.results)
    console.print(f"{len(report.written)} written to {escape(str(out))}, {len(report.failed)} failed "
                  f"({total:.1f} s)", highlight=False, soft_wrap=True)
    if report.failed:
        fail()  # each failed file already has its error: line


def triton_serve_cmd(
    repo: Annotated[Path, typer.Argument(help="model repository written by 'deploykit triton'")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(help="HTTP port (0 = a free one)")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port (0 = a free one)")] = 8001,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the models to load")] = 120.0,
) -> None:
    """Serve a repository with the tritonserver binary bundled in nvidia-pytriton (CPU python backend)."""
    from deploykit.serve.triton_server import LocalServer

    server = LocalServer(repo, host=host, http_port=http_port or None, grpc_port=grpc_port or None)
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start(timeout_s=timeout)
        console.print(f"tritonserver (nvidia-pytriton {server.bundle.version}) serving {escape(str(repo))}: "
                      f"grpc {server.grpc_url}, http {server.http_url}; log {server.log_path}; Ctrl-C stops it",
                      highlight=False, soft_wrap=True)
        while server.process is not None and server.process.poll() is None:
            time.sleep(0.5)
        console.print(f"tritonserver exited:\n{escape(server.log_tail())}", highlight=False)
    except KeyboardInterrupt:
        console.print("stopping tritonserver")
    finally:
        server.cleanup()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def register(app: typer.Typer) -> None:
    """Add ``triton``, ``triton-client`` and ``triton-serve`` to ``app``."""
    app.command("triton")(triton_cmd)
    app.command("triton-client")(triton_client_cmd)
    app.command("triton-serve")(triton_serve_cmd)
