"""A local ``tritonserver``: the binary bundled with ``nvidia-pytriton``, started on loopback with free ports.

For the tests, the CPU path in docs/triton.md and ``deploykit triton-serve``; production serves the repository with
the Triton container. :class:`BundledTriton` finds the binary, its libraries, backends and Python stubs;
:class:`LocalServer` runs it on a repository as a context manager and never outlives the process that started it.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from deploykit.errors import BackendUnavailableError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class BundledTriton:
    """Where nvidia-pytriton keeps its tritonserver: binary, shared libraries, backends, Python stubs."""

    root: Path
    binary: Path
    libs: Path
    backends: Path
    stub: Path
    version: str

    @classmethod
    def find(cls) -> "BundledTriton":
        found = importlib.util.find_spec("pytriton")
        if found is None or not found.submodule_search_locations:
            raise BackendUnavailableError("no tritonserver here: pip install nvidia-pytriton (it bundles the binary "
                                          "with the Python backend), or use the Triton container")
        pkg = Path(next(iter(found.submodule_search_locations)))
        root = pkg / "tritonserver"
        py = f"{sys.version_info[0]}.{sys.version_info[1]}"
        libs = next((p for p in (pkg.parent / "nvidia_pytriton.libs", root / "external_libs") if p.is_dir()),
                    pkg.parent / "nvidia_pytriton.libs")
        stub = root / "python_backend_stubs" / py / "triton_python_backend_stub"
        binary = root / "bin" / "tritonserver"
        if not binary.is_file():
            raise BackendUnavailableError(f"nvidia-pytriton is installed but {binary} is missing")
        if not stub.is_file():
            raise BackendUnavailableError(f"nvidia-pytriton has no Python backend stub for Python {py} ({stub})")
        try:
            version = metadata.version("nvidia-pytriton")
        except metadata.PackageNotFoundError:
            version = "?"
        return cls(root, binary, libs, root / "backends", stub, version)


def interpreter_libdir() -> str | None:
    """The directory of this interpreter's shared libpython, when it has one (a static build has none)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if libdir and any(Path(libdir).glob(f"libpython{version}*.so*")):
        return libdir
    return None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM the server when the process that started it dies (a killed test run leaves
    no server behind). Linux prctl(PR_SET_PDEATHSIG); ignored where unavailable."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


class LocalServer:
    """``tritonserver`` (from nvidia-pytriton) on 127.0.0.1 with free ports, serving ``repo``; a context manager.

    The Python backend's stub embeds libpython: with this interpreter's libdir first on LD_LIBRARY_PATH it embeds
    *this* Python (same site-packages, so deploykit and onnxruntime import); otherwise it takes whatever libpython
    the system has, and deploykit's model.py adds the recorded paths (docs/triton.md).
    """

    def __init__(self, repo: str | Path, *, host: str = "127.0.0.1", http_port: int | None = None,
                 grpc_port: int | None = None, workdir: str | Path | None = None, log_verbose: int = 0,
                 same_python: bool = True, extra_args: list[str] | None = None):
        self.repo = Path(repo).resolve()
        self.host = host
        self.http_port = http_port or free_port(host)
        self.grpc_port = grpc_port or free_port(host)
        while self.grpc_port == self.http_port:
            self.grpc_port = free_port(host)
        self.bundle = BundledTriton.find()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="deploykit-triton-"))
        self.log_path = self.workdir / "tritonserver.log"
        self.log_verbose = log_verbose
        self.same_python = same_python
        self.extra_args = list(extra_args or [])
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def _backends(self) -> Path:
        """A backend directory with the stub for this Python where the python backend looks for it."""
        dst = self.workdir / "backends"
        if not dst.exists():
            shutil.copytree(self.bundle.backends, dst, ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy2(self.bundle.stub, dst / "python" / "triton_python_backend_stub")
        return dst

    def command(self) -> list[str]:
        return [str(self.bundle.binary), f"--model-repository={self.repo}", f"--backend-directory={self._backends()}",
                f"--cache-directory={self.bundle.root / 'caches'}",
                "--http-address", self.host, "--http-port", str(self.http_port),
                "--grpc-address", self.host, "--grpc-port", str(self.grpc_port),
                "--allow-metrics", "false", "--allow-sagemaker", "false", "--allow-vertex-ai", "false",
                "--exit-on-error", "true", "--strict-readiness", "true", "--exit-timeout-secs", "10",
                "--model-control-mode", "none", "--log-verbose", str(self.log_verbose), *self.extra_args]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        libs = [str(self.bundle.libs)]
        libdir = interpreter_libdir() if self.same_python else None
        if libdir:
            libs.insert(0, libdir)
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def start(self, timeout_s: float = 90.0) -> "LocalServer":
        """Start and wait until the server and every model are ready; BackendUnavailableError with the log tail."""
        if self.process is not None:
            return self
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                        env=self.environment(), cwd=self.workdir, start_new_session=True,
                                        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.stop()
                raise BackendUnavailableError(f"tritonserver exited with code {code} while starting:\n"
                                              f"{self.log_tail()}")
            if self.ready():
                return self
            time.sleep(0.25)
        self.stop()
        raise BackendUnavailableError(f"tritonserver was not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        text = [t for t in text if not t.startswith(("+", "|"))]  # Triton's boxed status tables
        return "\n".join(text[-lines:])

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGINT (graceful), then SIGKILL of the server's process group after ``timeout_s``."""
        proc, self.process = self.process, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait(timeout=10)
            code = proc.returncode
            atexit.unregister(self.stop)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()
