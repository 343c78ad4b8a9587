"""Triton: repository generation (configs parsed with Triton's own ModelConfig schema), the python-backend model, the
client, and a real ``tritonserver`` (the binary bundled with nvidia-pytriton) on loopback.

The server tests export vapsr:s_x4 in this session, write a python-backend repository, start the server on
127.0.0.1 with free ports (stopped at the end of the module, also on failure), and check answers against PyTorch and
ONNX Runtime, a bounded load of 8 clients x 10 requests with tiles (throughput printed; written to
benchmarks/results/<machine slug>/triton_load.json with DEPLOYKIT_RECORD_RESULTS=1), and malformed requests. They
skip with the reason (and the server's log tail) when tritonclient / nvidia-pytriton are missing or the server
cannot start here.
"""

from __future__ import annotations

import hashlib
import json
import platform
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (pip install 'tritonclient[grpc,http]')")
pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed")

import deploykit  # noqa: E402
from deploykit.errors import ArtifactError, BackendUnavailableError, EngineError, InputError  # noqa: E402
from deploykit.artifacts.manifest import read_manifest  # noqa: E402
from deploykit.serve.triton_config import RepoOptions, validate_config  # noqa: E402
from deploykit.serve.triton_python_model import ensure_importable  # noqa: E402
from deploykit.serve.triton_repo import write_repository  # noqa: E402
from deploykit.serve.triton_server import BundledTriton, LocalServer, interpreter_libdir  # noqa: E402

MODEL = "vapsr:s_x4"
TILE, OVERLAP = 48, 8
ROOT = Path(__file__).resolve().parents[2]
MAX_ABS = 1e-4


# --- fixtures: one export, one repository, one server per module ---------------------------------------------------

@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("triton-exports")
    deploykit.export(MODEL, out=out, fp16=False, exporter="legacy")  # legacy: the fast exporter for this model
    return out


@pytest.fixture(scope="module")
def onnx_file(exports) -> Path:
    folder = exports / "vapsr" / "s_x4"
    return folder / read_manifest(folder)["artifacts"][0]["file"]


@pytest.fixture(scope="module")
def bundle():
    """The tritonserver of nvidia-pytriton (looked up before the export, so a missing one skips fast)."""
    try:
        return BundledTriton.find()
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def server(bundle, exports, tmp_path_factory):
    repo = tmp_path_factory.mktemp("triton-repo") / "models"
    write_repository(MODEL, repo, exports=exports,
                     options=RepoOptions(backend="python", max_batch=8, instances=2, tile=TILE, overlap=OVERLAP))
    srv = LocalServer(repo, workdir=tmp_path_factory.mktemp("triton-server"))
    try:
        srv.start(timeout_s=120)
    except BackendUnavailableError as exc:
        srv.cleanup()
        pytest.skip(f"tritonserver (nvidia-pytriton {srv.bundle.version}) cannot start on this machine: {exc}")
    try:
        yield srv
    finally:
        code = srv.stop()
        print(f"\ntritonserver stopped (exit code {code})")


@pytest.fixture(scope="module")
def reference(exports):
    """PyTorch FP32 with the weights the export was made from (seeded random init)."""
    from deploykit.verify.reference import reference_backend

    backend, spec = reference_backend(read_manifest(exports / "vapsr" / "s_x4"), device="cpu")
    assert spec.name == MODEL
    return backend


@pytest.fixture(scope="module")
def ort(onnx_file):
    from deploykit.runtime.ort import OrtBackend

    return OrtBackend(onnx_file, threads=1)


def _client(server, protocol="grpc", **kwargs):
    from deploykit.serve.triton_client import TritonBackend

    url = server.grpc_url if protocol == "grpc" else server.http_url
    return TritonBackend(url, MODEL, protocol=protocol, timeout_s=60, **kwargs)


# --- repository generation (no server) -----------------------------------------------------------------------------

def _parsed(result):
    return validate_config((result.model_dir / "config.pbtxt").read_text(), model_name=result.model_name)


