"""Triton python-backend model for a deploykit export (copied as ``<repo>/<model>/1/model.py`` by ``deploykit triton``).

It runs the ONNX file next to it (``deploykit_artifact`` in config.pbtxt) through deploykit's
``deploykit.runtime.ort.OrtBackend`` -- the runner parity was proven with -- on the server's CPU, so the repository
also serves on machines without a GPU.

Imports. The server's Python backend runs this file in ``triton_python_backend_stub``, a program that embeds
whichever ``libpython3.X.so`` the dynamic linker finds, with that interpreter's own ``sys.path``. deploykit,
onnxruntime and numpy must import there -- numpy early: the stub imports ``triton_python_backend_utils`` (which
imports numpy) right after importing this file, before ``initialize``. So, when this file is imported:

1. if they can be found (installed in the server's Python, e.g. ``pip install deploykit`` in the Triton container,
   or the stub embeds the same Python that wrote the repository), nothing changes;
2. otherwise the paths recorded by ``deploykit triton`` in ``../config.pbtxt`` (``deploykit_sys_path``: deploykit's
   parent directory and the site-packages of onnxruntime / numpy / torch) are *appended* to ``sys.path``, only when
   the stub's Python has the major.minor version recorded in ``deploykit_python`` (compiled extensions are built
   per version); ``DEPLOYKIT_TRITON_SYS_PATH`` in the server's environment replaces the recorded list;
3. otherwise the import fails with a message naming the stub's Python, what is missing and what to do.

``EXECUTION_ENV_PATH`` (a conda-pack archive) is Triton's own route for a different Python; with it the imports are
found in step 1 (not exercised by the tests here). It needs an archive per Python version, so it is not the default.

Only the standard library is imported at module level; numpy, ``triton_python_backend_utils`` and deploykit
(``deploykit.runtime.ort.OrtBackend``, ``deploykit.util.text.one_line``) are imported in ``initialize``, after the
paths are settled. The file is copied out of the package, so it never imports its siblings by relative path.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

REQUIRED = ("numpy", "onnxruntime", "deploykit")
pb_utils = None  # triton_python_backend_utils, imported in initialize()
np = None
one_line = None  # deploykit.util.text.one_line, imported in initialize()
NUMPY_ABI_OK = True


def _param(config: dict, key: str, default: str | None = None) -> str | None:
    value = config.get("parameters", {}).get(key)
    if isinstance(value, dict):
        return value.get("string_value", default)
    return default


def _missing(modules=REQUIRED) -> list[str]:
    """Modules that cannot be found (found, not imported: no side effects, no torch import at bootstrap)."""
    missing = []
    for name in modules:
        if name in sys.modules:
            continue
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except (ImportError, ValueError):
            missing.append(name)
    return missing


def ensure_importable(recorded: list[str], recorded_python: str | None, *, modules=REQUIRED,
                      env: dict | None = None) -> list[str]:
    """Make ``modules`` importable (see the module docstring); returns the paths appended to ``sys.path``."""
    env = os.environ if env is None else env
    if not _missing(modules):
        return []
    override = env.get("DEPLOYKIT_TRITON_SYS_PATH")
    paths = [p for p in (override.split(os.pathsep) if override else recorded) if p]
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    added = []
    if override or recorded_python in (None, here):
        for path in paths:
            if Path(path).is_dir() and path not in sys.path:
                sys.path.append(path)
                added.append(path)
    still = _missing(modules)
    if still:
        why = ""
        if not override and recorded_python not in (None, here):
            why = (f" The repository was written by Python {recorded_python}; its recorded paths do not fit this "
                   f"Python {here}.")
        raise ImportError(
            f"deploykit's Triton python model needs {', '.join(still)} in the server's Python "
            f"({sys.version.split()[0]}, prefix {sys.prefix}).{why} Install them into that Python (pip install "
            "deploykit onnxruntime), or set DEPLOYKIT_TRITON_SYS_PATH, or start tritonserver with the libdir of the "
            "Python that has them first on LD_LIBRARY_PATH, or give the model an EXECUTION_ENV_PATH (docs/triton.md)."
            f" Paths tried: {paths or 'none'}")
    return added


def _numpy_abi_ok() -> bool:
    """Whether the stub's NumPy path (``Tensor.as_numpy()``, ``pb_utils.Tensor(name, array)``) can be trusted.

    The stub bundled with nvidia-pytriton 0.7.0 (Triton 2.51) was built against NumPy 1.x; under NumPy 2 both
    directions silently carry wrong data (inputs read as zeros, outputs sent empty). DLPack does not depend on
    NumPy's C ABI, so under NumPy 2 every tensor goes through DLPack."""
    return int(np.__version__.split(".")[0]) < 2


