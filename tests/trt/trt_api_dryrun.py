"""Typed dry run of deploykit's TensorRT code against the real TensorRT Python API (no GPU, no TensorRT runtime).

Run by tests/test_trt_api.py in a child process whose ``tensorrt_bindings`` is NVIDIA's real binding module from
the ``tensorrt-cuXX-bindings`` wheel (loadable here because abort-only stand-ins satisfy its links to libnvinfer:
any call into TensorRT itself would abort the process). Nothing in TensorRT runs, so no engine is built and no
result is produced; what is checked is the *interface*:

- every class, method, property and enum member the code touches exists in that TensorRT version;
- every call matches one of the method's real pybind11 signatures (argument count, keyword names, argument
  types: ints, strings, buffers, Dims, enum members, TensorRT objects of the right class);
- every property the code assigns is writable and gets a value of its type.

Return values are placeholders typed from the real signatures (a method declared ``-> ICudaEngine`` returns a
proxy that only allows ICudaEngine's members), steered by a small scenario so the code walks its real branches.

Usage: python trt_api_dryrun.py WORK_DIR  (prints one JSON object; exit 0 even when problems are found)
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import traceback
from pathlib import Path

import tensorrt_bindings as trt  # the real bindings module (see the module docstring)

PREFIX = "tensorrt_bindings.tensorrt."
_SIG = re.compile(r"^(?:\d+\. )?(\w*)\((.*)\) -> (.+)$")


class ApiMismatch(AssertionError):
    """The code uses the API in a way this TensorRT version does not offer."""


def _split_params(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[(<"
        depth -= ch in "])>"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return out + [cur.strip()] if cur.strip() else out


def signatures(doc: str | None) -> list[tuple[list[tuple[str, str, bool]], str]]:
    """pybind11 docstring -> [(params [(name, type, has_default)] without self, return type)] per overload."""
    sigs = []
    for line in (doc or "").splitlines():
        m = _SIG.match(line.strip())
        if not m:
            continue
        params = []
        for p in _split_params(m.group(2)):
            name, _, rest = p.partition(":")
            typ, _, default = rest.partition("=")
            params.append((name.strip(), typ.strip(), bool(default.strip())))
        sigs.append((params[1:], m.group(3).strip()))  # drop self / arg0
    return sigs


def _real_class(type_text: str):
    name = type_text.removeprefix(PREFIX)
    obj = trt
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if inspect.isclass(obj) else None


def _bare(type_text: str) -> tuple[str, bool]:
    """('int', True) for 'typing.Optional[int]': the type without its typing prefix, and whether None is allowed."""
    t = type_text.removeprefix("typing.").removeprefix("typing_extensions.")
    if t.startswith("Optional["):
        return t.removeprefix("Optional[").removesuffix("]"), True
    return t, False


def _accepts(type_text: str, value) -> bool:
    t, optional = _bare(type_text)
    if optional and value is None:
        return True
    if t in ("SupportsInt", "int"):
        return isinstance(value, int) or hasattr(value, "__index__")
    if t in ("SupportsFloat", "float"):
        return isinstance(value, (int, float))
    if t == "bool":
        return isinstance(value, bool)
    if t == "str":
        return isinstance(value, str)
    if t == "tuple":  # pybind11's py::tuple: a list is refused
        return isinstance(value, tuple)
    if t in ("Buffer", "buffer"):
        try:
            memoryview(value)
            return True
        except TypeError:
            return False
    cls = _real_class(t)
    if cls is None:
        return True  # a type this checker does not model (recorded as unchecked by the caller)
    if cls is trt.Dims or issubclass(cls, trt.Dims):
        return isinstance(value, (tuple, list, trt.Dims)) and all(isinstance(v, int) for v in value)
    if isinstance(value, Typed):
        return issubclass(value._cls, cls)
    return isinstance(value, cls)


_PRIMITIVES = {"SupportsInt", "int", "SupportsFloat", "float", "bool", "str", "tuple", "Buffer", "buffer"}


def _modeled(type_text: str) -> bool:
    """Whether _accepts really checks this parameter type (else it lets any value through)."""
    t, _ = _bare(type_text)
    return t in _PRIMITIVES or _real_class(t) is not None


def _plain(value):
    """A JSON-able record of an argument: enum members by name, Dims as lists, TensorRT objects by class."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if hasattr(type(value), "__members__"):  # a pybind11 enum member
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, int):
        return int(value)
    if isinstance(value, Typed):
        return f"<{value._cls.__name__} {value._values.get('name', '')}>".replace(" >", ">")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(bytes(value))} bytes>"
    if isinstance(value, (tuple, list, trt.Dims)):
        return [_plain(v) for v in value]
    return repr(value)