def test_onnxruntime_config_from_the_manifest(exports, tmp_path):
    repo = tmp_path / "repo"
    result = write_repository(MODEL, repo, exports=exports, options=RepoOptions(backend="onnxruntime", max_batch=4,
                                                                                instances=2))
    config = _parsed(result)
    assert result.model_name == "vapsr_s_x4_onnx" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 4 and list(config.input[0].dims) == [3, -1, -1]
    assert config.input[0].name == "image" and config.output[0].name == "output"
    assert config.input[0].data_type == config.output[0].data_type == 11  # TYPE_FP32
    assert config.default_model_filename == "vapsr_s_x4.fp32.onnx"
    assert (result.model_dir / "1" / "vapsr_s_x4.fp32.onnx").is_file()
    assert config.instance_group[0].count == 2 and config.instance_group[0].kind == 0  # KIND_AUTO
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4]
    warm = config.model_warmup[0]
    assert warm.batch_size == 1 and list(warm.inputs["image"].dims) == [3, 64, 64] and warm.inputs["image"].zero_data
    text = result.config_text
    assert "whole images of different" in text and "Tiles of one size" in text
    assert config.parameters["deploykit_model"].string_value == MODEL
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator


def test_ort_trt_options_and_unbatched_config(exports, tmp_path):
    result = write_repository(MODEL, tmp_path / "repo", exports=exports,
                              options=RepoOptions(backend="onnxruntime", ort_trt=True, tile=64, overlap=16,
                                                  max_batch=8, device="gpu"))
    config = _parsed(result)
    accel = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accel.name == "tensorrt"
    assert accel.parameters["precision_mode"] == "FP32" and accel.parameters["trt_engine_cache_enable"] == "1"
    assert accel.parameters["trt_profile_max_shapes"] == "image:8x3x64x64"
    assert config.instance_group[0].kind == 1  # KIND_GPU
    assert list(config.model_warmup[0].inputs["image"].dims) == [3, 64, 64]
    unbatched = _parsed(write_repository(MODEL, tmp_path / "repo", exports=exports,
                                         options=RepoOptions(backend="onnxruntime", max_batch=0, model_name="nb")))
    assert unbatched.max_batch_size == 0 and list(unbatched.input[0].dims) == [-1, 3, -1, -1]
    assert not unbatched.HasField("dynamic_batching")
    assert list(unbatched.model_warmup[0].inputs["image"].dims) == [1, 3, 64, 64]
    with pytest.raises(InputError, match="--ort-trt configures the onnxruntime backend"):
        write_repository(MODEL, tmp_path / "repo", exports=exports, options=RepoOptions(backend="python", ort_trt=True))
    with pytest.raises(ArtifactError, match="no fp16 ONNX artifact"):
        write_repository(MODEL, tmp_path / "repo", exports=exports, options=RepoOptions(precision="fp16"))


def _fake_engine(folder: Path, cc: str, gpu: str, created: str, max_batch: int = 4) -> dict:
    from deploykit.artifacts import engines
    from deploykit.runtime.profiles import Profile

    name = f"vapsr_s_x4.fp16.sm{cc.replace('.', '')}.{created[-2:]}.engine"
    (folder / name).write_bytes(hashlib.sha256(name.encode()).digest() * 8)  # a stand-in file: never deserialised
    profile = Profile((32, 32), (64, 64), (256, 256), max_batch).to_dict()
    identity = {"model": "vapsr", "variant": "s_x4", "precision": "fp16", "tensorrt": "10.9.0.34", "gpu_name": gpu,
                "compute_capability": cc, "profile": profile, "onnx_file": "vapsr_s_x4.fp32.onnx",
                "onnx_sha256": "0" * 64}
    entry = engines.engine_entry(identity=identity, key=hashlib.sha256(name.encode()).hexdigest()[:16], file=name,
                                 profile=profile, build={}, io=[], created=created, engine_path=folder / name)
    engines.upsert_engine_entry(folder, entry)
    return entry


