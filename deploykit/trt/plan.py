"""Planning TensorRT builds, in pure Python (no TensorRT import): what to build, from which ONNX, with which flags.

Two build paths:

* **TensorRT 10.x** ("weak-fp16"): parse the FP32 ONNX, set ``BuilderFlag.FP16`` and keep the zoo's FP32 islands
  by pinning the matching network layers to FP32 (layer precision + output type) under
  ``BuilderFlag.OBEY_PRECISION_CONSTRAINTS``. The layers are matched to the FP16 artifact's ``fp32_nodes`` (ONNX
  node names) and, where a layer cannot be traced to a node, to the op types of ``spec.fp16.keep_fp32_ops``.
* **TensorRT >= 11** ("strong-fp16"): ``BuilderFlag.FP16`` no longer exists; every network is strongly typed, so
  the precision decision lives in the graph: build the mixed-precision FP16 ONNX (FP32 islands already in it).
  ``--typing strong`` selects this path on TensorRT 10 too (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``).
* FP32 engines parse the FP32 ONNX with TF32 cleared, on either version.

Version parsing and path choice, optimisation profiles from ``--res`` / ``--profile`` under the model's shape
contract, engine identity and file name, FP32-island layer selection and option validation are all testable
without TensorRT; ``deploykit.trt.build`` does the build.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deploykit.artifacts.lookup import onnx_artifact
from deploykit.errors import EngineError, ShapeContractError
from deploykit.runtime.gpu import (
    INSTALL_HINT,
    MIN_TRT_MAJOR,
    STRONG_TYPING_MAJOR,
    GpuInfo,
    parse_version,
    version_text,
)
from deploykit.runtime.profiles import Profile
from deploykit.util.sizes import Size, fmt_wxh, parse_size, parse_sizes
from deploykit.util.text import slug
from deploykit.zoo.spec import ModelSpec

WEAK_TYPING_DEPRECATED = (10, 12)  # BuilderFlag.FP16, OBEY_PRECISION_CONSTRAINTS, ILayer.precision: deprecated
DEFAULT_OPT_LEVEL = 3
TYPING_CHOICES = ("auto", "weak", "strong")
PRECISIONS = ("fp16", "fp32")


# --- versions and build paths ------------------------------------------------------------------------


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
        raise ShapeContractError(f"{what} {fmt_wxh(hw)} does not fit {spec.name}: {'; '.join(problems)}")


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
            raise EngineError(f"this export has a fixed input size {fmt_wxh(fixed)} (exported with --static); "
                              f"build with --res {fixed[1]}x{fixed[0]}")
    return profile


def profile_from_res(spec: ModelSpec, res: str | Iterable[str] | Sequence[Size], *, max_batch: int = 1,
                     static_hw: Sequence[int] | None = None) -> Profile:
    """``--res 512,1024,2048``: min = smallest H and W, opt = the middle size (by area), max = largest H and W."""
    sizes = list(res) if isinstance(res, (list, tuple)) and res and isinstance(res[0], tuple) \
        else parse_sizes(res)  # type: ignore[arg-type]
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


# --- engine identity and names --------------------------------------------------------------------------------

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


# --- pre-build check: TensorRT's 2^31 elements per tensor, activation memory -----------------------------------

TRT_MAX_ELEMENTS = 2**31 - 1  # TensorRT rejects any tensor with more elements (int32 volume)
REPORT_SIDES = (2560, 8192)


@dataclass
class TensorSizes:
    """Element counts of every float tensor at two square input sides, batch 1, and the peak of live elements
    (each tensor alive from its producer to its last consumer, graph order): enough to extrapolate to any size,
    since counts grow as a power of the side (2 for conv maps, 4 for H*W x H*W attention)."""

    sides: tuple[int, int]
    counts: dict[str, tuple[int, int]]
    peak: tuple[int, int] = (0, 0)
    source: str = ""

    @staticmethod
    def _at(pair: tuple[int, int], sides: tuple[int, int], hw: Size) -> float:
        a, b = pair
        if a <= 0 or b <= 0:
            return float(max(a, b))
        p = round(2 * (math.log(b / a) / math.log(sides[1] / sides[0]))) / 2  # nearest half power of the side
        return b * (hw[0] * hw[1] / (sides[1] * sides[1])) ** (p / 2)

    def largest(self, hw: Size, batch: int = 1) -> tuple[str, int]:
        name, pair = max(self.counts.items(), key=lambda kv: (self._at(kv[1], self.sides, hw), kv[0]))
        return name, int(batch * self._at(pair, self.sides, hw))

    def activation_bytes(self, hw: Size, batch: int = 1, bytes_per_value: int = 2) -> int:
        return int(batch * bytes_per_value * self._at(self.peak, self.sides, hw))

    def largest_safe_side(self, batch: int = 1, memory_bytes: int | None = None, bytes_per_value: int = 2,
                          multiple_of: int = 1) -> int:
        def fits(side: int) -> bool:
            ok = self.largest((side, side), batch)[1] <= TRT_MAX_ELEMENTS
            return ok and (memory_bytes is None or self.activation_bytes((side, side), batch,
                                                                           bytes_per_value) <= memory_bytes)
        lo, hi = 0, 1 << 20
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        return (lo // multiple_of) * multiple_of


def onnx_tensor_sizes(model_or_path, sides: tuple[int, int] = (64, 128)) -> TensorSizes:
    """:class:`TensorSizes` of an ONNX graph by shape inference at two concrete sides (no weights run)."""
    import onnx

    model = model_or_path if isinstance(model_or_path, onnx.ModelProto) else \
        onnx.load(str(model_or_path), load_external_data=False)
    per_side = []
    for side in sides:
        m = onnx.ModelProto.FromString(model.SerializeToString())
        del m.graph.value_info[:]
        for vi in list(m.graph.input) + list(m.graph.output):
            dims = vi.type.tensor_type.shape.dim
            for k, d in enumerate(dims):
                if d.HasField("dim_param"):
                    d.Clear()
                    if k == 0:
                        d.dim_value = 1
                    elif k >= 2 and vi in m.graph.input:
                        d.dim_value = side
        inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)
        per_side.append((inferred, _float_counts(inferred)))
    names = sorted(set(per_side[0][1]) & set(per_side[1][1]))
    counts = {n: (per_side[0][1][n], per_side[1][1][n]) for n in names}
    peaks = tuple(_peak_live(g, c) for g, c in per_side)
    return TensorSizes(tuple(sides), counts, peaks, "ONNX shape inference")  # type: ignore[arg-type]


def _float_counts(model) -> dict[str, int]:
    out = {}
    for vi in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input):
        t = vi.type.tensor_type
        if t.elem_type in (1, 10) and t.shape.dim and all(d.HasField("dim_value") for d in t.shape.dim):
            out[vi.name] = math.prod(d.dim_value for d in t.shape.dim)
    return out


def _peak_live(model, counts: dict[str, int]) -> int:
    last = {}
    for k, node in enumerate(model.graph.node):
        for name in node.input:
            last[name] = k
    outputs = {o.name for o in model.graph.output}
    live, peak = {i.name: counts.get(i.name, 0) for i in model.graph.input}, 0
    for k, node in enumerate(model.graph.node):
        live.update({o: counts.get(o, 0) for o in node.output})
        peak = max(peak, sum(live.values()))
        live = {n: v for n, v in live.items() if last.get(n, -1) > k or n in outputs}
    return peak


def prebuild_check(sizes: TensorSizes, profile: Profile, spec: ModelSpec, *, precision: str = "fp16",
                   memory_bytes: int | None = None) -> dict:
    """Refuse (EngineError, with the figures) a profile TensorRT cannot build; else the figures as a record."""
    per = 2 if precision == "fp16" else 4
    name, count = sizes.largest(profile.max_hw, profile.max_batch)
    act = sizes.activation_bytes(profile.max_hw, profile.max_batch, per)
    safe = sizes.largest_safe_side(profile.max_batch, memory_bytes, per, spec.multiple_of)
    where = f"profile max {fmt_wxh(profile.max_hw)} batch {profile.max_batch}"
    if count > TRT_MAX_ELEMENTS:
        raise EngineError(f"{spec.name}: {where} cannot build: tensor '{name}' would hold {count:,} elements "
                          f"(TensorRT's limit is 2^31-1 = {TRT_MAX_ELEMENTS:,}); the largest safe square input "
                          f"is {safe}x{safe}: lower --res/--profile or infer tiled")
    if memory_bytes is not None and act > memory_bytes:
        raise EngineError(f"{spec.name}: {where} needs about {act / 2**30:.1f} GiB of activations, more than the "
                          f"GPU's {memory_bytes / 2**30:.1f} GiB; the largest safe square input is {safe}x{safe}")
    return {"largest_tensor": name, "largest_tensor_elements": count, "max_elements": TRT_MAX_ELEMENTS,
            "activation_bytes_estimate": act, "largest_safe_side": safe, "source": sizes.source,
            "gpu_free_bytes": memory_bytes}


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
    prebuild: dict = field(default_factory=dict)  # prebuild_check's figures ({} when the ONNX file is absent)

    @property
    def engine_path(self) -> Path:
        return self.export_dir / self.engine_file

    @property
    def onnx_path(self) -> Path:
        return self.export_dir / self.onnx["file"]


def plan_build(export_dir: str | Path, manifest: dict, spec: ModelSpec, *, precision: str, profile: Profile,
               tensorrt_version: str, gpu: GpuInfo, typing: str = "auto",
               timing_cache: str | Path | None = None, gpu_memory_bytes: int | None = None) -> BuildPlan:
    """Everything about a build that can be decided before TensorRT runs, including :func:`prebuild_check`
    (a profile over TensorRT's 2^31 elements per tensor, or over ``gpu_memory_bytes`` of activations, is refused
    here, before minutes in the builder)."""
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
    graph = export_dir / onnx["file"]
    prebuild = prebuild_check(onnx_tensor_sizes(graph), profile, spec, precision=precision,
                              memory_bytes=gpu_memory_bytes) if graph.is_file() else {}
    return BuildPlan(spec, export_dir, manifest, path, onnx, profile, fp32_nodes, identity, identity_key(identity),
                     engine_file_name(identity), cache, prebuild)


def onnx_node_names(path: Path) -> list[str]:
    """Every node name of an ONNX file (graph only, weights not loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return [n.name for n in model.graph.node if n.name]


# --- the TensorRT build --------------------------------------------------------------------------------------------------