def _to_numpy(tensor):
    """Input tensor -> numpy (zero copy either way)."""
    return tensor.as_numpy() if NUMPY_ABI_OK else np.from_dlpack(tensor)


_USED_NAME = b"used_dltensor"  # module-level: the capsule keeps a pointer to these bytes
_BACKEND_USED_NAME = b"used_dlpack"


def _mark_consumed(capsule) -> None:
    """The python backend renames a capsule it consumed to 'used_dlpack'; the DLPack spec (and NumPy's capsule
    destructor) expect 'used_dltensor', so NumPy would report an error into the server log for every tensor. The
    backend owns the tensor then (it calls the DLPack deleter); give the capsule the name the spec uses. A capsule
    with any other name is left alone (NumPy frees what was not consumed)."""
    api = ctypes.pythonapi
    api.PyCapsule_IsValid.argtypes, api.PyCapsule_IsValid.restype = [ctypes.py_object, ctypes.c_char_p], ctypes.c_int
    api.PyCapsule_SetName.argtypes, api.PyCapsule_SetName.restype = [ctypes.py_object, ctypes.c_char_p], ctypes.c_int
    if api.PyCapsule_IsValid(capsule, _BACKEND_USED_NAME):
        api.PyCapsule_SetName(capsule, _USED_NAME)


def _from_numpy(name: str, array):
    """numpy -> output tensor."""
    array = np.ascontiguousarray(array)
    if NUMPY_ABI_OK:
        return pb_utils.Tensor(name, array)
    capsule = array.__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    _mark_consumed(capsule)
    return tensor


_PARAM = r'key:\s*"{key}"\s*value\s*\{{\s*string_value:\s*("(?:[^"\\]|\\.)*")'


def recorded_paths(config_path: Path) -> tuple[list[str], str | None] | None:
    """``deploykit_sys_path`` and ``deploykit_python`` from the config.pbtxt deploykit wrote (None: no such file)."""
    try:
        text = config_path.read_text()
    except OSError:
        return None
    found = {}
    for key in ("deploykit_sys_path", "deploykit_python"):
        match = re.search(_PARAM.format(key=key), text)
        found[key] = json.loads(match.group(1)) if match else None
    paths = [p for p in (found["deploykit_sys_path"] or "").split(os.pathsep) if p]
    return paths, found["deploykit_python"]