class Recorder:
    def __init__(self, version: str):
        self.version = version
        self.touched: set[str] = set()
        self.calls = 0
        self.unchecked: set[str] = set()
        self.log: list[dict] = []  # every call and property assignment, in order, with its arguments

    def record(self, where: str, on, args: tuple, kwargs: dict | None = None) -> None:
        entry = {"call": where, "on": on, "args": [_plain(a) for a in args]}
        if kwargs:
            entry["kwargs"] = {k: _plain(v) for k, v in kwargs.items()}
        self.log.append(entry)

    def fail(self, message: str):
        raise ApiMismatch(f"TensorRT {self.version}: {message}")

    def check_call(self, where: str, doc: str | None, args: tuple, kwargs: dict) -> str:
        """The return type of the first real overload that takes these arguments, or ApiMismatch."""
        self.calls += 1
        sigs = signatures(doc)
        if not sigs:
            self.unchecked.add(where)
            return ""
        reasons = []
        for params, ret in sigs:
            names = [p[0] for p in params]
            if len(args) > len(params):
                reasons.append(f"{len(args)} positional arguments for {names}")
                continue
            unknown = [k for k in kwargs if k not in names[len(args):]]
            if unknown:
                reasons.append(f"no keyword {unknown} in {names}")
                continue
            bound = dict(zip(names, args)) | kwargs
            missing = [n for n, _, has_default in params if n not in bound and not has_default]
            if missing:
                reasons.append(f"missing {missing}")
                continue
            wrong = [f"{n}: {t} got {type(bound[n]).__name__}" for n, t, _ in params
                     if n in bound and not _accepts(t, bound[n])]
            self.unchecked.update(f"{where}({n}: {t})" for n, t, _ in params if n in bound and not _modeled(t))
            if wrong:
                reasons.append("; ".join(wrong))
                continue
            return ret
        self.fail(f"{where}{tuple(args)!r} matches no signature ({' | '.join(reasons)})")


class Scenario(dict):
    """'Class.member' -> value or callable(*args) steering the placeholders the code receives."""


def placeholder(ret: str, rec: Recorder, scenario: Scenario, key: str, args: tuple = ()):
    if key in scenario:
        value = scenario[key]
        return value(*args) if callable(value) and not inspect.isclass(value) else value
    t = ret.removeprefix("typing.")
    if t in ("None", ""):
        return None
    if t in ("bool",):
        return True
    if t in ("int", "SupportsInt"):
        return 1
    if t == "str":
        return "t"
    if t == "float":
        return 1.0
    if t.startswith("list[") or t.startswith("List["):
        return []
    cls = _real_class(ret)
    if cls is None:
        rec.unchecked.add(f"{key} -> {ret}")
        return None
    if cls is trt.IHostMemory:
        return HostMemory(b"\0" * 16)
    if hasattr(cls, "__members__"):
        return next(iter(cls.__members__.values()))
    return Typed(cls, rec, scenario)


class HostMemory(bytes):
    """IHostMemory placeholder: the real one exposes the buffer protocol (bytes(), memoryview())."""


class Typed:
    """An object of a real TensorRT class; only that class's members exist on it."""

    def __init__(self, cls, rec: Recorder, scenario: Scenario, values: dict | None = None):
        object.__setattr__(self, "_cls", cls)
        object.__setattr__(self, "_rec", rec)
        object.__setattr__(self, "_scenario", scenario)
        object.__setattr__(self, "_values", dict(values or {}))

    def _static(self, name: str):
        try:
            return inspect.getattr_static(self._cls, name)
        except AttributeError:
            self._rec.fail(f"{self._cls.__name__} has no member '{name}'")

    def __getattr__(self, name: str):
        static = self._static(name)
        key = f"{self._cls.__name__}.{name}"
        self._rec.touched.add(key)
        if isinstance(static, property):
            if name in self._values:
                return self._values[name]
            sig = signatures(static.fget.__doc__)
            return placeholder(sig[0][1] if sig else "", self._rec, self._scenario, key)
        if callable(static):
            doc = getattr(static, "__doc__", None)

            def call(*args, **kwargs):
                self._rec.record(key, self._values.get("name"), args, kwargs)
                ret = self._rec.check_call(key, doc, args, kwargs)
                if name in self._values:  # this object's own answer (checked against the signature first)
                    return self._values[name](*args)
                return placeholder(ret, self._rec, self._scenario, key, args)

            return call
        return static  # a class-level constant

    def __setattr__(self, name: str, value) -> None:
        static = self._static(name)
        key = f"{self._cls.__name__}.{name}"
        self._rec.touched.add(key + "=")
        if not isinstance(static, property) or static.fset is None:
            self._rec.fail(f"{key} is not a writable property")
        self._rec.record(key + "=", self._values.get("name"), (value,))
        self._rec.check_call(key + " (set)", "set" + (static.fset.__doc__ or "").strip(), (value,), {})
        self._values[name] = value


