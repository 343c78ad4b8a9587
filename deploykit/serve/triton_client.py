"""``deploykit triton-client``: restore image files on a Triton server, like local ``infer``.

:class:`TritonBackend` is a deploykit runner (``deploykit.runtime.base.Backend``) whose ``run(feed)`` sends the
feed to a model of a Triton server with ``tritonclient`` (gRPC or HTTP): split into requests of ``batch_tiles``
along the batch dim, up to ``concurrency`` requests in flight (one client per worker thread), answers put back in
order. :func:`triton_infer` hands that runner to :func:`deploykit.infer.run.infer`, so reading, padding, tiling,
blending and writing are exactly those of local ``infer`` (deploykit.imaging.images, deploykit.imaging.tiling); only
the model call goes over the network. Tiles of one size make requests that the server's dynamic batcher can merge.

Light on import (no torch): tritonclient is imported when a runner connects, the infer library (which imports
torch) when files are restored.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from deploykit.errors import BackendUnavailableError, InputError, TritonRequestError
from deploykit.runtime.base import Backend
from deploykit.serve.triton_config import SUFFIX
from deploykit.util.text import one_line
from deploykit.zoo.registry import ModelSpec, get_spec

PROTOCOLS = ("grpc", "http")
NP_TO_TRITON = {np.dtype(np.float32): "FP32", np.dtype(np.float16): "FP16", np.dtype(np.float64): "FP64",
                np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64", np.dtype(np.uint8): "UINT8"}
TRITON_TO_NP = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_FP64": np.float64, "FP32": np.float32,
                "FP16": np.float16, "FP64": np.float64}


def _modules(protocol: str):
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown --protocol '{protocol}' (use grpc or http)")
    try:
        if protocol == "grpc":
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client
        from tritonclient.utils import InferenceServerException
    except ImportError as exc:
        raise BackendUnavailableError(f"the Triton client is not installed: pip install 'tritonclient[{protocol}]' "
                                      "(or deploykit[triton])") from exc
    return client, InferenceServerException


def _params(config: dict) -> dict[str, str]:
    out = {}
    for key, value in (config.get("parameters") or {}).items():
        out[key] = value.get("string_value", "") if isinstance(value, dict) else str(value)
    return out


class TritonBackend(Backend):
    """A runner on a Triton model: ``run(feed)`` -> named float32 arrays, like every other deploykit backend."""

    def __init__(self, url: str, spec: ModelSpec | str, *, model_name: str | None = None, protocol: str = "grpc",
                 batch_tiles: int | None = None, concurrency: int = 1, timeout_s: float = 120.0,
                 connect_timeout_s: float = 10.0):
        self.spec = get_spec(spec) if isinstance(spec, str) else spec
        if concurrency < 1:
            raise InputError(f"bad --concurrency {concurrency}: must be at least 1")
        if batch_tiles is not None and batch_tiles < 1:
            raise InputError(f"bad --batch-tiles {batch_tiles}: must be at least 1")
        self.url, self.protocol, self.concurrency, self.timeout_s = url, protocol, concurrency, timeout_s
        self._client_mod, self._error = _modules(protocol)
        self._local = threading.local()
        self._clients: list = []
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._wait_live(connect_timeout_s)
        self.model_name = model_name or self._find_model()
        self.config = self._model_config()
        params = _params(self.config)
        served = params.get("deploykit_model")
        if served and served != self.spec.name:
            raise InputError(f"Triton model '{self.model_name}' serves {served}, not {self.spec.name}")
        self.params = params
        self.max_batch = int(self.config.get("max_batch_size", 0) or 0)
        self._inputs = [(t["name"], t.get("data_type", "TYPE_FP32")) for t in self.config.get("input", [])]
        self._outputs = [t["name"] for t in self.config.get("output", [])]
        default = min(self.max_batch, 4) if self.max_batch > 0 else 1
        self.batch_tiles = batch_tiles or default
        if self.max_batch > 0 and self.batch_tiles > self.max_batch:
            raise InputError(f"--batch-tiles {self.batch_tiles} exceeds the model's max_batch_size {self.max_batch}")
        self.name = f"triton-{protocol}"
        self.device = f"{url} {self.model_name}"
        self.precision = params.get("deploykit_precision", "fp32")
        self.requests = 0

    # --- connection ---------------------------------------------------------------------------------------------
    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "http":
                client = self._client_mod.InferenceServerClient(self.url, connection_timeout=10.0,
                                                                network_timeout=self.timeout_s)
            else:
                client = self._client_mod.InferenceServerClient(self.url)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except self._error as exc:
            raise TritonRequestError(f"Triton {what} failed at {self.url}: {one_line(exc, 300)}") from exc

    def _wait_live(self, timeout_s: float) -> None:
        deadline = time.monotonic() + max(timeout_s, 0.1)
        last = None
        while True:
            try:
                if self._client().is_server_live():
                    return
            except Exception as exc:  # noqa: BLE001 -- connection refused / protocol mismatch
                last = exc
            if time.monotonic() >= deadline:
                other = "http" if self.protocol == "grpc" else "grpc"
                raise BackendUnavailableError(f"no live Triton server at {self.url} ({self.protocol}"
                                              f"{': ' + one_line(last) if last else ''}); is it running, and is this "
                                              f"its {self.protocol} port (--protocol {other} for the other one)?")
            time.sleep(0.2)

    def _find_model(self) -> str:
        index = self._call("repository index", self._client().get_model_repository_index,
                           **({"as_json": True} if self.protocol == "grpc" else {}))
        models = index.get("models", []) if isinstance(index, dict) else index
        stem = f"{self.spec.family}_{self.spec.variant}"
        wanted = {f"{stem}_{s}" for s in SUFFIX.values()} | {stem}
        ready = sorted({m["name"] for m in models if m.get("name") in wanted and m.get("state") == "READY"})
        if len(ready) == 1:
            return ready[0]
        listed = ", ".join(f"{m.get('name')} ({m.get('state', '?')})" for m in models) or "none"
        if not ready:
            raise InputError(f"no READY model for {self.spec.name} on {self.url} (looked for "
                             f"{', '.join(sorted(wanted))}"
                             f"; the server has: {listed}); give --model-name")
        raise InputError(f"several models serve {self.spec.name} on {self.url}: {', '.join(ready)}; pick one with "
                         "--model-name")

    def _model_config(self) -> dict:
        client = self._client()
        if not self._call("readiness check", client.is_model_ready, self.model_name):
            raise BackendUnavailableError(f"model '{self.model_name}' is not ready on {self.url} (see the server log)")
        if self.protocol == "grpc":
            config = self._call("model config", client.get_model_config, self.model_name, as_json=True)["config"]
        else:
            config = self._call("model config", client.get_model_config, self.model_name)
        config["max_batch_size"] = int(config.get("max_batch_size", 0) or 0)
        return config

    # --- the Backend interface -----------------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [n for n, _ in self._inputs]

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    @property
    def repository_tile(self) -> tuple[int | None, int | None]:
        """(tile, overlap) recorded by ``deploykit triton --tile T --overlap O`` (None when not given)."""
        tile, overlap = self.params.get("deploykit_tile"), self.params.get("deploykit_overlap")
        return (int(tile) if tile else None), (int(overlap) if overlap else None)

    def infer_once(self, feed: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """One request as it is (no splitting); TritonRequestError when the server answers with an error."""
        mod, client = self._client_mod, self._client()
        requested = []
        inputs = []
        for name, array in feed.items():
            array = np.ascontiguousarray(array)
            dtype = NP_TO_TRITON.get(array.dtype)
            if dtype is None:
                raise InputError(f"cannot send a {array.dtype} array to Triton")
            item = mod.InferInput(name, list(array.shape), dtype)
            item.set_data_from_numpy(array)
            inputs.append(item)
        for name in outputs or self._outputs:
            requested.append(mod.InferRequestedOutput(name))
        if self.protocol == "grpc":
            result = self._call("inference", client.infer, self.model_name, inputs, outputs=requested,
                                client_timeout=self.timeout_s)
        else:
            result = self._call("inference", client.infer, self.model_name, inputs, outputs=requested)
        with self._lock:
            self.requests += 1
        return {name: result.as_numpy(name) for name in outputs or self._outputs}

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self.input_names
        missing = [n for n in names if n not in feed]
        if missing:
            raise InputError(f"Triton model '{self.model_name}' needs inputs {missing}")
        first = feed[names[0]]
        n = first.shape[0]
        step = self.batch_tiles
        chunks = [(s, min(s + step, n)) for s in range(0, n, step)]
        parts = [{k: np.ascontiguousarray(feed[k][s:e], dtype=self._np_dtype(k)) for k in names}
                 for s, e in chunks]
        if len(parts) == 1 or self.concurrency == 1:
            answers = [self.infer_once(p) for p in parts]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="triton-client")
            answers = list(self._pool.map(self.infer_once, parts))
        return {name: np.concatenate([a[name] for a in answers]).astype(np.float32, copy=False)
                for name in self._outputs}

    def _np_dtype(self, name: str):
        dtype = dict(self._inputs).get(name, "TYPE_FP32")
        return TRITON_TO_NP.get(dtype, np.float32)

    def describe(self) -> dict:
        return {"backend": self.name, "device": self.device, "precision": self.precision, "url": self.url,
                "model": self.model_name, "batch_tiles": self.batch_tiles, "concurrency": self.concurrency}

    def statistics(self) -> dict:
        """The server's inference statistics for this model (success / failure counts, queue and compute time)."""
        kwargs = {"as_json": True} if self.protocol == "grpc" else {}
        return self._call("statistics", self._client().get_inference_statistics, self.model_name, **kwargs)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass
        self._local = threading.local()


