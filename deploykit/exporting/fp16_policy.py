"""``--fp16-policy auto``: choose the FP32 islands of the FP16 ONNX by measurement, for every size up to a maximum.

Start from all-FP16 (FP32 graph I/O) and keep a node FP32 only for one of three measured reasons:

* **range** — the node's largest |output| on the calibration images, extrapolated to ``max_res`` with the growth
  fitted over nested crops at two or three sizes (``max|y| ~ (H*W)^g``), would pass ``HEADROOM * 65504``;
* **accumulation** — graph analysis finds the node sums over a dimension that grows with H·W (global
  reductions and pooling, normalisations over H·W, Softmax over H·W, MatMul/Gemm whose inner dimension grows):
  its FP16 running sum (``|mean| * N``, ``N`` for Softmax's denominator, ``|out|`` for sums and MatMul) is
  extrapolated the same way and must stay under the same bound at ``max_res``;
* **accuracy** — without it the PSNR of the FP16 graph against the FP32 graph (ONNX Runtime CPU, FP16 storage
  between nodes) falls under the floor on a calibration image. Candidates are ranked by the error each node adds
  in the all-FP16 graph (its output's relative error minus its inputs'), the shortest passing prefix is found by
  bisection, and then each kept node is dropped again if the floor holds without it (1-minimal: no single
  node of the set can go).

Everything is deterministic (fixed inputs, stable sort by score then graph order). The result records every
chosen node with its reason and figures, the PSNR reached per calibration image, and the predicted largest safe
square input side of the nodes left in FP16 (``predicted_safe_side``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

from deploykit.errors import ExportError
from deploykit.exporting.fp16 import Fp16Record, float16_with_fp32_islands
from deploykit.exporting.fp16_calib import Feed, calibration_set, feed_for
from deploykit.verify.parity import psnr

FP16_MAX = 65504.0
AUTO_MIN_PSNR = 50.0  # the default floor of --fp16-policy auto (dB vs the FP32 graph)
HEADROOM = 0.5  # a kept-FP16 value must stay under HEADROOM * FP16_MAX at max_res
NON_COMPUTE = frozenset({"Constant", "Shape", "Cast"})
SUMS = frozenset({"ReduceSum", "ReduceL1"})
SQUARE_SUMS = frozenset({"ReduceSumSquare", "ReduceL2"})
MEANS = frozenset({"ReduceMean", "GlobalAveragePool"})
NORMS = frozenset({"LayerNormalization", "InstanceNormalization", "GroupNormalization",
                   "MeanVarianceNormalization"})
SOFTMAX = frozenset({"Softmax", "LogSoftmax"})
MATMUL = frozenset({"MatMul", "Gemm"})
PRUNE_CAP = 64  # at most this many accuracy nodes are re-tested one by one


@dataclass
class NodeStat:
    name: str
    op_type: str
    index: int
    sizes: list[int] = field(default_factory=list)  # input H*W of each growth feed
    max_abs: list[float] = field(default_factory=list)  # largest |output| per growth feed
    risk: list[float] = field(default_factory=list)  # max(|output|, FP16 running sum) per growth feed
    reduce_len: list[int] = field(default_factory=list)  # summed length per growth feed (0: not a sum)
    growth: float = 0.0  # fitted exponent of risk vs H*W
    predicted: float = 0.0  # risk at max_res
    out_predicted: float = 0.0  # max |output| at max_res (what an FP16 consumer would have to store)
    error: float = 0.0  # local relative error added in the all-FP16 graph

    @property
    def over_hw(self) -> bool:
        """Graph analysis: the node sums over a length that grows with H*W."""
        return len(self.reduce_len) > 1 and self.reduce_len[-1] > self.reduce_len[0] > 0

    def safe_area(self) -> float:
        """Input H*W at which the extrapolated risk reaches FP16_MAX (inf when it does not grow)."""
        if not self.risk or self.risk[-1] <= 0 or self.growth < 0.02:
            return math.inf
        log_area = math.log(self.sizes[-1]) + math.log(FP16_MAX / self.risk[-1]) / self.growth
        return math.inf if log_area > 40 * math.log(2) else math.exp(log_area)  # past a 2^20 side: no limit


@dataclass
class PolicyResult:
    fp32_nodes: list[str]
    reasons: dict[str, dict]
    psnr_db: dict[str, float]
    predicted_safe_side: int | None
    limiting_node: str | None
    evaluations: int
    seconds: float
    settings: dict
    candidates: int
    watch: list[str] = field(default_factory=list)  # FP16 nodes whose values grow with H*W, worst first

    def to_dict(self) -> dict:
        return {"mode": "auto", **self.settings, "fp32_node_count": len(self.fp32_nodes),
                "fp32_nodes": [{"node": n, **self.reasons[n]} for n in self.fp32_nodes],
                "psnr_db": {k: round(v, 2) for k, v in self.psnr_db.items()},
                "min_psnr_reached_db": round(min(self.psnr_db.values()), 2) if self.psnr_db else None,
                "predicted_safe_side": self.predicted_safe_side, "limiting_node": self.limiting_node,
                "compute_nodes": self.candidates, "evaluations": self.evaluations,
                "seconds": round(self.seconds, 1),
                "search": "range/accumulation rules at max_res, then accuracy: ranked by local FP16 error, "
                          "shortest passing prefix by bisection, then 1-minimal pruning"}


# --- conversion and running ------------------------------------------------------------------------------------


def compute_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type not in NON_COMPUTE]


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give unnamed nodes a stable name (op type + index) so a node list can address them."""
    for k, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{k}"
    return model