class ClassProxy:
    """A real TensorRT class: constructing it checks ``__init__``'s signature and gives a Typed object."""

    def __init__(self, cls, rec: Recorder, scenario: Scenario):
        self._cls, self._rec, self._scenario = cls, rec, scenario

    def __call__(self, *args, **kwargs):
        self._rec.touched.add(f"{self._cls.__name__}()")
        self._rec.record(f"{self._cls.__name__}()", None, args, kwargs)
        self._rec.check_call(f"{self._cls.__name__}()", self._cls.__init__.__doc__, args, kwargs)
        return Typed(self._cls, self._rec, self._scenario)

    def __getattr__(self, name: str):
        try:
            value = inspect.getattr_static(self._cls, name)
        except AttributeError:
            self._rec.fail(f"{self._cls.__name__} has no member '{name}'")
        self._rec.touched.add(f"{self._cls.__name__}.{name}")
        return getattr(self._cls, name)


# classes the code constructs; everything else (enums, nptype, __version__, Dims) is the real module's object
CONSTRUCTED = ("Builder", "Runtime", "OnnxParser", "Logger")


class ModuleProxy:
    def __init__(self, rec: Recorder, scenario: Scenario):
        self._rec, self._scenario = rec, scenario

    def __getattr__(self, name: str):
        if not hasattr(trt, name):
            self._rec.fail(f"the tensorrt module has no '{name}'")
        self._rec.touched.add(f"tensorrt.{name}")
        if name in CONSTRUCTED:
            return ClassProxy(getattr(trt, name), self._rec, self._scenario)
        return getattr(trt, name)


# --- scenarios ----------------------------------------------------------------------------------------------------

def build_scenario(rec: Recorder, spec, node_names: list[str], parse_ok: bool = True) -> Scenario:
    """A parsed network whose layers carry the ONNX node names (as the ONNX parser names them)."""
    s = Scenario()
    inputs = [Typed(trt.ITensor, rec, s, {"name": t.name}) for t in spec.inputs]
    def layer(name: str) -> Typed:
        # a '*_shape_*' node computes integer shapes: its output is INT64, like the parser's shape layers
        dtype = trt.DataType.INT64 if "_shape_" in name else trt.DataType.FLOAT
        return Typed(trt.ILayer, rec, s, {"name": name, "metadata": "",
                                          "get_output": lambda j: Typed(trt.ITensor, rec, s, {"dtype": dtype})})

    layers = [layer(name) for name in node_names]
    s["INetworkDefinition.num_inputs"] = len(inputs)
    s["INetworkDefinition.get_input"] = lambda i: inputs[i]
    s["INetworkDefinition.num_layers"] = len(layers)
    s["INetworkDefinition.get_layer"] = lambda i: layers[i]
    s["ILayer.type"] = trt.LayerType.CONVOLUTION
    s["ILayer.num_outputs"] = 1
    s["OnnxParser.parse_from_file"] = parse_ok
    s["OnnxParser.num_errors"] = 0 if parse_ok else 1
    s["OnnxParser.get_error"] = lambda i: Typed(trt.ParserError, rec, s)
    s["ParserError.desc"] = "Unsupported operator (dry run)"
    return s


def engine_scenario(rec: Recorder, s: Scenario, input_shape: tuple, output_shape: tuple) -> Scenario:
    names = ["image", "output"]
    s["ICudaEngine.num_io_tensors"] = 2
    s["ICudaEngine.get_tensor_name"] = lambda i: names[i]
    s["ICudaEngine.get_tensor_mode"] = lambda n: trt.TensorIOMode.INPUT if n == "image" else trt.TensorIOMode.OUTPUT
    s["ICudaEngine.get_tensor_dtype"] = lambda n: trt.DataType.FLOAT
    s["ICudaEngine.get_tensor_shape"] = lambda n: trt.Dims((-1, 3, -1, -1))
    s["ICudaEngine.get_tensor_profile_shape"] = lambda n, i: [trt.Dims(input_shape)] * 3
    s["IExecutionContext.get_tensor_shape"] = lambda n: trt.Dims(output_shape)
    return s


