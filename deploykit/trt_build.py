"""TensorRT engines from the exported ONNX artifacts (``deploykit build``, ``deploykit export --trt``).

Two build paths behind :func:`build_engine`:

* **TensorRT 10.x** ("weak-fp16"): parse the FP32 ONNX, set ``BuilderFlag.FP16`` and keep the zoo's FP32 islands
  by pinning the matching network layers to FP32 (layer precision + output type) under
  ``BuilderFlag.OBEY_PRECISION_CONSTRAINTS``. The layers are matched to the FP16 artifact's ``fp32_nodes`` (ONNX
  node names) and, where a layer cannot be traced to a node, to the op types of ``spec.fp16.keep_fp32_ops``.
* **TensorRT >= 11** ("strong-fp16"): ``BuilderFlag.FP16`` no longer exists; every network is strongly typed, so
  the precision decision lives in the graph: build the mixed-precision FP16 ONNX (FP32 islands already in it).
  ``--typing strong`` selects this path on TensorRT 10 too (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``).
* FP32 engines parse the FP32 ONNX with TF32 cleared, on either version.

Everything that decides *what* to build is pure Python and testable without TensorRT: version parsing and
path choice, optimisation profiles from ``--res`` / ``--profile`` under the model's shape contract, engine
identity and file name, FP32-island layer selection, option validation. TensorRT (and CUDA) are imported only
inside the functions that talk to them, so importing this module never needs a GPU.
"""

from __future__ import annotations

import datetime as _dt
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deploykit.artifacts import write_bytes_atomic
from deploykit.errors import BackendUnavailableError, EngineError, ShapeContractError
from deploykit.zoo import ModelSpec

INSTALL_HINT = "pip install 'deploykit[gpu]'"
JETSON_HINT = "on Jetson use the TensorRT that ships with JetPack"
MIN_TRT_MAJOR = 10
STRONG_TYPING_MAJOR = 11  # TensorRT 11.0 removed BuilderFlag.FP16 / OBEY_PRECISION_CONSTRAINTS
WEAK_TYPING_DEPRECATED = (10, 12)  # BuilderFlag.FP16, OBEY_PRECISION_CONSTRAINTS, ILayer.precision: deprecated
DEFAULT_OPT_LEVEL = 3
TYPING_CHOICES = ("auto", "weak", "strong")
PRECISIONS = ("fp16", "fp32")

Size = tuple[int, int]  # (height, width)
StepCallback = Callable[[str, str, float, str], None]  # same shape as export_pipeline's callback


# --- versions and build paths ------------------------------------------------------------------------

def parse_version(text: str | Sequence[int]) -> tuple[int, ...]:
    """'10.9.0.34' -> (10, 9, 0, 34); tuples pass through. Non-numeric tails ('10.0.0b6') are cut."""
    if not isinstance(text, str):
        return tuple(int(v) for v in text)
    parts = []
    for piece in text.strip().split("."):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
    if not parts:
        raise EngineError(f"cannot read a TensorRT version from {text!r}")
    return tuple(parts)


def version_text(version: str | Sequence[int]) -> str:
    return version if isinstance(version, str) else ".".join(str(v) for v in version)


@dataclass(frozen=True)
class BuildPath:
    """How to build: which ONNX artifact, which network/builder flags, whether to pin FP32 layers."""

    name: str  # "weak-fp16" | "strong-fp16" | "fp32"
    precision: str
    onnx_precision: str  # which artifact of the manifest is parsed
    network_flags: tuple[str, ...] = ()  # NetworkDefinitionCreationFlag member names
    builder_flags: tuple[str, ...] = ()  # BuilderFlag member names to set
    clear_flags: tuple[str, ...] = ()  # BuilderFlag member names to clear when present
    layer_precisions: bool = False  # pin the FP32 islands on network layers (weak typing only)
    note: str = ""

    def to_dict(self) -> dict:
        return {"path": self.name, "onnx_precision": self.onnx_precision, "network_flags": list(self.network_flags),
                "builder_flags": list(self.builder_flags), "cleared_flags": list(self.clear_flags),
                "layer_precisions": self.layer_precisions, "note": self.note}


