"""Building and running the C++ runners (``cpp/``: dkcore, ``aoti_run``, ``trt_run``, ``dk_selftest``) from Python.

``build_cpp()`` wraps CMake: configure with the torch wheel's CMake prefix (so ``find_package(Torch)`` finds the
libtorch inside the wheel, with its ``_GLIBCXX_USE_CXX11_ABI`` setting) and Release, build, and report which
binaries exist and which runners CMake skipped and why (``"trt_run: skipped: TensorRT not found (set
TensorRT_ROOT)"``). ``run_binary()`` runs one of them with the caller's arguments.

The C++ sources are located next to the package: ``cpp/`` beside the ``deploykit`` package directory, i.e. in the
repository of an editable install (``pip install -e .``); ``DEPLOYKIT_CPP_DIR`` points elsewhere. A wheel install
has no ``cpp/`` and gets an error saying so. Kept in the serve layer as the way to ship the C++ runners; it imports
torch only to ask where libtorch's CMake files are.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deploykit.errors import CppBuildError

CPP_DIR_ENV = "DEPLOYKIT_CPP_DIR"
RUNNERS = ("aoti_run", "trt_run")
BINARIES = ("aoti_run", "trt_run", "dk_selftest")
_SKIPPED = re.compile(r"^-- (\w+): skipped: (.*)$")
CHECKOUT = Path(__file__).resolve().parents[2]  # deploykit/serve/cpp_build.py -> the directory holding deploykit/


@dataclass
class CppBuild:
    source_dir: Path
    build_dir: Path
    binaries: dict[str, Path] = field(default_factory=dict)  # name -> path of what exists after the build
    skipped: dict[str, str] = field(default_factory=dict)    # runner -> CMake's reason
    configure_seconds: float = 0.0
    build_seconds: float = 0.0
    log: str = ""


def source_dir() -> Path:
    """The ``cpp/`` directory (CMakeLists.txt), or CppBuildError explaining where it was looked for."""
    env = os.environ.get(CPP_DIR_ENV)
    if env:
        path = Path(env).expanduser().resolve()
        if not (path / "CMakeLists.txt").is_file():
            raise CppBuildError(f"{CPP_DIR_ENV}={env} has no CMakeLists.txt; point it at deploykit's cpp/ directory")
        return path
    path = CHECKOUT / "cpp"
    if not (path / "CMakeLists.txt").is_file():
        raise CppBuildError(f"the C++ sources were not found at {path}: they ship with the repository, not with the "
                            "wheel. Use a checkout installed with 'pip install -e .', or set "
                            f"{CPP_DIR_ENV} to its cpp/ directory")
    return path


def default_build_dir() -> Path:
    """``<repository>/build/cpp`` (git-ignored) next to the sources."""
    return source_dir().parent / "build" / "cpp"


def torch_cmake_prefix() -> str | None:
    """``torch.utils.cmake_prefix_path`` (where TorchConfig.cmake lives inside the wheel), None without torch."""
    try:
        import torch.utils

        return torch.utils.cmake_prefix_path
    except ImportError:
        return None


def missing_tools() -> list[str]:
    """What the build needs and this machine lacks: cmake, a C++ compiler (headers are CMake's to report)."""
    missing = []
    if shutil.which("cmake") is None:
        missing.append("cmake (apt-get install cmake, or pip install cmake)")
    if not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "c++", "g++", "clang++") if c):
        missing.append("a C++17 compiler (apt-get install g++)")
    return missing


def _include_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("CPATH", "").split(os.pathsep) if p]
    dirs += [Path(p) for p in os.environ.get("CPLUS_INCLUDE_PATH", "").split(os.pathsep) if p]
    return dirs + [Path("/usr/local/include"), Path("/usr/include")]


def missing_headers() -> list[str]:
    """nlohmann/json.hpp and stb (stb_image.h, stb_image_write.h) in the usual include directories."""
    missing = []
    dirs = _include_dirs()
    if not any((d / "nlohmann" / "json.hpp").is_file() for d in dirs):
        missing.append("nlohmann/json.hpp (apt-get install nlohmann-json3-dev)")
    if not any((d / sub / "stb_image.h").is_file() and (d / sub / "stb_image_write.h").is_file()
               for d in dirs for sub in ("stb", ".")):
        missing.append("stb_image.h / stb_image_write.h (apt-get install libstb-dev)")
    return missing


def _switch(value: bool | None) -> str:
    return "AUTO" if value is None else ("ON" if value else "OFF")