def test_tensorrt_config_has_one_plan_per_compute_capability(exports, tmp_path):
    root = tmp_path / "exports"
    shutil.copytree(exports, root)
    folder = root / "vapsr" / "s_x4"
    with pytest.raises(EngineError, match="no TensorRT engines.*deploykit build vapsr:s_x4"):
        write_repository(MODEL, tmp_path / "repo", exports=root, options=RepoOptions(backend="tensorrt"))
    _fake_engine(folder, "8.6", "NVIDIA GeForce RTX 3090", "2026-01-01T00:00:01")
    newest_86 = _fake_engine(folder, "8.6", "NVIDIA A10", "2026-01-01T00:00:02")
    h100 = _fake_engine(folder, "9.0", "NVIDIA H100", "2026-01-01T00:00:03", max_batch=2)
    result = write_repository(MODEL, tmp_path / "repo", exports=root,
                              options=RepoOptions(backend="tensorrt", max_batch=8, tile=64))
    config = _parsed(result)
    assert config.platform == "tensorrt_plan" and result.model_name == "vapsr_s_x4_trt"
    assert dict(config.cc_model_filenames) == {"8.6": newest_86["file"], "9.0": h100["file"]}
    assert config.max_batch_size == 2 and any("lowered from 8 to 2" in n for n in result.notes)
    assert any("superseded" in n for n in result.notes)
    assert config.instance_group[0].kind == 1 and list(config.input[0].dims) == [3, -1, -1]
    assert list(config.model_warmup[0].inputs["image"].dims) == [3, 64, 64]
    for name in (newest_86["file"], h100["file"]):
        assert (result.model_dir / "1" / name).is_file()
    (folder / h100["file"]).write_bytes(b"torn")  # sha256 no longer matches its entry
    with pytest.raises(EngineError, match="does not match the sha256"):
        write_repository(MODEL, tmp_path / "repo", exports=root, options=RepoOptions(backend="tensorrt"))


def test_missing_export_and_bad_configs_are_clear_errors(exports, tmp_path, monkeypatch):
    with pytest.raises(ArtifactError, match=r"run 'deploykit export vapsr:x2' first"):
        write_repository("vapsr:x2", tmp_path / "repo", exports=exports)
    with pytest.raises(ArtifactError, match="does not parse as Triton's ModelConfig.*banana"):
        validate_config('name: "m"\nmax_batch_size: banana\n')
    with pytest.raises(ArtifactError, match="does not parse as Triton's ModelConfig"):
        validate_config('name: "m"\nno_such_field: 1\n')
    with pytest.raises(ArtifactError, match="name 'm' differs"):
        validate_config('name: "m" backend: "python" input [{name: "a" data_type: TYPE_FP32 dims: [1]}] '
                        'output [{name: "b" data_type: TYPE_FP32 dims: [1]}]', model_name="other")
    from deploykit.serve import triton_repo

    good = write_repository(MODEL, tmp_path / "repo", exports=exports)
    before = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")}
    monkeypatch.setattr(triton_repo, "render_config", lambda *a, **k: ("name: 'x' max_batch_size: oops\n", []))
    with pytest.raises(ArtifactError, match="does not parse"):
        write_repository(MODEL, tmp_path / "repo", exports=exports)
    assert {p.relative_to(tmp_path) for p in tmp_path.rglob("*")} == before  # nothing written, nothing staged
    assert (good.model_dir / "config.pbtxt").read_text() == good.config_text


def test_rewrite_replaces_the_model_atomically(exports, tmp_path, monkeypatch):
    from deploykit.serve import triton_repo

    repo = tmp_path / "repo"
    first = write_repository(MODEL, repo, exports=exports, options=RepoOptions(backend="python", max_batch=4))
    assert not first.replaced and sorted(first.files) == sorted(["config.pbtxt", "1/vapsr_s_x4.fp32.onnx",
                                                                "1/model.py", "1/manifest.json"])
    second = write_repository(MODEL, repo, exports=exports, options=RepoOptions(backend="python", max_batch=2))
    assert second.replaced and _parsed(second).max_batch_size == 2
    calls = {"n": 0}
    real_copy = shutil.copy2

    def failing_copy(src, dst, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_copy(src, dst, *a, **k)

    monkeypatch.setattr(triton_repo.shutil, "copy2", failing_copy)
    with pytest.raises(ArtifactError, match="No space left"):
        write_repository(MODEL, repo, exports=exports, options=RepoOptions(backend="python", max_batch=8))
    assert _parsed(second).max_batch_size == 2  # the previous model is intact
    assert sorted(p.name for p in repo.iterdir()) == ["vapsr_s_x4_python"]  # no staging dir inside the repository
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]  # and none left beside it