def choose_build_path(version: str | Sequence[int], precision: str, typing: str = "auto") -> BuildPath:
    """Pick the build path for a TensorRT version; no TensorRT import (feed it version tuples)."""
    ver = parse_version(version)
    if precision not in PRECISIONS:
        raise EngineError(f"unknown precision '{precision}' (use {' or '.join(PRECISIONS)})")
    if typing not in TYPING_CHOICES:
        raise EngineError(f"unknown typing '{typing}' (use {', '.join(TYPING_CHOICES)})")
    if ver[0] < MIN_TRT_MAJOR:
        raise EngineError(f"TensorRT {version_text(version)} is too old: deploykit builds with TensorRT >= "
                          f"{MIN_TRT_MAJOR} (the name-based I/O API and execute_async_v3); upgrade with {INSTALL_HINT}")
    major = ver[0]
    if precision == "fp32":
        return BuildPath("fp32", "fp32", "fp32", clear_flags=("TF32",),
                         note="FP32 ONNX, TF32 cleared so FP32 means FP32")
    if major >= STRONG_TYPING_MAJOR:
        if typing == "weak":
            raise EngineError(f"TensorRT {version_text(version)} has no weak typing (BuilderFlag.FP16 was removed "
                              "in 11.0); use --typing strong (the default), which builds the FP16 ONNX")
        return BuildPath("strong-fp16", "fp16", "fp16", network_flags=("STRONGLY_TYPED",),
                         note="TensorRT >= 11: strongly typed build of the mixed-precision FP16 ONNX "
                              "(STRONGLY_TYPED is passed only where the flag still exists; 11.x ignores it)")
    if typing == "strong":
        return BuildPath("strong-fp16", "fp16", "fp16", network_flags=("STRONGLY_TYPED",),
                         note="TensorRT 10 strongly typed build of the mixed-precision FP16 ONNX (--typing strong)")
    note = "TensorRT 10: FP32 ONNX + BuilderFlag.FP16, FP32 islands pinned by layer precision"
    if tuple(ver[:2]) >= WEAK_TYPING_DEPRECATED:
        note += ("; TensorRT 10.12 deprecated these flags and layer precisions (they still work in 10.x): "
                 "--typing strong builds the FP16 ONNX as TensorRT 11 does")
    return BuildPath("weak-fp16", "fp16", "fp32", builder_flags=("FP16", "OBEY_PRECISION_CONSTRAINTS"),
                     layer_precisions=True, note=note)


# --- sizes and optimisation profiles ----------------------------------------------------------------------

def parse_size(text: str) -> Size:
    """'512' -> 512x512; '1920x1080' is width x height (the CLI convention) -> (1080, 1920)."""
    raw = text.strip().lower()
    try:
        if "x" in raw:
            w, h = (int(v) for v in raw.split("x"))
        else:
            w = h = int(raw)
    except ValueError as exc:
        raise EngineError(f"cannot read the size '{text}': use N (NxN) or WIDTHxHEIGHT, e.g. 1920x1080") from exc
    if h <= 0 or w <= 0:
        raise EngineError(f"size '{text}' must be positive")
    return h, w


def parse_res_list(res: str | Iterable[str]) -> list[Size]:
    """'--res 512,1024,2048' (or a list of such strings) -> sizes, in the order given."""
    items = res.split(",") if isinstance(res, str) else [p for r in res for p in str(r).split(",")]
    sizes = [parse_size(p) for p in items if p.strip()]
    if not sizes:
        raise EngineError("--res needs at least one size, e.g. --res 512,1024,2048")
    return sizes


def _fmt(hw: Size) -> str:
    return f"{hw[1]}x{hw[0]}"  # W x H, like the CLI