def to_fp16(model: onnx.ModelProto, fp32_nodes: Iterable[str]) -> onnx.ModelProto:
    """All-FP16 with FP32 graph I/O, except ``fp32_nodes`` and the converter's default op block list."""
    from onnxconverter_common import float16

    return float16_with_fp32_islands(model, op_types=float16.DEFAULT_OP_BLOCK_LIST, node_names=fp32_nodes)


def default_fp32_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes the converter keeps FP32 whatever the policy (Resize, Range, Min/Max, ...)."""
    from onnxconverter_common import float16

    return [n.name for n in compute_nodes(model) if n.op_type in float16.DEFAULT_OP_BLOCK_LIST]


def emulate(model: onnx.ModelProto, fp32_nodes: Iterable[str]) -> onnx.ModelProto:
    """The FP32 graph with FP16 *storage*: every float output of a node not in ``fp32_nodes``, and every FP32 tensor
    (graph input, FP32 node output) such a node reads, goes through Cast(float16) -> Cast(float), and the weights
    such nodes read are rounded to float16 (as the converted file holds them).

    ONNX Runtime's CPU provider runs an FP16 file's ops that lack FP16 kernels in FP32 and removes the casts
    between them, so whole chains never hold an FP16 value (an overflowing ReduceSum feeding a Mul stays finite
    there); this graph, run without graph optimisations (:func:`_session` with ``emulated=True``), rounds every
    tensor an FP16 engine would store, arithmetic inside a node staying FP32 (FP32 accumulation).
    """
    m = onnx.ModelProto.FromString(model.SerializeToString())
    keep = set(fp32_nodes)
    floats = _float_tensors(m)
    half = [n for n in m.graph.node if n.op_type not in NON_COMPUTE and n.name not in keep]
    read, half_names = {i for n in half for i in n.input}, {n.name for n in half}
    for init in m.graph.initializer:
        if init.name in read and init.data_type == TensorProto.FLOAT:
            arr = onnx.numpy_helper.to_array(init).astype(np.float16).astype(np.float32)
            init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    nodes, rounded = [], {}
    for g in m.graph.input:
        if g.name in read and g.name in floats:
            rounded[g.name] = g.name + "__fp16in"
            nodes += _round_trip(g.name, rounded[g.name])
    for node in m.graph.node:
        if node.name in half_names:
            for k, name in enumerate(node.input):
                if name in rounded:
                    node.input[k] = rounded[name]
        nodes.append(node)
        for k, name in enumerate(node.output):
            if name not in floats:
                continue
            if node.name in half_names:
                node.output[k] = name + "__fp32"
                nodes += _round_trip(name + "__fp32", name)
            elif name in read:  # an FP32 (or shape) node feeding an FP16 node: the file casts it there
                rounded[name] = name + "__fp16in"
                nodes += _round_trip(name, rounded[name])
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    del m.graph.value_info[:]
    return m


def _round_trip(src: str, dst: str) -> list[onnx.NodeProto]:
    return [helper.make_node("Cast", [src], [dst + "__h"], name=dst + "__to16", to=TensorProto.FLOAT16),
            helper.make_node("Cast", [dst + "__h"], [dst], name=dst + "__to32", to=TensorProto.FLOAT)]


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    inferred = onnx.shape_inference.infer_shapes(model)
    every = list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)
    return {vi.name for vi in every if vi.type.tensor_type.elem_type == TensorProto.FLOAT}


def _session(model: onnx.ModelProto, emulated: bool = False):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if emulated:  # keep every Cast pair: graph optimisations would fold them away
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                providers=["CPUExecutionProvider"])


def _exposed(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy with every float tensor of ``names`` added as a graph output."""
    m = onnx.ModelProto.FromString(model.SerializeToString())
    inferred = onnx.shape_inference.infer_shapes(m)
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    have = {o.name for o in m.graph.output}
    for name in names:
        kind = types.get(name)
        if name not in have and kind in (TensorProto.FLOAT, TensorProto.FLOAT16):
            m.graph.output.append(helper.make_tensor_value_info(name, kind, None))
            have.add(name)
    return m