def test_python_repository_records_where_deploykit_imports_from(exports, tmp_path):
    """The python model's stub reads deploykit_sys_path back from config.pbtxt: its first entry must be the directory
    this deploykit imports from (the parent of the package), so another Python on the server can import it."""
    from deploykit.serve.triton_python_model import recorded_paths

    result = write_repository(MODEL, tmp_path / "repo", exports=exports, options=RepoOptions(backend="python"))
    recorded = recorded_paths(result.model_dir / "config.pbtxt")
    assert recorded is not None
    paths, python = recorded
    assert python == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert Path(paths[0]) == Path(deploykit.__file__).resolve().parents[1]
    assert len(paths) == len(set(paths))
    import numpy
    import onnxruntime

    for module in (numpy, onnxruntime):  # the stub needs these too: their site-packages are recorded
        assert str(Path(module.__file__).resolve().parents[1]) in paths, module.__name__
    config = _parsed(result)
    assert config.parameters["deploykit_sys_path"].string_value == os.pathsep.join(paths)
    assert (result.model_dir / "1" / "model.py").read_bytes() == (
        Path(deploykit.__file__).parent / "serve" / "triton_python_model.py").read_bytes()


def test_python_model_import_fallback(tmp_path, monkeypatch):
    pkg = tmp_path / "site"
    (pkg / "dk_probe_module").mkdir(parents=True)
    (pkg / "dk_probe_module" / "__init__.py").write_text("VALUE = 1\n")
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert ensure_importable([str(pkg)], here, modules=("json",), env={}) == []  # importable: nothing changes
    with pytest.raises(ImportError, match="written by Python 2.7"):
        ensure_importable([str(pkg)], "2.7", modules=("dk_probe_module",), env={})
    assert str(pkg) not in sys.path
    assert ensure_importable([str(pkg)], here, modules=("dk_probe_module",), env={}) == [str(pkg)]
    assert sys.path[-1] == str(pkg)  # appended: the server's own packages win
    sys.modules.pop("dk_probe_module", None)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(pkg)])
    assert ensure_importable(["/nonexistent"], "2.7", modules=("dk_probe_module",),
                             env={"DEPLOYKIT_TRITON_SYS_PATH": str(pkg)}) == [str(pkg)]
    sys.modules.pop("dk_probe_module", None)


def test_cli_triton_command(cli_run, exports, tmp_path):
    code, out, err = cli_run("triton", MODEL, "--repo", str(tmp_path / "repo"), "--exports",
                             str(exports), "--backend", "python", "--tile", "48", "--overlap", "8")
    assert code == 0, err
    assert "vapsr_s_x4_python" in out and "parses as Triton's ModelConfig" in out and "random initialisation" in out
    code, out, err = cli_run("triton", "vapsr:x3", "--repo", str(tmp_path / "repo"),
                             "--exports", str(exports))
    assert code == 2 and "run 'deploykit export vapsr:x3' first" in err and "Traceback" not in out + err
    code, _, err = cli_run("triton", MODEL, "--exports", str(exports), "--repo",
                           str(tmp_path / "repo"), "--backend", "tensorrt")
    assert code == 2 and "no TensorRT engines" in err
    code, _, err = cli_run("triton-client", MODEL, "x.png", "-o", str(tmp_path / "o"),
                           "--url", "127.0.0.1:1", "--connect-timeout", "0.5")
    assert code == 2 and "no live Triton server at 127.0.0.1:1" in err


# --- a real server ----------------------------------------------------------------------------------------------------

def test_server_answers_match_pytorch_and_onnxruntime(server, reference, ort):
    rng = np.random.default_rng(1)
    for protocol, shape in (("grpc", (1, 3, 37, 53)), ("http", (2, 3, 48, 48))):
        x = rng.random(shape, dtype=np.float32)
        with _client(server, protocol) as client:
            got = client.infer_once({"image": x})["output"]
        want = reference.run({"image": x})["output"]
        assert got.shape == (shape[0], 3, shape[2] * 4, shape[3] * 4) and got.dtype == np.float32
        assert np.isfinite(got).all()
        assert float(np.abs(got - want).max()) <= MAX_ABS, protocol
        assert float(np.abs(got - ort.run({"image": x})["output"]).max()) <= 1e-5, protocol