def _nearest(size: int, spec: ModelSpec) -> str:
    m = spec.multiple_of
    lo, hi = max(spec.min_size, (size // m) * m), max(spec.min_size, -(-size // m) * m)
    return str(hi) if lo == hi else f"{lo} or {hi}"


def check_profile_size(spec: ModelSpec, hw: Size, what: str) -> None:
    """A profile corner must itself be an input the model can take; ShapeContractError says how to fix it."""
    h, w = hw
    problems = []
    for side, value in (("height", h), ("width", w)):
        if value % spec.multiple_of:
            problems.append(f"{side} {value} is not a multiple of {spec.multiple_of} (use {_nearest(value, spec)})")
        elif value < spec.min_size:
            problems.append(f"{side} {value} is below the minimum {spec.min_size}")
    if spec.square and h != w:
        problems.append("the model takes square inputs only (give N, not WxH)")
    if problems:
        raise ShapeContractError(f"{what} {_fmt(hw)} does not fit {spec.name}: {'; '.join(problems)}")


@dataclass(frozen=True)
class Profile:
    """One optimisation profile: batch 1/1/max_batch and the same H, W for every image-shaped input."""

    min_hw: Size
    opt_hw: Size
    max_hw: Size
    max_batch: int = 1

    @property
    def static(self) -> bool:
        return self.min_hw == self.opt_hw == self.max_hw and self.max_batch == 1

    def shapes(self, spec: ModelSpec) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """Per input: (min, opt, max) NCHW; UDVD's kernel and noise maps share the image's H and W."""
        return {t.name: ((1, t.channels, *self.min_hw), (1, t.channels, *self.opt_hw),
                         (self.max_batch, t.channels, *self.max_hw)) for t in spec.inputs}

    def tag(self) -> str:
        """File-name fragment (sizes W x H): 'b1_512x512' or 'b4_min256x256_opt512x512_max1024x1024'."""
        if self.min_hw == self.opt_hw == self.max_hw:
            return f"b{self.max_batch}_{_fmt(self.max_hw)}"
        return f"b{self.max_batch}_min{_fmt(self.min_hw)}_opt{_fmt(self.opt_hw)}_max{_fmt(self.max_hw)}"

    def to_dict(self, spec: ModelSpec | None = None) -> dict:
        data = {"batch": [1, 1, self.max_batch], "min_hw": list(self.min_hw), "opt_hw": list(self.opt_hw),
                "max_hw": list(self.max_hw), "layout": "NCHW", "hw_order": "[height, width]"}
        if spec is not None:
            data["inputs"] = {name: {"min": list(a), "opt": list(b), "max": list(c)}
                              for name, (a, b, c) in self.shapes(spec).items()}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Profile":
        return cls(tuple(data["min_hw"]), tuple(data["opt_hw"]), tuple(data["max_hw"]), int(data["batch"][2]))

    def contains(self, batch: int, height: int, width: int) -> bool:
        return (1 <= batch <= self.max_batch and self.min_hw[0] <= height <= self.max_hw[0]
                and self.min_hw[1] <= width <= self.max_hw[1])


def _finish(spec: ModelSpec, profile: Profile, static_hw: Sequence[int] | None) -> Profile:
    if profile.max_batch < 1:
        raise EngineError(f"--batch must be >= 1, not {profile.max_batch}")
    for what, hw in (("minimum", profile.min_hw), ("optimum", profile.opt_hw), ("maximum", profile.max_hw)):
        check_profile_size(spec, hw, f"profile {what}")
    for k, side in enumerate(("height", "width")):
        if not profile.min_hw[k] <= profile.opt_hw[k] <= profile.max_hw[k]:
            raise EngineError(f"profile {side}s must satisfy min <= opt <= max, got {profile.min_hw[k]} / "
                              f"{profile.opt_hw[k]} / {profile.max_hw[k]}")
    if static_hw is not None:
        fixed = (int(static_hw[0]), int(static_hw[1]))
        if not profile.min_hw == profile.opt_hw == profile.max_hw == fixed:
            raise EngineError(f"this export has a fixed input size {_fmt(fixed)} (exported with --static); "
                              f"build with --res {fixed[1]}x{fixed[0]}")
    return profile


def profile_from_res(spec: ModelSpec, res: str | Iterable[str] | Sequence[Size], *, max_batch: int = 1,
                     static_hw: Sequence[int] | None = None) -> Profile:
    """``--res 512,1024,2048``: min = smallest H and W, opt = the middle size (by area), max = largest H and W."""
    sizes = list(res) if isinstance(res, (list, tuple)) and res and isinstance(res[0], tuple) \
        else parse_res_list(res)  # type: ignore[arg-type]
    for hw in sizes:
        check_profile_size(spec, hw, "--res")
    ordered = sorted(sizes, key=lambda hw: (hw[0] * hw[1], hw))
    lo = (min(h for h, _ in sizes), min(w for _, w in sizes))
    hi = (max(h for h, _ in sizes), max(w for _, w in sizes))
    return _finish(spec, Profile(lo, ordered[(len(ordered) - 1) // 2], hi, max_batch), static_hw)


def profile_from_string(spec: ModelSpec, text: str, *, max_batch: int = 1,
                        static_hw: Sequence[int] | None = None) -> Profile:
    """``--profile MIN:OPT:MAX`` with each part N or WIDTHxHEIGHT, e.g. 256:1024:2048 or 640x360:1280x720:1920x1080."""
    parts = text.split(":")
    if len(parts) != 3:
        raise EngineError(f"--profile takes MIN:OPT:MAX (each N or WIDTHxHEIGHT), e.g. 256:1024:2048, not '{text}'")
    lo, opt, hi = (parse_size(p) for p in parts)
    return _finish(spec, Profile(lo, opt, hi, max_batch), static_hw)


def default_profile(spec: ModelSpec, *, max_batch: int = 1, static_hw: Sequence[int] | None = None) -> Profile:
    """Without --res/--profile: 64 -> 512 -> 1024 (each rounded up to the contract), or the fixed export size."""
    if static_hw is not None:
        hw = (int(static_hw[0]), int(static_hw[1]))
        return _finish(spec, Profile(hw, hw, hw, max_batch), static_hw)
    lo, opt, hi = (spec.valid_size(s) for s in (64, 512, 1024))
    return _finish(spec, Profile((lo, lo), (opt, opt), (hi, hi), max_batch), None)


def resolve_profile(spec: ModelSpec, *, res: str | Iterable[str] | None = None, profile: str | None = None,
                    max_batch: int = 1, static_hw: Sequence[int] | None = None) -> Profile:
    if res and profile:
        raise EngineError("give either --res or --profile, not both")
    if profile:
        return profile_from_string(spec, profile, max_batch=max_batch, static_hw=static_hw)
    if res:
        return profile_from_res(spec, res, max_batch=max_batch, static_hw=static_hw)
    return default_profile(spec, max_batch=max_batch, static_hw=static_hw)


def engine_parity_shapes(profile: Profile) -> list[tuple[int, int, int]]:
    """Parity inside the profile: batch 1 at the minimum size, and batch min(2, max) at the optimum size."""
    shapes = [(1, *profile.min_hw), (min(2, profile.max_batch), *profile.opt_hw)]
    return list(dict.fromkeys(shapes))


# --- engine identity and names --------------------------------------------------------------------------------

def slug(text: str) -> str:
    """'NVIDIA GeForce RTX 4090' -> 'NVIDIA-GeForce-RTX-4090' (safe in file names)."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", text.strip()).strip("-") or "unknown"


def engine_identity(*, model: str, variant: str, precision: str, profile: Profile, tensorrt: str,
                    gpu_name: str, compute_capability: str, onnx_file: str, onnx_sha256: str,
                    build_path: str) -> dict:
    """What makes an engine unique (vs-mlrt's engine-name fields, Triton's per-compute-capability plans)."""
    return {"model": model, "variant": variant, "precision": precision, "build_path": build_path,
            "profile": profile.to_dict(), "tensorrt": str(tensorrt), "gpu_name": gpu_name,
            "compute_capability": str(compute_capability), "onnx_file": onnx_file, "onnx_sha256": onnx_sha256}


def identity_key(identity: dict) -> str:
    """Stable 16-hex key of an identity (sha256 of its canonical JSON)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def engine_file_name(identity: dict) -> str:
    """``<family>_<variant>.<precision>.<profile>.trt<ver>.<gpu>.sm<cc>.<onnx sha256[:12]>.engine``."""
    cc = str(identity["compute_capability"]).replace(".", "")
    profile = Profile.from_dict(identity["profile"])
    return (f"{identity['model']}_{identity['variant']}.{identity['precision']}.{profile.tag()}."
            f"trt{identity['tensorrt']}.{slug(identity['gpu_name'])}.sm{cc}.{identity['onnx_sha256'][:12]}.engine")


def timing_cache_file_name(tensorrt: str, gpu_name: str, compute_capability: str, build_path: str) -> str:
    """One timing cache per TensorRT version, GPU and build path, shared by the model's engines (all profiles) in
    the export directory. Timings depend on the device, CUDA and TensorRT versions and on builder flags such as
    TF32, so FP32 (TF32 cleared) and FP16 builds keep separate caches."""
    cc = str(compute_capability).replace(".", "")
    return f"timing.trt{tensorrt}.{slug(gpu_name)}.sm{cc}.{build_path}.cache"


# --- FP32 islands on a weakly typed network ---------------------------------------------------------------------

# ONNX op type -> TensorRT LayerType names that unambiguously implement it. Pow/Sqrt/Add... map onto the
# generic ELEMENTWISE/UNARY layers, so they are matched by node name only, never by type.
OP_TYPE_LAYER_TYPES: dict[str, frozenset[str]] = {
    "Softmax": frozenset({"SOFTMAX"}),
    "ReduceMean": frozenset({"REDUCE"}),
    "ReduceSum": frozenset({"REDUCE"}),
    "ReduceMax": frozenset({"REDUCE"}),
    "GlobalAveragePool": frozenset({"REDUCE", "POOLING"}),
    "LayerNormalization": frozenset({"NORMALIZATION"}),
    "InstanceNormalization": frozenset({"NORMALIZATION"}),
    "GroupNormalization": frozenset({"NORMALIZATION"}),
}
# layers whose precision is meaningless or not settable (shape arithmetic, weights, control flow)
NON_COMPUTE_LAYER_TYPES = frozenset({"SHAPE", "CONSTANT", "ASSERTION", "CONDITION", "CONDITIONAL_INPUT",
                                     "CONDITIONAL_OUTPUT", "ITERATOR", "LOOP_OUTPUT", "RECURRENCE",
                                     "TRIP_LIMIT", "FILL"})
_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]+)\]")


@dataclass
class Fp32Selection:
    layers: list[str] = field(default_factory=list)  # network layer names pinned to FP32
    by_name: list[str] = field(default_factory=list)  # ONNX fp32_nodes that matched at least one layer
    unmatched: list[str] = field(default_factory=list)  # fp32_nodes without a layer (folded or fused by the parser)
    by_op_type: list[str] = field(default_factory=list)  # layers pinned by type (owner node unknown)
    integer_layers: list[str] = field(default_factory=list)  # selected, but with integer outputs: left unpinned

    def to_dict(self) -> dict:
        return {"pinned_layers": len(self.layers), "layers": self.layers, "matched_nodes": len(self.by_name),
                "unmatched_nodes": self.unmatched, "pinned_by_op_type": self.by_op_type,
                "integer_layers_left_unpinned": self.integer_layers}


def layer_owner(name: str, metadata: str, node_names: Iterable[str]) -> str | None:
    """The ONNX node a network layer came from: the parser's '[ONNX Layer: X]' metadata when present (inside an
    ONNX local function it reads '[ONNX Layer: X | CALLER (FUNCTION)]': X is the node), else the longest node name N
    with layer == N or layer == N + '_' + suffix (the parser's de-duplication)."""
    found = _ONNX_LAYER.findall(metadata or "")
    if found:
        return found[0].split(" | ")[0].strip()
    best = None
    for node in node_names:
        if (name == node or name.startswith(node + "_")) and (best is None or len(node) > len(best)):
            best = node
    return best


def select_fp32_layers(layers: Iterable[tuple[str, str] | tuple[str, str, str]], fp32_nodes: Iterable[str],
                       keep_fp32_ops: Iterable[str] = (), node_names: Iterable[str] | None = None) -> Fp32Selection:
    """Which network layers to pin to FP32, given (layer name, LayerType name[, metadata]) triples.

    ``fp32_nodes`` are the FP16 artifact's ONNX node names kept FP32; ``node_names`` every node of the FP32 ONNX
    (so a layer 'conv_1' is not taken for node 'conv' when 'conv_1' is itself a node); ``keep_fp32_ops`` the
    spec's op types, used only for layers whose node cannot be found and whose type is unambiguous.
    """
    wanted = {n for n in fp32_nodes if n}
    universe = set(node_names) if node_names is not None else set()
    universe |= wanted
    type_sets = [OP_TYPE_LAYER_TYPES[op] for op in keep_fp32_ops if op in OP_TYPE_LAYER_TYPES]
    by_type = frozenset().union(*type_sets) if type_sets else frozenset()
    selection, matched = Fp32Selection(), set()
    for item in layers:
        name, ltype = item[0], item[1]
        metadata = item[2] if len(item) > 2 else ""
        if ltype in NON_COMPUTE_LAYER_TYPES:
            continue
        owner = layer_owner(name, metadata, universe)
        if owner is not None and universe and owner not in universe:
            owner = None  # metadata naming a node this ONNX does not have (e.g. the parser's 'node_of_<output>')
        if owner is not None and owner in wanted:
            selection.layers.append(name)
            matched.add(owner)
        elif owner is None and ltype in by_type:
            selection.layers.append(name)
            selection.by_op_type.append(name)
    selection.by_name = sorted(matched)
    selection.unmatched = sorted(wanted - matched)
    return selection


# --- options, files ---------------------------------------------------------------------------------------------------

def validate_build_options(workspace_gb: float | None, opt_level: int | None) -> tuple[int | None, int]:
    """--workspace GB -> bytes (None: TensorRT's default, all device memory); --opt-level 0..5."""
    level = DEFAULT_OPT_LEVEL if opt_level is None else int(opt_level)
    if not 0 <= level <= 5:
        raise EngineError(f"--opt-level must be 0..5 (TensorRT builder optimisation level), not {level}")
    if workspace_gb is None:
        return None, level
    if workspace_gb <= 0:
        raise EngineError(f"--workspace must be a positive number of GB, not {workspace_gb:g}")
    return int(workspace_gb * (1 << 30)), level


# --- environment: TensorRT and the GPU (lazy imports) ---------------------------------------------------------------

@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.6"
    index: int = 0
    source: str = "torch"


def import_tensorrt():
    """``import tensorrt`` or BackendUnavailableError with the one-line install hint."""
    try:
        import tensorrt  # noqa: PLC0415 (lazy on purpose: never at module import time)
    except ImportError:
        raise BackendUnavailableError(
            f"TensorRT is not installed (Python package 'tensorrt'); install it with {INSTALL_HINT} "
            f"({JETSON_HINT})") from None
    except OSError as exc:  # the wheel is there but libnvinfer / CUDA libraries cannot be loaded
        raise BackendUnavailableError(f"TensorRT is installed but cannot be loaded ({exc}); reinstall it with "
                                      f"{INSTALL_HINT} and check the NVIDIA driver") from None
    return tensorrt


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6 layout
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


def gpu_info(index: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device ``index`` via torch (if built with CUDA) or cuda-python."""
    try:
        import torch

        if torch.cuda.is_available() and index < torch.cuda.device_count():
            major, minor = torch.cuda.get_device_capability(index)
            return GpuInfo(torch.cuda.get_device_name(index), f"{major}.{minor}", index, "torch")
    except Exception:  # noqa: BLE001 (a broken CUDA torch is "no GPU via torch")
        pass
    try:
        cudart = _cudart()
        err, count = cudart.cudaGetDeviceCount()
        if int(err) == 0 and index < count:
            err, props = cudart.cudaGetDeviceProperties(index)
            if int(err) == 0:
                name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
                return GpuInfo(name.rstrip("\x00"), f"{props.major}.{props.minor}", index, "cuda-python")
    except Exception:  # noqa: BLE001
        pass
    raise BackendUnavailableError(
        f"no CUDA GPU {index} is visible (torch has no CUDA and cuda-python found none); TensorRT needs an NVIDIA "
        f"GPU with its driver, and {INSTALL_HINT} for the Python packages")


def tensorrt_unavailable_reason(index: int = 0) -> str | None:
    """None when TensorRT imports and a CUDA GPU is visible; otherwise the one-line reason."""
    try:
        import_tensorrt()
        gpu_info(index)
    except BackendUnavailableError as exc:
        return str(exc)
    return None


# --- planning (pure: reads the manifest only) --------------------------------------------------------------------------

@dataclass
class BuildPlan:
    spec: ModelSpec
    export_dir: Path
    manifest: dict
    path: BuildPath
    onnx: dict  # the manifest artifact that is parsed
    profile: Profile
    fp32_nodes: list[str]
    identity: dict
    key: str
    engine_file: str
    timing_cache: Path

    @property
    def engine_path(self) -> Path:
        return self.export_dir / self.engine_file

    @property
    def onnx_path(self) -> Path:
        return self.export_dir / self.onnx["file"]


def onnx_artifact(manifest: dict, precision: str) -> dict | None:
    for artifact in manifest.get("artifacts", []):
        if artifact.get("kind") == "onnx" and artifact.get("precision") == precision:
            return artifact
    return None


def plan_build(export_dir: str | Path, manifest: dict, spec: ModelSpec, *, precision: str, profile: Profile,
               tensorrt_version: str, gpu: GpuInfo, typing: str = "auto",
               timing_cache: str | Path | None = None) -> BuildPlan:
    """Everything about a build that can be decided before TensorRT runs."""
    export_dir = Path(export_dir)
    path = choose_build_path(tensorrt_version, precision, typing)
    onnx = onnx_artifact(manifest, path.onnx_precision)
    if onnx is None:
        hint = ("re-export without --no-fp16" if path.onnx_precision == "fp16"
                else "re-run 'deploykit export'")
        raise EngineError(f"the {path.name} build needs the {path.onnx_precision.upper()} ONNX, which "
                          f"{export_dir / 'manifest.json'} does not list; {hint}")
    fp16 = onnx_artifact(manifest, "fp16")
    fp32_nodes = list((fp16 or {}).get("fp32_nodes", []))
    identity = engine_identity(model=spec.family, variant=spec.variant, precision=precision, profile=profile,
                               tensorrt=version_text(tensorrt_version), gpu_name=gpu.name,
                               compute_capability=gpu.compute_capability, onnx_file=onnx["file"],
                               onnx_sha256=onnx["sha256"], build_path=path.name)
    cache = Path(timing_cache) if timing_cache else export_dir / timing_cache_file_name(
        version_text(tensorrt_version), gpu.name, gpu.compute_capability, path.name)
    return BuildPlan(spec, export_dir, manifest, path, onnx, profile, fp32_nodes, identity, identity_key(identity),
                     engine_file_name(identity), cache)


def onnx_node_names(path: Path) -> list[str]:
    """Every node name of an ONNX file (graph only, weights not loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return [n.name for n in model.graph.node if n.name]


def _verify_onnx(plan: BuildPlan) -> None:
    from deploykit.checkpoints import sha256_file

    file = plan.onnx_path
    if not file.exists():
        raise EngineError(f"{file} is listed in the manifest but missing; re-run 'deploykit export'")
    if sha256_file(file) != plan.onnx["sha256"]:
        raise EngineError(f"{file} does not match the sha256 in its manifest (modified or torn update); "
                          "re-run 'deploykit export'")
    data = plan.onnx.get("external_data")
    if data and not (plan.export_dir / data).exists():
        raise EngineError(f"{plan.export_dir / data} (external weights of {file.name}) is missing")


# --- the TensorRT build --------------------------------------------------------------------------------------------------

def _dtype_name(dtype) -> str:
    return getattr(dtype, "name", str(dtype)).split(".")[-1]


def _trt_build(trt, plan: BuildPlan, workspace_bytes: int | None, opt_level: int) -> tuple[bytes, dict]:
    """Parse, configure, build. Returns (plan bytes, build record). Raises EngineError with TensorRT's words."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    used_network_flags = []
    for name in plan.path.network_flags:
        member = getattr(trt.NetworkDefinitionCreationFlag, name, None)
        if member is not None:
            flags |= 1 << int(member)
            used_network_flags.append(name)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(plan.onnx_path)):  # from file so external weights resolve
        errors = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            errors.append(err.desc() if hasattr(err, "desc") else str(err))
        detail = "; ".join(errors[:3]) or "no parser message"
        raise EngineError(f"TensorRT {trt.__version__} cannot parse {plan.onnx['file']}: {detail}")

    expected = {t.name for t in plan.spec.inputs}
    found = {network.get_input(i).name for i in range(network.num_inputs)}
    if found != expected:
        raise EngineError(f"{plan.onnx['file']} has inputs {sorted(found)}, the zoo expects {sorted(expected)}")

    config = builder.create_builder_config()
    if workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    config.builder_optimization_level = opt_level
    for name in plan.path.builder_flags:
        member = getattr(trt.BuilderFlag, name, None)
        if member is None:
            raise EngineError(f"TensorRT {trt.__version__} has no BuilderFlag.{name}; the {plan.path.name} path "
                              "needs TensorRT 10.x (use --typing strong)")
        config.set_flag(member)
    cleared = []
    for name in plan.path.clear_flags:
        member = getattr(trt.BuilderFlag, name, None)
        if member is not None:
            config.clear_flag(member)
            cleared.append(name)

    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in plan.profile.shapes(plan.spec).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)

    selection = None
    if plan.path.layer_precisions:
        node_names = onnx_node_names(plan.onnx_path)
        layers = [network.get_layer(i) for i in range(network.num_layers)]
        triples = [(layer.name, _dtype_name(layer.type), str(getattr(layer, "metadata", "") or ""))
                   for layer in layers]
        selection = select_fp32_layers(triples, plan.fp32_nodes, plan.spec.fp16.keep_fp32_ops, node_names)
        pinned = set(selection.layers)
        float_types = (trt.DataType.FLOAT, trt.DataType.HALF)
        for layer in layers:
            if layer.name not in pinned:
                continue
            outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
            if not all(t.dtype in float_types for t in outputs):
                # shape arithmetic of the island (Shape/Gather/Min on ints): FLOAT precision would fail the build
                # under OBEY_PRECISION_CONSTRAINTS, and it computes nothing in FP16 anyway
                selection.layers.remove(layer.name)
                if layer.name in selection.by_op_type:
                    selection.by_op_type.remove(layer.name)
                selection.integer_layers.append(layer.name)
                continue
            layer.precision = trt.DataType.FLOAT
            for j in range(len(outputs)):
                layer.set_output_type(j, trt.DataType.FLOAT)

    cache_loaded, cache_note = False, "new"
    data = plan.timing_cache.read_bytes() if plan.timing_cache.exists() else b""
    if data:
        try:
            # ignore_mismatch=False: a cache from another device / TensorRT version is refused, not trusted
            cache_loaded = config.set_timing_cache(config.create_timing_cache(data), ignore_mismatch=False) \
                is not False
        except Exception:  # noqa: BLE001 (a corrupt cache file must not stop the build)
            cache_loaded = False
        cache_note = "loaded" if cache_loaded else "rejected (other device, version or corrupt): started a new one"
    if not cache_loaded:
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise EngineError(f"TensorRT {trt.__version__} could not build {plan.engine_file} (see the TensorRT log "
                          "above); try a smaller --profile maximum or a larger --workspace")
    write_bytes_atomic(plan.timing_cache, memoryview(config.get_timing_cache().serialize()))
    record = {**plan.path.to_dict(), "network_flags": used_network_flags, "cleared_flags": cleared,
              "optimization_level": opt_level, "workspace_bytes": workspace_bytes, "seconds": round(seconds, 2),
              "timing_cache": {"file": plan.timing_cache.name if plan.timing_cache.parent == plan.export_dir
                               else str(plan.timing_cache), "state": cache_note, "loaded": cache_loaded},
              "hardware_compatibility": "none", "version_compatible": False}
    if selection is not None:
        record["fp32_layers"] = selection.to_dict()
    return bytes(serialized), record


def _engine_io(trt, engine_bytes: bytes) -> list[dict]:
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None:
        raise EngineError("the freshly built engine does not deserialize; rebuild with a clean timing cache")
    io = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        item = {"name": name, "mode": "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output",
                "dtype": _dtype_name(engine.get_tensor_dtype(name)).lower(), "shape": list(engine.get_tensor_shape(name))}
        if item["mode"] == "input":
            lo, opt, hi = engine.get_tensor_profile_shape(name, 0)
            item["profile"] = {"min": list(lo), "opt": list(opt), "max": list(hi)}
        io.append(item)
    return io


def build_engine(export_dir: str | Path, *, precision: str = "fp16", res: str | Iterable[str] | None = None,
                 profile: str | None = None, max_batch: int = 1, workspace_gb: float | None = None,
                 opt_level: int | None = None, timing_cache: str | Path | None = None, typing: str = "auto",
                 device: int = 0, parity: bool = True, parity_backends: Sequence[str] = ("tensorrt",),
                 on_step: StepCallback | None = None) -> dict:
    """Build one engine for an export directory, write it atomically, record it in the manifest (and its parity).

    Returns the manifest's engine entry. Raises BackendUnavailableError without TensorRT or a GPU, EngineError for
    a build that cannot happen, ShapeContractError for a profile the model cannot take.
    """
    from deploykit import engines
    from deploykit.manifest import read_manifest
    from deploykit.zoo import get_spec

    step = on_step or (lambda *a: None)
    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    spec = get_spec(manifest["model"]["name"])
    static_hw = manifest.get("export", {}).get("static_hw")
    prof = resolve_profile(spec, res=res, profile=profile, max_batch=max_batch, static_hw=static_hw)
    workspace_bytes, level = validate_build_options(workspace_gb, opt_level)
    trt = import_tensorrt()
    gpu = gpu_info(device)
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(device)
    except Exception:  # noqa: BLE001
        pass
    plan = plan_build(export_dir, manifest, spec, precision=precision, profile=prof, tensorrt_version=trt.__version__,
                      gpu=gpu, typing=typing, timing_cache=timing_cache)
    _verify_onnx(plan)

    step("build engine", "start", 0.0, "")
    start = time.perf_counter()
    engine_bytes, record = _trt_build(trt, plan, workspace_bytes, level)
    write_bytes_atomic(plan.engine_path, engine_bytes)
    io = _engine_io(trt, engine_bytes)
    step("build engine", "done", time.perf_counter() - start,
         f"{plan.engine_file} ({len(engine_bytes) / 2**20:.1f} MiB, {plan.path.name}, TensorRT {trt.__version__}, "
         f"{gpu.name} sm{gpu.compute_capability})")
    entry = engines.engine_entry(identity=plan.identity, key=plan.key, file=plan.engine_file, engine_path=plan.engine_path,
                                 profile=prof.to_dict(spec), build=record, io=io,
                                 created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    engines.upsert_engine_entry(export_dir, entry)
    if parity:
        step("engine parity", "start", 0.0, "")
        start = time.perf_counter()
        results = engines.run_engine_parity(export_dir, entry, backends=parity_backends, device=device)
        worst = min((r["psnr_db"] for recs in results.values() for r in recs if r["psnr_db"] is not None),
                    default=float("nan"))
        step("engine parity", "done", time.perf_counter() - start,
             f"{', '.join(results)}: min PSNR {worst:.1f} dB at {len(engine_parity_shapes(prof))} shapes")
        entry = engines.find_engine(read_manifest(export_dir), key=plan.key)
    else:
        step("engine parity", "skip", 0.0, "--no-parity")
    return entry


def maybe_build_after_export(result, **opts) -> dict:
    """For ``deploykit export --trt``: the engine's manifest entry, or ``{"skipped": reason}`` when TensorRT or a
    GPU is absent (a skipped step, not a failure). A real build failure still raises EngineError.

    ``result`` is an ExportResult (``out_dir``); ``opts`` are build_engine's keyword arguments (precision, res,
    profile, max_batch, workspace_gb, opt_level, timing_cache, typing, device, parity, parity_backends, on_step).
    The engine entry is written into the manifest on disk: re-read it if you keep ``result.manifest`` around.
    """
    reason = tensorrt_unavailable_reason(int(opts.get("device", 0)))
    if reason is not None:
        return {"skipped": reason}
    return build_engine(result.out_dir, **opts)