def _run(cmd: list[str], what: str, on_line: Callable[[str], None] | None) -> str:
    """Run a command, stream its lines to ``on_line``, return the output; CppBuildError with the error lines."""
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    except OSError as exc:
        raise CppBuildError(f"cannot run {cmd[0]}: {exc.strerror or exc}") from exc
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if on_line:
            on_line(lines[-1])
    code = proc.wait()
    output = "\n".join(lines)
    if code != 0:
        detail = " | ".join(dict.fromkeys(_error_lines(lines)))[-600:] or "\n".join(lines[-5:])[-600:]
        raise CppBuildError(f"{what} failed (exit {code}): {detail}")
    return output


def _error_lines(lines: list[str]) -> list[str]:
    """Compiler / CMake error lines; a 'CMake Error at …:' header is joined with its indented, word-wrapped message."""
    errors, i = [], 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("CMake Error"):
            message = []
            i += 1
            while i < len(lines) and (lines[i].startswith("  ") or (not lines[i].strip() and not message)):
                message.append(lines[i].strip())
                i += 1
            errors.append(" ".join([line.strip(), *(m for m in message if m)]))
            continue
        if re.search(r"error:|FATAL|Error \d|not found", line):
            errors.append(line.strip())
        i += 1
    return errors


def build_cpp(build_dir: str | Path | None = None, *, trt: bool | None = None, aoti: bool | None = None,
              tensorrt_root: str | Path | None = None, jobs: int | None = None, build_type: str = "Release",
              on_line: Callable[[str], None] | None = None) -> CppBuild:
    """Configure + build ``cpp/``. ``trt`` / ``aoti``: None = build when found (AUTO), True = required, False = off.

    Returns what was built and what CMake skipped; CppBuildError when tools, headers or the build fail.
    """
    missing = missing_tools()
    if missing:
        raise CppBuildError("cannot build the C++ runners, missing: " + "; ".join(missing))
    src = source_dir()
    out = Path(build_dir) if build_dir is not None else default_build_dir()
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["cmake", "-S", str(src), "-B", str(out), f"-DCMAKE_BUILD_TYPE={build_type}",
           f"-DDEPLOYKIT_WITH_TRT={_switch(trt)}", f"-DDEPLOYKIT_WITH_AOTI={_switch(aoti)}"]
    prefix = torch_cmake_prefix()
    if prefix and aoti is not False:
        cmd.append(f"-DCMAKE_PREFIX_PATH={prefix}")
    if tensorrt_root is not None:
        cmd.append(f"-DTensorRT_ROOT={Path(tensorrt_root).expanduser().resolve()}")
    if not (out / "CMakeCache.txt").exists() and shutil.which("ninja"):
        cmd += ["-G", "Ninja"]
    result = CppBuild(src, out)
    start = time.perf_counter()
    configure_log = _run(cmd, "CMake configure", on_line)
    result.configure_seconds = time.perf_counter() - start
    for line in configure_log.splitlines():
        match = _SKIPPED.match(line.strip())
        if match:
            result.skipped[match.group(1)] = match.group(2)
    start = time.perf_counter()
    build_log = _run(["cmake", "--build", str(out), "--parallel", str(jobs or os.cpu_count() or 2)], "C++ build",
                     on_line)
    result.build_seconds = time.perf_counter() - start
    result.log = configure_log + "\n" + build_log
    for name in BINARIES:
        if (out / name).is_file() and name not in result.skipped:
            result.binaries[name] = out / name
    return result


def find_binary(name: str, build_dir: str | Path | None = None) -> Path:
    """Path of a built runner ('aoti_run', 'trt_run', or 'aoti' / 'trt'); CppBuildError naming the build command."""
    name = name if name.endswith("_run") or name == "dk_selftest" else f"{name}_run"
    if name not in BINARIES:
        raise CppBuildError(f"unknown C++ runner '{name}' (use aoti or trt)")
    out = Path(build_dir) if build_dir is not None else default_build_dir()
    path = out / name
    if not path.is_file():
        hint = " --with-trt" if name == "trt_run" else ""
        raise CppBuildError(f"{path} does not exist; run 'deploykit cpp build{hint}"
                            f"{' --build-dir ' + str(out) if build_dir is not None else ''}' first")
    return path


def run_binary(name: str, args: list[str], build_dir: str | Path | None = None) -> int:
    """Run a built runner with ``args`` (its stdout / stderr pass through); returns its exit code."""
    path = find_binary(name, build_dir)
    try:
        return subprocess.run([str(path), *args], check=False).returncode
    except OSError as exc:
        raise CppBuildError(f"cannot run {path}: {exc.strerror or exc}") from exc