def _stub_libpythons(server) -> set[str]:
    """The libpython each python-backend stub process of ``server`` embeds (from /proc/<pid>/maps)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != server.process.pid:
                continue
            found |= {line.split()[-1] for line in (entry / "maps").read_text().splitlines() if "libpython" in line}
        except (OSError, IndexError, ValueError):
            continue
    return found


def test_stub_embeds_this_python(server):
    if not Path("/proc/self/maps").exists():
        pytest.skip("no /proc here")
    libs = _stub_libpythons(server)
    assert libs, "no python-backend stub process found"
    libdir = interpreter_libdir()
    if libdir:
        assert all(Path(lib).resolve().parent == Path(libdir).resolve() for lib in libs), libs


def test_stub_on_another_python_imports_deploykit_from_recorded_paths(server, tmp_path_factory, ort):
    """Without this interpreter's libdir on LD_LIBRARY_PATH the stub embeds whatever libpython3.X the system has (here:
    Debian's /usr/lib python3.11, without numpy or onnxruntime); model.py appends the recorded paths and serves."""
    other = LocalServer(server.repo, workdir=tmp_path_factory.mktemp("triton-server-other"), same_python=False)
    try:
        other.start(timeout_s=120)
    except BackendUnavailableError as exc:
        pytest.skip(f"the stub cannot start without this interpreter's libdir here: {exc}")
    try:
        libs = _stub_libpythons(other) if Path("/proc/self/maps").exists() else set()
        x = np.random.default_rng(5).random((2, 3, 40, 56), dtype=np.float32)
        from deploykit.serve.triton_client import TritonBackend

        with TritonBackend(other.grpc_url, MODEL, timeout_s=60) as client:
            got = client.infer_once({"image": x})["output"]
        assert float(np.abs(got - ort.run({"image": x})["output"]).max()) <= MAX_ABS
        print(f"\nstub embedded {sorted(libs)} and served correctly")
    finally:
        other.cleanup()


def test_triton_client_writes_what_local_infer_writes(server, onnx_file, tmp_path, cli_run):
    from deploykit.infer.run import infer
    from deploykit.serve.triton_client import triton_infer

    rng = np.random.default_rng(2)
    src = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(src)
    gray = tmp_path / "gray.png"
    Image.fromarray(rng.integers(0, 256, (33, 41), dtype=np.uint8), "L").save(gray)
    local = infer(MODEL, [src, gray], tmp_path / "local", backend="ort", onnx=onnx_file, tile=TILE, overlap=OVERLAP)
    assert local.exit_code == 0
    report = triton_infer(MODEL, [src, gray], tmp_path / "remote", url=server.grpc_url, concurrency=2)
    assert report.exit_code == 0 and report.results[0].tiles > 1  # the repository's tile (48, overlap 8) was used
    assert any("served by vapsr_s_x4_python" in n for n in report.notes)
    for name in ("photo.png", "gray.png"):
        a = np.asarray(Image.open(tmp_path / "local" / name)).astype(int)
        b = np.asarray(Image.open(tmp_path / "remote" / name)).astype(int)
        assert a.shape == b.shape and np.abs(a - b).max() <= 1, name  # float sums of batched tiles: <= 1 LSB
    assert Image.open(tmp_path / "remote" / "gray.png").mode == "L"
    code, out, err = cli_run("triton-client", MODEL, str(src), "-o", str(tmp_path / "cli"),
                             "--url", server.http_url, "--protocol", "http", "--batch-tiles", "3",
                             "--concurrency", "2")
    assert code == 0, err
    assert "1 written" in out and "360x280" in out
    assert np.abs(np.asarray(Image.open(tmp_path / "cli" / "photo.png")).astype(int)
                  - np.asarray(Image.open(tmp_path / "local" / "photo.png")).astype(int)).max() <= 1


def _success_count(client) -> int:
    stats = client.statistics()["model_stats"]
    return sum(int(m.get("inference_stats", {}).get("success", {}).get("count", 0)) for m in stats)


def _batch_histogram(client) -> dict[int, int]:
    """Model executions per batch size (what the dynamic batcher formed)."""
    hist: dict[int, int] = {}
    for m in client.statistics()["model_stats"]:
        for row in m.get("batch_stats", []):
            size = int(row["batch_size"])
            hist[size] = hist.get(size, 0) + int(row.get("compute_infer", {}).get("count", 0))
    return hist