def _run_all(session, feed: Feed) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    inputs = {i.name: feed.inputs[i.name] for i in session.get_inputs()}
    return dict(zip(names, session.run(None, inputs)))


# --- measurement ----------------------------------------------------------------------------------------------


def _fit_growth(areas: list[int], values: list[float]) -> float:
    """Least-squares slope of log(value) vs log(area), clipped at 0 (values never shrink with size here)."""
    pts = [(math.log(a), math.log(v)) for a, v in zip(areas, values) if v > 0 and a > 0]
    if len(pts) < 2 or len({p[0] for p in pts}) < 2:
        return 0.0
    xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    slope = float(np.polyfit(xs, ys, 1)[0])
    return max(0.0, slope)


def _reduce_len(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int:
    """How many values the node sums into one output value (0 when it is not a sum)."""
    ins = [shapes.get(i) for i in node.input]
    out = shapes.get(node.output[0])
    if not ins or ins[0] is None or out is None:
        return 0
    x = ins[0]
    if node.op_type in SUMS | SQUARE_SUMS | MEANS | NORMS:
        return int(np.prod(x) // max(1, np.prod(out))) if node.op_type not in NORMS else _norm_len(node, x)
    if node.op_type in SOFTMAX:
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        return int(x[axis]) if x else 0
    if node.op_type in MATMUL:
        trans = next((a.i for a in node.attribute if a.name == "transA"), 0)
        return int(x[0] if trans else x[-1]) if x else 0
    return 0


def _norm_len(node: onnx.NodeProto, x: tuple[int, ...]) -> int:
    if node.op_type == "LayerNormalization":
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        return int(np.prod(x[axis:]))
    if node.op_type == "GroupNormalization":
        groups = next((a.i for a in node.attribute if a.name == "num_groups"), 1)
        return int(np.prod(x[1:]) // max(1, groups))
    return int(np.prod(x[2:]))  # instance norm / MVN over the spatial dims


def _risk(node: onnx.NodeProto, out_max: float, in_max: float, length: int) -> float:
    """The largest value the node's FP16 storage or running sum must hold."""
    if length <= 0:
        return out_max
    if node.op_type in MEANS:
        return max(out_max, out_max * length)
    if node.op_type in NORMS:
        return max(out_max, in_max * in_max * length, in_max * length)
    if node.op_type in SOFTMAX:
        return max(out_max, float(length))
    if node.op_type in SQUARE_SUMS:
        return max(out_max, out_max * out_max if node.op_type == "ReduceL2" else out_max)
    return out_max


def measure(model: onnx.ModelProto, growth: list[Feed], max_res: int) -> list[NodeStat]:
    """Run the FP32 graph with every node output exposed on the growth feeds; fit and extrapolate each node."""
    nodes = compute_nodes(model)
    outs = [n.output[0] for n in nodes if n.output]
    session = _session(_exposed(model, outs))
    stats = [NodeStat(n.name, n.op_type, k) for k, n in enumerate(nodes)]
    inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
    for feed in growth:
        values = _run_all(session, feed)
        shapes = {**inits, **{k: tuple(v.shape) for k, v in values.items()},
                  **{k: tuple(v.shape) for k, v in feed.inputs.items()}}
        peak = {k: float(np.max(np.abs(v))) if v.size and np.issubdtype(v.dtype, np.floating) else 0.0
                for k, v in values.items()}
        peak.update({k: float(np.max(np.abs(v))) for k, v in feed.inputs.items()})
        area = feed.hw[0] * feed.hw[1]
        for node, st in zip(nodes, stats):
            out_max, in_max = peak.get(node.output[0], 0.0), max((peak.get(i, 0.0) for i in node.input), default=0.0)
            length = _reduce_len(node, shapes)
            st.sizes.append(area)
            st.max_abs.append(out_max)
            st.reduce_len.append(length)
            st.risk.append(_risk(node, out_max, in_max, length))
        del values
    target = max_res * max_res
    for st in stats:
        st.growth = _fit_growth(st.sizes, st.risk)
        if st.over_hw:
            st.growth = max(st.growth, _fit_growth(st.sizes, [float(v) for v in st.reduce_len]))
        st.predicted = st.risk[-1] * (target / st.sizes[-1]) ** st.growth if st.risk else 0.0
        if st.max_abs:
            st.out_predicted = st.max_abs[-1] * (target / st.sizes[-1]) ** _fit_growth(st.sizes, st.max_abs)
    return stats


def local_errors(model: onnx.ModelProto, fp32_nodes: Iterable[str], feed: Feed, stats: list[NodeStat]) -> None:
    """Each node's relative error in the FP16 graph minus the worst of its inputs' (into ``stats[..].error``)."""
    nodes = compute_nodes(model)
    names = [n.output[0] for n in nodes if n.output]
    ref = _run_all(_session(_exposed(model, names)), feed)
    got = _run_all(_session(_exposed(emulate(model, fp32_nodes), names), emulated=True), feed)
    rel: dict[str, float] = {}
    for name in names:
        if name in ref and name in got and ref[name].shape == got[name].shape:
            a, b = ref[name].astype(np.float64), got[name].astype(np.float64)
            denom = math.sqrt(float(np.mean(a * a))) + 1e-12
            err = math.sqrt(float(np.mean((a - b) ** 2))) / denom
            rel[name] = err if math.isfinite(err) else 1e9
    for node, st in zip(nodes, stats):
        mine = rel.get(node.output[0], 0.0)
        st.error = mine - max((rel.get(i, 0.0) for i in node.input), default=0.0)


# --- the search -------------------------------------------------------------------------------------------------


class _Judge:
    """PSNR of a candidate FP32 set on every calibration feed (FP16 storage emulated: :func:`emulate`), cached."""

    def __init__(self, model: onnx.ModelProto, feeds: list[Feed], output: str, peak: float, floor: float):
        self.model, self.feeds, self.output, self.peak, self.floor = model, feeds, output, peak, floor
        session = _session(model)
        self.refs = [_run_all(session, f)[output] for f in feeds]
        self.cache: dict[frozenset, dict[str, float]] = {}

    def psnrs(self, fp32: Iterable[str]) -> dict[str, float]:
        key = frozenset(fp32)
        if key not in self.cache:
            session = _session(emulate(self.model, key), emulated=True)
            scores = {}
            for feed, ref in zip(self.feeds, self.refs):
                out = _run_all(session, feed)[self.output].astype(np.float32)
                scores[feed.name] = psnr(ref, out, self.peak) if np.isfinite(out).all() else 0.0
            self.cache[key] = scores
        return self.cache[key]

    def ok(self, fp32: Iterable[str]) -> bool:
        return min(self.psnrs(fp32).values()) >= self.floor


def search_policy(model: onnx.ModelProto, feeds: list[Feed], growth: list[Feed], output: str, *,
                  min_psnr_db: float = 50.0, max_res: int = 2048, margin_db: float = 1.0, peak: float = 1.0,
                  calibration: str = "") -> PolicyResult:
    """The smallest FP32 set found that keeps PSNR >= min_psnr_db + margin_db on every feed and stays in range."""
    start = time.perf_counter()
    model = name_nodes(model)
    stats = measure(model, growth, max_res)
    bound = HEADROOM * FP16_MAX
    reasons: dict[str, dict] = {n: {"op_type": op, "reason": "converter", "detail": "op without reliable FP16 "
                                    "kernels (onnxconverter-common default block list)"}
                                for n, op in ((n.name, n.op_type) for n in compute_nodes(model)
                                              if n.name in set(default_fp32_nodes(model)))}
    for st in stats:
        if st.name not in reasons and st.predicted > bound:
            reasons[st.name] = _range_reason(st, max_res, bound)
    _close_over_consumers(model, stats, reasons, bound, max_res)
    judge = _Judge(model, feeds, output, peak, min_psnr_db + margin_db)
    forced = list(reasons)
    if not judge.ok(forced):
        local_errors(model, forced, min(growth, key=lambda f: f.hw[0] * f.hw[1]), stats)
        ranked = [st for st in sorted(stats, key=lambda s: (-s.error, s.index)) if st.name not in reasons]
        for name, drop in _accuracy_set(judge, forced, [st.name for st in ranked]).items():
            reasons[name] = {"op_type": next(s.op_type for s in stats if s.name == name), "reason": "accuracy",
                             "detail": (f"without it the PSNR falls to {drop:.1f} dB (< {judge.floor:g})"
                                        if drop is not None else "kept by the bisection (not re-tested)")}
    chosen = [st.name for st in stats if st.name in reasons]
    fp16_stats = [st for st in stats if st.name not in reasons]
    limiting = min(fp16_stats, key=lambda s: (s.safe_area(), s.index), default=None)
    area = limiting.safe_area() if limiting else math.inf
    settings = {"min_psnr_db": min_psnr_db, "calib_margin_db": margin_db, "max_res": max_res,
                "fp16_headroom": HEADROOM, "calibration": calibration,
                "growth_sides": [f.hw[0] for f in growth]}
    return PolicyResult(chosen, reasons, judge.psnrs(chosen), None if math.isinf(area) else int(math.sqrt(area)),
                        limiting.name if limiting and not math.isinf(area) else None, len(judge.cache),
                        time.perf_counter() - start, settings, len(stats),
                        [st.name for st in sorted(fp16_stats, key=lambda s: (s.safe_area(), s.index))
                         if st.over_hw or st.growth > 0.05][:32])


def _close_over_consumers(model: onnx.ModelProto, stats: list[NodeStat], reasons: dict[str, dict], bound: float,
                          max_res: int) -> None:
    """An FP16 node casts its inputs to FP16: the consumers of an FP32 node whose output would not fit stay FP32."""
    nodes = compute_nodes(model)
    by_output = {n.output[0]: st for n, st in zip(nodes, stats) if n.output}
    todo = [st for st in stats if st.name in reasons]
    while todo:
        st = todo.pop()
        if st.out_predicted <= bound:
            continue
        tensor = next(n.output[0] for n in nodes if n.name == st.name)
        for node, other in zip(nodes, stats):
            if tensor in node.input and other.name not in reasons:
                reasons[other.name] = {"op_type": other.op_type, "reason": "range",
                                       "detail": f"reads {by_output[tensor].name}, whose output reaches "
                                                 f"{st.out_predicted:.3g} at {max_res}x{max_res} (> {bound:g}): "
                                                 "an FP16 node would cast it to FP16",
                                       "predicted_at_max_res": float(f"{st.out_predicted:.4g}")}
                todo.append(other)


def _range_reason(st: NodeStat, max_res: int, bound: float) -> dict:
    side = int(math.sqrt(st.sizes[-1]))
    if st.over_hw:
        what = (f"sums over H*W (N={st.reduce_len[-1]:,} at {side}x{side}); FP16 running value "
                f"{st.risk[-1]:.3g} grows ~(H*W)^{st.growth:.2f} to {st.predicted:.3g} at {max_res}x{max_res}")
        kind = "accumulation"
    else:
        what = (f"max |output| {st.max_abs[-1]:.3g} at {side}x{side} grows ~(H*W)^{st.growth:.2f} to "
                f"{st.predicted:.3g} at {max_res}x{max_res}")
        kind = "range"
    return {"op_type": st.op_type, "reason": kind, "detail": f"{what} > {bound:g}",
            "predicted_at_max_res": float(f"{st.predicted:.4g}"), "growth_exponent": round(st.growth, 3)}


def _accuracy_set(judge: _Judge, forced: list[str], ranked: list[str]) -> dict[str, float | None]:
    """Shortest prefix of ``ranked`` that passes (bisection), then 1-minimal pruning: {node: PSNR without it}."""
    if not judge.ok(forced + ranked):
        worst = min(judge.psnrs(forced + ranked).values())
        raise ExportError(f"--fp16-policy auto: even with every node FP32 the FP16 graph reaches only {worst:.1f} dB "
                          f"(< {judge.floor:g}); lower --min-psnr or use --fp16-policy spec")
    lo, hi = 0, len(ranked)  # ok(hi) holds, ok(lo) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if judge.ok(forced + ranked[:mid]):
            hi = mid
        else:
            lo = mid
    kept = ranked[:hi]
    drops: dict[str, float | None] = {n: None for n in kept}
    for name in reversed(kept[-PRUNE_CAP:] if len(kept) > PRUNE_CAP else kept):
        trial = [n for n in kept if n != name]
        if judge.ok(forced + trial):
            kept = trial
            drops.pop(name)
        else:
            drops[name] = min(judge.psnrs(forced + trial).values())
    return {n: drops[n] for n in kept}


# --- checks of a chosen policy ------------------------------------------------------------------------------------


def check_finite(model: onnx.ModelProto, fp32_nodes: Iterable[str], feed: Feed, watch: Iterable[str] = ()) -> dict:
    """NaN/Inf count on one (large) feed: the FP16-storage emulation (graph outputs and the ``watch`` nodes'
    outputs: overflow can hide behind a Clip or Sigmoid downstream) and the FP16 file in ONNX Runtime."""
    names = {n.name: n.output[0] for n in compute_nodes(model)}
    emu = _run_all(_session(_exposed(emulate(model, fp32_nodes), [names[w] for w in watch if w in names]),
                            emulated=True), feed)
    ort16 = _run_all(_session(to_fp16(model, fp32_nodes)), feed)

    def bad(values):
        return sum(int((~np.isfinite(v.astype(np.float32))).sum()) for v in values)

    return {"side": feed.hw[0], "nonfinite": bad(emu.values()) + bad(ort16.values()),
            "emulated_nonfinite": bad(emu.values()), "ort_fp16_nonfinite": bad(ort16.values()),
            "watched_nodes": len(emu) - len(ort16)}


def pad_feed(spec, feed: Feed, side: int) -> Feed:
    """``feed``'s image mirrored out to side x side (the extra maps rebuilt at that size)."""
    image = feed.inputs[spec.inputs[0].name]
    h, w = image.shape[2:]
    big = np.pad(image, ((0, 0), (0, 0), (0, max(0, side - h)), (0, max(0, side - w))), mode="symmetric")
    return feed_for(spec, np.ascontiguousarray(big[:, :, :side, :side]), f"{feed.name} mirrored to {side}x{side}")


def auto_convert(model: onnx.ModelProto, spec, *, calib=None, max_res: int = 2048, min_psnr_db: float = 50.0,
                 verify_side: int = 256):
    """``--fp16-policy auto`` for the export pipeline: (FP16 model, Fp16Record, the manifest's policy section)."""
    if max_res < 1 or not math.isfinite(min_psnr_db):
        raise ExportError(f"--fp16-max-res must be >= 1 and --min-psnr finite (got {max_res}, {min_psnr_db})")
    feeds, growth, what = calibration_set(spec, calib)
    low, high = spec.value_range
    result = search_policy(model, feeds, growth, spec.outputs[spec.image_output].name, min_psnr_db=min_psnr_db,
                           max_res=max_res, peak=high - low, calibration=what)
    model16 = to_fp16(model, result.fp32_nodes)
    policy = result.to_dict()
    side = spec.valid_size(min(max_res, verify_side))
    policy["verified_finite"] = {**check_finite(model, result.fp32_nodes, pad_feed(spec, feeds[0], side),
                                                result.watch),
                                 "note": f"FP16 graph run in ONNX Runtime at {side}x{side}; {max_res}x{max_res} "
                                         "is covered by the fitted growth (predicted_safe_side)"}
    if policy["verified_finite"]["nonfinite"]:
        raise ExportError(f"--fp16-policy auto: the FP16 graph gives {policy['verified_finite']['nonfinite']} "
                          f"NaN/Inf values at {side}x{side}; use --fp16-policy spec")
    by_name = {n.name: n.op_type for n in compute_nodes(model)}
    record = Fp16Record(sorted({by_name[n] for n in result.fp32_nodes}), list(result.fp32_nodes),
                        len(by_name) - len(result.fp32_nodes))
    return model16, record, policy


def predicted_overflow(model: onnx.ModelProto, stats: list[NodeStat], fp32_nodes: Iterable[str],
                       limit: float = FP16_MAX) -> list[str]:
    """Nodes of an FP32 set's FP16 graph predicted (by :func:`measure`'s fit) to store a value over ``limit`` at
    its max_res: FP16 nodes whose output or running sum passes it, and FP16 readers of an FP32 node whose output
    does (the converter casts that input to FP16)."""
    keep = set(fp32_nodes)
    nodes = compute_nodes(model)
    big = {n.output[0] for n, st in zip(nodes, stats) if n.output and st.out_predicted > limit}
    return [st.name for n, st in zip(nodes, stats) if st.name not in keep
            and (st.predicted > limit or any(i in big for i in n.input))]