def _threads(config: dict) -> int:
    """ONNX Runtime intra-op threads per instance: ``deploykit_threads``, or the cores shared by the instances."""
    threads = int(_param(config, "deploykit_threads", "0") or 0)
    if threads <= 0:
        count = sum(int(g.get("count", 1)) for g in config.get("instance_group", [])) or 1
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = max(1, cores // count)
    return threads


def _bootstrap() -> list[str]:
    """At import time, before the stub imports triton_python_backend_utils (which needs numpy): settle sys.path from
    ``<model>/config.pbtxt`` (this file is ``<model>/<version>/model.py``). A no-op outside a repository."""
    recorded = recorded_paths(Path(__file__).resolve().parent.parent / "config.pbtxt")
    if recorded is None:
        return []
    return ensure_importable(*recorded)


BOOTSTRAP_ADDED = _bootstrap()


class TritonPythonModel:
    """Triton's python-backend entry points."""

    def initialize(self, args: dict) -> None:
        global pb_utils, np, one_line, NUMPY_ABI_OK
        config = json.loads(args["model_config"])
        self.config = config
        recorded = [p for p in (_param(config, "deploykit_sys_path") or "").split(os.pathsep) if p]
        self.added_paths = ensure_importable(recorded, _param(config, "deploykit_python"))
        import numpy
        import triton_python_backend_utils

        from deploykit.runtime.ort import OrtBackend
        from deploykit.util.text import one_line as _one_line

        pb_utils, np, one_line = triton_python_backend_utils, numpy, _one_line
        NUMPY_ABI_OK = _numpy_abi_ok()
        folder = Path(args["model_repository"]) / args["model_version"]
        artifact = _param(config, "deploykit_artifact")
        if not artifact or not (folder / artifact).is_file():
            raise FileNotFoundError(f"{folder / str(artifact)} not found (deploykit_artifact in config.pbtxt)")
        self.inputs = [(t["name"], t["data_type"]) for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.multiple_of = int(_param(config, "deploykit_multiple_of", "1"))
        self.min_size = int(_param(config, "deploykit_min_size", "1"))
        self.square = _param(config, "deploykit_square", "0") == "1"
        self.model = _param(config, "deploykit_model", args.get("model_name"))
        self.runner = OrtBackend(folder / artifact, device="cpu", precision=_param(config, "deploykit_precision",
                                                                                    "fp32"), threads=_threads(config))
        missing = [n for n, _ in self.inputs if n not in self.runner.input_names]
        if missing:
            raise ValueError(f"{artifact} has inputs {self.runner.input_names}; config.pbtxt names {missing}")
        self.dtypes = {n: pb_utils.triton_string_to_numpy(dt) for n, dt in self.inputs}

    def _feed(self, request) -> dict:
        feed = {}
        for name, _ in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"input '{name}' is missing")
            array = _to_numpy(tensor)
            if array.dtype != self.dtypes[name]:
                raise ValueError(f"input '{name}' is {array.dtype}, the model takes {np.dtype(self.dtypes[name])}")
            if array.ndim != 4:
                raise ValueError(f"input '{name}' has shape {list(array.shape)}; expected [N, C, H, W]")
            feed[name] = array
        h, w = feed[self.inputs[0][0]].shape[2:]
        problems = []
        if h % self.multiple_of or w % self.multiple_of:
            problems.append(f"H and W must be multiples of {self.multiple_of}")
        if h < self.min_size or w < self.min_size:
            problems.append(f"H and W must be at least {self.min_size}")
        if self.square and h != w:
            problems.append("the input must be square")
        for name, array in feed.items():
            if array.shape[0] != feed[self.inputs[0][0]].shape[0] or array.shape[2:] != (h, w):
                problems.append(f"input '{name}' {list(array.shape)} does not match the image's N, H, W")
        if problems:
            raise ValueError(f"{self.model} cannot take {h}x{w} (H x W): {'; '.join(problems)} "
                             "(deploykit triton-client pads and tiles for you)")
        return feed

    def execute(self, requests):
        responses = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, dict]]] = {}
        for index, request in enumerate(requests):
            try:
                feed = self._feed(request)
            except Exception as exc:  # noqa: BLE001 -- a bad request gets an error response, the rest run
                responses[index] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc)))
                continue
            key = tuple((n, a.shape[1:]) for n, a in feed.items())
            groups.setdefault(key, []).append((index, feed))
        for items in groups.values():
            names = [n for n, _ in self.inputs]
            batch = {n: np.concatenate([f[n] for _, f in items]) if len(items) > 1 else items[0][1][n] for n in names}
            try:
                result = self.runner.run(batch)
            except Exception as exc:  # noqa: BLE001
                message = f"{self.model}: ONNX Runtime failed: {one_line(exc, 300)}"
                for index, _ in items:
                    responses[index] = pb_utils.InferenceResponse(output_tensors=[],
                                                                  error=pb_utils.TritonError(message))
                continue
            start = 0
            for index, feed in items:
                n = feed[names[0]].shape[0]
                tensors = [_from_numpy(name, result[name][start:start + n]) for name in self.outputs]
                responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
                start += n
        return responses

    def finalize(self) -> None:
        runner = getattr(self, "runner", None)
        if runner is not None:
            runner.close()