class _Load:
    """A bounded load: one thread per client (alternating grpc / http, one connection each), released together,
    each sending its batches in order; answers, errors and latencies are collected under one lock."""

    def __init__(self, server, batches: list[list[np.ndarray]], tiles_per_request: int, deadline_s: float):
        self.server, self.batches, self.tiles_per_request = server, batches, tiles_per_request
        self.deadline_s = deadline_s
        self.results: dict[tuple[int, int], np.ndarray] = {}
        self.errors: list[str] = []
        self.latencies: list[float] = []
        self.finished: list[float] = []
        self.released: list[float] = []
        self.lock = threading.Lock()
        self.gate = threading.Barrier(len(batches), action=lambda: self.released.append(time.perf_counter()))
        self.start = 0.0

    def run(self) -> float:
        """Run every client; the wall time from the first request sent to the last answer received."""
        self.start = time.perf_counter()
        threads = [threading.Thread(target=self._client, args=(k,), daemon=True) for k in range(len(self.batches))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=self.deadline_s + 30)
        assert not any(t.is_alive() for t in threads), "a client thread did not finish in time"
        assert not self.errors, self.errors
        return max(self.finished) - self.released[0]

    def _error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)

    def _client(self, k: int) -> None:
        try:
            client = _client(self.server, "grpc" if k % 2 == 0 else "http", batch_tiles=self.tiles_per_request)
        except Exception as exc:  # noqa: BLE001
            self._error(f"client {k}: {exc}")
            self.gate.abort()
            return
        with client:
            try:
                self.gate.wait(timeout=60)
            except threading.BrokenBarrierError:
                pass
            for i, batch in enumerate(self.batches[k]):
                if time.perf_counter() - self.start > self.deadline_s:
                    self._error(f"client {k}: deadline reached before request {i}")
                    return
                self._request(client, k, i, batch)

    def _request(self, client, k: int, i: int, batch: np.ndarray) -> None:
        t0 = time.perf_counter()
        try:
            out = client.infer_once({"image": batch})["output"]
        except Exception as exc:  # noqa: BLE001
            self._error(f"client {k} request {i}: {exc}")
            return
        with self.lock:
            now = time.perf_counter()
            self.latencies.append(now - t0)
            self.finished.append(now)
            self.results[(k, i)] = out


def test_concurrent_clients_lose_nothing(server, ort, tmp_path):
    clients, per_client, tiles_per_request = 8, 10, 2
    rng = np.random.default_rng(3)
    batches = [[rng.random((tiles_per_request, 3, TILE, TILE), dtype=np.float32) for _ in range(per_client)]
               for _ in range(clients)]
    with _client(server) as probe:
        success_before, hist_before = _success_count(probe), _batch_histogram(probe)
    load = _Load(server, batches, tiles_per_request, deadline_s=120.0)
    wall = load.run()
    total = clients * per_client
    assert len(load.results) == total  # none lost
    diffs = {}
    for (k, i), out in load.results.items():
        want = ort.run({"image": batches[k][i]})["output"]
        diffs[(k, i)] = float(np.abs(out - want).max()) if out.shape == want.shape else float("inf")
    wrong = [(k, i, d) for (k, i), d in diffs.items() if d > MAX_ABS]
    assert not wrong, wrong
    assert server.ready()  # still healthy
    with _client(server, "http") as after:
        x = batches[0][0]
        got = after.infer_once({"image": x})["output"]
        assert float(np.abs(got - ort.run({"image": x})["output"]).max()) <= MAX_ABS
        served = _success_count(after) - success_before
        hist_after = _batch_histogram(after)
    batches_formed = {str(b): n - hist_before.get(b, 0) for b, n in sorted(hist_after.items())
                      if n - hist_before.get(b, 0) > 0}
    assert served == total + 1  # every request reached the model exactly once (+ the check above)
    lat = np.sort(np.array(load.latencies)) * 1000
    results = {"requests": total, "tiles": total * tiles_per_request, "lost": total - len(load.results),
               "wrong": len(wrong), "max_abs_vs_ort": max(diffs.values()), "wall_s": round(wall, 3),
               "requests_per_s": round(total / wall, 2), "tiles_per_s": round(total * tiles_per_request / wall, 2),
               "latency_ms": {"min": round(float(lat[0]), 1), "median": round(float(np.median(lat)), 1),
                              "p90": round(float(np.percentile(lat, 90)), 1), "max": round(float(lat[-1]), 1)},
               "server_success_count_delta": served, "server_executions_by_batch_size": batches_formed}
    path = _write_load_record(server, results, clients=clients, per_client=per_client,
                              tiles_per_request=tiles_per_request, tmp_path=tmp_path)
    print(f"\ntriton load: {total} requests ({total * tiles_per_request} tiles {TILE}x{TILE}) from {clients} clients "
          f"in {wall:.2f} s: {total / wall:.1f} requests/s, {total * tiles_per_request / wall:.1f} tiles/s; latency "
          f"median {np.median(lat):.0f} ms, p90 {np.percentile(lat, 90):.0f} ms; lost 0, wrong 0; executions by "
          f"batch size {batches_formed} -> {path}")