# --- the walks --------------------------------------------------------------------------------------------------------

PROFILE_RES = "64x48,96x80,128x112"  # min, opt and max differ on every axis (W x H)


def _plan(work: Path, typing: str, precision: str):
    from deploykit.artifacts.manifest import read_manifest
    from deploykit.runtime.gpu import GpuInfo
    from deploykit.trt import plan as trt_plan
    from deploykit.zoo.registry import get_spec

    manifest = read_manifest(work)
    spec = get_spec(manifest["model"]["name"])
    return trt_plan.plan_build(work, manifest, spec, precision=precision,
                               profile=trt_plan.profile_from_res(spec, PROFILE_RES, max_batch=2), tensorrt_version=trt.__version__,
                               gpu=GpuInfo("dry-run GPU", "8.9"), typing=typing)


def walk_build(work: Path, rec: Recorder, typing: str, precision: str, parse_ok: bool = True) -> dict:
    import onnx

    from deploykit.trt import build as trt_build
    from deploykit.errors import EngineError

    plan = _plan(work, typing, precision)
    nodes = [n.name for n in onnx.load(str(plan.onnx_path), load_external_data=False).graph.node]
    proxy = ModuleProxy(rec, build_scenario(rec, plan.spec, nodes, parse_ok))
    first = len(rec.log)
    try:
        _, record = trt_build._trt_build(proxy, plan, 1 << 30, 3)
    except EngineError as exc:
        return {"path": plan.path.name, "engine_error": str(exc), "calls": rec.log[first:]}
    finally:
        plan.timing_cache.unlink(missing_ok=True)  # the placeholder cache bytes are not a timing cache
    calls = rec.log[first:]
    io = trt_build._engine_io(ModuleProxy(rec, engine_scenario(rec, Scenario(), (1, 3, 64, 64), (1, 3, 256, 256))),
                              b"\0" * 16)
    return {"path": plan.path.name, "record": record, "io": io, "calls": calls, "onnx_file": plan.onnx["file"],
            "profile": plan.profile.to_dict(plan.spec)}


def walk_build_engine(work: Path, rec: Recorder, typing: str, precision: str) -> dict:
    """``build_engine`` end to end (parity off): the engine entry it writes into the manifest."""
    import onnx

    from deploykit.artifacts import engines
    from deploykit.artifacts.manifest import read_manifest
    from deploykit.runtime.gpu import GpuInfo
    from deploykit.trt import build as trt_build

    plan = _plan(work, typing, precision)
    nodes = [n.name for n in onnx.load(str(plan.onnx_path), load_external_data=False).graph.node]
    scenario = engine_scenario(rec, build_scenario(rec, plan.spec, nodes), (1, 3, 48, 64), (1, 3, 192, 256))
    saved = trt_build.import_tensorrt, trt_build.gpu_info, trt_build.gpu_free_memory
    trt_build.import_tensorrt = lambda: ModuleProxy(rec, scenario)
    trt_build.gpu_info = lambda index=0: GpuInfo("dry-run GPU", "8.9", index)
    trt_build.gpu_free_memory = lambda index=0: None  # no device memory to hold a dry run to
    try:
        entry = trt_build.build_engine(work, precision=precision, res=PROFILE_RES, max_batch=2, typing=typing,
                                       parity=False)
        stored = engines.find_engine(read_manifest(work), key=entry["key"])
    finally:
        trt_build.import_tensorrt, trt_build.gpu_info, trt_build.gpu_free_memory = saved
        plan.timing_cache.unlink(missing_ok=True)
        plan.engine_path.unlink(missing_ok=True)
    return {"entry": entry, "stored": stored, "onnx_file": plan.onnx["file"]}