class _WithNotes:
    """Progress wrapper that adds the server-side notes to the report before the run starts."""

    def __init__(self, inner, notes: list[str]):
        self.inner, self.notes = inner, notes

    def run_started(self, report, files):
        report.notes.extend(self.notes)
        if self.inner is not None:
            self.inner.run_started(report, files)

    def __getattr__(self, item):
        inner = self.__dict__.get("inner")
        if inner is None:
            return lambda *a, **k: None
        return getattr(inner, item)


def resolve_tile(tile: int | str | None, runner: TritonBackend) -> int | None:
    """``auto`` -> the tile the repository was written with (``deploykit triton --tile``), else the whole image."""
    from deploykit.infer.run import parse_tile

    tile = parse_tile(tile)
    if tile == "auto":
        return runner.repository_tile[0]
    return tile


def triton_infer(name: str, inputs, out_dir: str | Path, *, url: str, model_name: str | None = None,
                 protocol: str = "grpc", tile: int | str | None = "auto", overlap: int | None = None,
                 batch_tiles: int | None = None, concurrency: int = 1, timeout_s: float = 120.0,
                 connect_timeout_s: float = 10.0, progress=None, **infer_kwargs):
    """Restore image files on a Triton server; returns deploykit.infer.run's InferReport (one FileResult per file).

    ``infer_kwargs`` go to :func:`deploykit.infer.run.infer` (bit_depth, out_format, quality, recursive, blur_sigma,
    noise_level, right). ``batch_tiles`` tiles per request (default min(4, max_batch_size)); ``concurrency``
    requests in flight per image."""
    from deploykit.infer.run import DEFAULT_OVERLAP, infer

    spec = get_spec(name)
    runner = TritonBackend(url, spec, model_name=model_name, protocol=protocol, batch_tiles=batch_tiles,
                           concurrency=concurrency, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s)
    try:
        chosen = resolve_tile(tile, runner)
        if overlap is None:
            overlap = runner.repository_tile[1] if chosen and chosen == runner.repository_tile[0] else None
            overlap = DEFAULT_OVERLAP if overlap is None else overlap
        if chosen is not None:
            overlap = min(overlap, chosen // 2)
        notes = [f"served by {runner.model_name} on {url} ({protocol}), {runner.batch_tiles} tile(s) per request, "
                 f"{concurrency} in flight"]
        if runner.params.get("deploykit_weights") == "random-init":
            notes.append(f"the served {spec.name} was exported from a random initialisation: outputs are not "
                         "meaningful images")
        return infer(name, inputs, out_dir, runner=runner, tile=chosen, overlap=overlap,
                     batch_tiles=runner.batch_tiles * concurrency, progress=_WithNotes(progress, notes),
                     **infer_kwargs)
    finally:
        runner.close()