def _write_load_record(server, results: dict, *, clients: int, per_client: int, tiles_per_request: int,
                       tmp_path: Path) -> Path:
    """benchmarks/results/<machine slug>/triton_load.json with DEPLOYKIT_RECORD_RESULTS=1, else under tmp_path: the
    committed figures are refreshed only on request, a test run must not rewrite the source tree."""
    from deploykit.util.files import write_json_atomic
    from deploykit.util.system import cpu_model, cpu_slug

    record = {
        "benchmark": "triton_load",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpu": cpu_model(), "cores_visible": len(os.sched_getaffinity(0)),
                    "loadavg_1min": float(Path("/proc/loadavg").read_text().split()[0])
                    if Path("/proc/loadavg").exists() else None, "platform": platform.platform()},
        "tools": {**_versions(), "tritonserver": _server_version(server)},
        "settings": {"model": MODEL, "weights": "random-init (seed 0)",
                     "repository_backend": "python (OrtBackend, CPU)",
                     "instances": 2, "max_batch_size": 8, "dynamic_batching_delay_us": 2000, "clients": clients,
                     "requests_per_client": per_client, "tiles_per_request": tiles_per_request,
                     "tile": [TILE, TILE], "protocols": "clients alternate grpc / http, one connection each",
                     "server": "tritonserver bundled with nvidia-pytriton, 127.0.0.1",
                     "note": "wall time from the first request to the last answer, client and server on the same "
                             "shared machine; includes serialisation and loopback transfer"},
        "results": results,
    }
    out_dir = ROOT / "benchmarks" / "results" / cpu_slug() if os.environ.get("DEPLOYKIT_RECORD_RESULTS") == "1" \
        else tmp_path
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "triton_load.json", record)
    return out_dir / "triton_load.json"


def _versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("deploykit", "onnxruntime", "numpy", "tritonclient", "nvidia-pytriton", "torch"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _server_version(server) -> str | None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url, connection_timeout=5, network_timeout=10)
    try:
        return client.get_server_metadata().get("version")
    finally:
        client.close()


def test_malformed_requests_get_errors_and_the_server_keeps_serving(server, ort):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(server.grpc_url)
    name = "vapsr_s_x4_python"

    def send(array, datatype, shape=None, input_name="image"):
        item = grpcclient.InferInput(input_name, list(shape or array.shape), datatype)
        item.set_data_from_numpy(array)
        return client.infer(name, [item], client_timeout=30)

    bad = [
        ("FP64 data", lambda: send(np.zeros((1, 3, 16, 16), np.float64), "FP64"), "data-type"),
        ("INT32 data", lambda: send(np.zeros((1, 3, 16, 16), np.int32), "INT32"), "data-type"),
        ("4 channels", lambda: send(np.zeros((1, 4, 16, 16), np.float32), "FP32"), "shape"),
        ("rank 3", lambda: send(np.zeros((1, 3, 16), np.float32), "FP32"), "shape"),
        ("batch 9 > max 8", lambda: send(np.zeros((9, 3, 8, 8), np.float32), "FP32"), "batch"),
        ("wrong input name", lambda: send(np.zeros((1, 3, 8, 8), np.float32), "FP32", input_name="img"), "img"),
        ("zero-size image", lambda: send(np.zeros((1, 3, 0, 0), np.float32), "FP32"), ""),
    ]
    try:
        for label, call, hint in bad:
            with pytest.raises(InferenceServerException) as caught:
                call()
            assert hint.lower() in str(caught.value).lower(), (label, str(caught.value))
            assert server.ready(), f"server not ready after {label}"
            print(f"\n{label}: {' '.join(str(caught.value).split())[:160]}", end="")
        x = np.random.default_rng(4).random((1, 3, 24, 20), dtype=np.float32)
        got = send(x, "FP32").as_numpy("output")
        assert float(np.abs(got - ort.run({"image": x})["output"]).max()) <= MAX_ABS
    finally:
        client.close()
    log = server.log_path.read_text(errors="replace")
    assert "Segmentation" not in log
    assert "PyCapsule_GetPointer" not in log  # model.py's DLPack hand-over leaves no destructor errors (NumPy 2)
    assert json.loads(json.dumps({"log_tail": server.log_tail(5)}))  # the log is readable text