def walk_backend(work: Path, rec: Recorder) -> dict:
    """TensorRTBackend's TensorRT calls with host arrays standing in for device memory."""
    import numpy as np

    from deploykit.artifacts import engines
    from deploykit.runtime import tensorrt as backend_mod
    from deploykit.runtime.gpu import GpuInfo

    class HostMemoryDevice:
        kind = "host (dry run)"
        handle = 0

        def empty(self, shape, dtype):
            return np.zeros(shape, dtype)

        @staticmethod
        def ptr(buf) -> int:
            return int(buf.ctypes.data)

        def upload(self, buf, array):
            buf[...] = array

        def download(self, buf):
            return buf.copy()

        def synchronize(self):
            pass

        def close(self):
            pass

    scenario = engine_scenario(rec, Scenario(), (1, 3, 64, 64), (1, 3, 64 * 4, 72 * 4))
    plan = _plan(work, "strong", "fp16")
    # a 16-byte placeholder file so the manifest checks pass; TensorRT never reads it (deserialize is a proxy)
    plan.engine_path.write_bytes(b"\0" * 16)
    entry = engines.engine_entry(identity=plan.identity, key=plan.key, file=plan.engine_file,
                                 engine_path=plan.engine_path, profile=plan.profile.to_dict(plan.spec),
                                 build=plan.path.to_dict(), io=[], created="dry run")
    backend_mod.import_tensorrt = lambda: ModuleProxy(rec, scenario)
    backend_mod.gpu_info = lambda index=0: GpuInfo("dry-run GPU", "8.9", index)
    backend_mod._device_memory = lambda index: HostMemoryDevice()
    try:
        backend = backend_mod.TensorRTBackend(work, entry)
        out = backend.run({"image": np.zeros((1, 3, 64, 72), np.float32)})
        backend.close()
    finally:
        plan.engine_path.unlink(missing_ok=True)
    return {"inputs": backend.input_names, "outputs": backend.output_names,
            "output_shapes": {k: list(v.shape) for k, v in out.items()}}


def walk_self_check(rec: Recorder) -> dict:
    """Known misuses must be caught: a checker that accepts everything would prove nothing."""
    trt_ = ModuleProxy(rec, Scenario())
    builder = trt_.Builder(trt_.Logger(trt_.Logger.WARNING))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    network = builder.create_network(0)
    misuses = {
        "too few arguments": lambda: profile.set_shape("image", (1, 3, 8, 8), (1, 3, 8, 8)),
        "unknown keyword": lambda: config.set_timing_cache(config.create_timing_cache(b""), ignore=False),
        "wrong argument type": lambda: config.set_flag("FP16"),
        "read-only property": lambda: setattr(network, "num_layers", 3),
        "missing member": lambda: network.add_fancy_layer(),
        "missing module name": lambda: trt_.NoSuchClass,
    }
    caught = {}
    for what, misuse in misuses.items():
        try:
            misuse()
        except ApiMismatch as exc:
            caught[what] = str(exc)
    return {"caught": caught, "missed": sorted(set(misuses) - set(caught))}


def main(work: Path) -> dict:
    from deploykit.errors import EngineError

    rec = Recorder(trt.__version__)
    result: dict = {"version": trt.__version__, "walks": {}, "problems": [],
                    "network_flag_bits": {n: int(m) for n, m in trt.NetworkDefinitionCreationFlag.__members__.items()}}
    walks = [("fp16-auto", lambda: walk_build(work, rec, "auto", "fp16")),
             ("fp16-strong", lambda: walk_build(work, rec, "strong", "fp16")),
             ("fp32", lambda: walk_build(work, rec, "auto", "fp32")),
             ("parse-failure", lambda: walk_build(work, rec, "auto", "fp32", parse_ok=False)),
             ("fp16-weak", lambda: walk_build(work, rec, "weak", "fp16")),
             ("backend", lambda: walk_backend(work, rec)),
             ("entry-fp16-auto", lambda: walk_build_engine(work, rec, "auto", "fp16")),
             ("entry-fp32", lambda: walk_build_engine(work, rec, "auto", "fp32")),
             ("self-check", lambda: walk_self_check(Recorder(trt.__version__)))]
    for name, walk in walks:
        try:
            result["walks"][name] = walk()
        except ApiMismatch as exc:
            result["problems"].append(f"{name}: {exc}")
        except EngineError as exc:  # deploykit's own refusal (e.g. weak typing on TensorRT 11): part of the walk
            result["walks"][name] = {"engine_error": str(exc)}
        except Exception as exc:  # noqa: BLE001 (anything else is reported with where it happened)
            result["problems"].append(f"{name}: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}")
    result["touched"] = sorted(rec.touched)
    result["calls_checked"] = rec.calls
    result["unchecked"] = sorted(rec.unchecked)
    return result


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1])), default=str))
