"""The theoretical minimum live memory of an ONNX graph at a given input size, to set beside ONNX Runtime's
measured peak: ONNX shape inference with the inputs fixed to that size, then a liveness walk in the graph's node
order (each output allocated when its node runs, each tensor freed after its last consumer; graph inputs,
initializers and graph outputs are excluded except that outputs stay live to the end). No arithmetic runs.

The figure is what *any* executor that runs the nodes in this order and keeps no tensor longer than needed must
hold; an in-place or fused kernel can go below it, an arena or a memory pattern above it.

    python3 -m deploykit.bench.onnx_memory MODEL.onnx 512     # prints the JSON figure
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

_DTYPE_BYTES = {1: 4, 10: 2, 11: 8, 7: 8, 6: 4, 9: 1, 2: 1, 3: 1, 16: 2}  # float, float16, double, int64, ...


def _fixed_model(path: str | Path, height: int, width: int, batch: int = 1):
    """The model with every graph input's dims set to (batch, C, height, width), shapes inferred (ONNX's own
    inference, then ONNX Runtime's symbolic shape inference, which resolves the dynamo exporter's Reshape/Shape
    chains that ONNX's leaves unknown)."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path), load_external_data=False)
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if len(dims) == 4:
            for dim, value in zip(dims, (batch, None, height, width)):
                if value is not None and not dim.HasField("dim_value"):
                    dim.ClearField("dim_param")
                    dim.dim_value = value
    model = shape_inference.infer_shapes(model, data_prop=True)
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except ImportError:
        return model
    return SymbolicShapeInference.infer_shapes(model, auto_merge=True)


def _tensor_bytes(value_info) -> int | None:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    if any(d is None for d in dims):
        return None
    return int(np.prod(dims, dtype=np.int64)) * _DTYPE_BYTES.get(t.elem_type, 4)


PROBE_SIDES = (64, 128)


def measured_sizes(path: str | Path, height: int, width: int, batch: int = 1,
                   sides: tuple[int, int] = PROBE_SIDES) -> dict[str, int]:
    """Every node output's bytes at (height, width), from two small ONNX Runtime runs with every tensor exposed:
    bytes = a + b x pixels fitted per tensor (exact for a convolutional graph, whose tensors are full-, down- or
    up-sampled maps or pooled vectors). For graphs shape inference cannot resolve (MIRNet's Unsqueeze chains)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = onnx.load(str(path))
    known = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in known:
                model.graph.output.append(helper.make_empty_tensor_value_info(name))
                known.add(name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    rng = np.random.default_rng(0)
    runs = []
    for side in sides:
        feed = {}
        for inp in session.get_inputs():
            dims = [d if isinstance(d, int) else v for d, v in zip(inp.shape, (batch, None, side, side))]
            feed[inp.name] = rng.random(dims, dtype=np.float32)
        runs.append({n: np.asarray(v).nbytes for n, v in zip(names, session.run(names, feed))})
    (p1, p2), target = (s * s for s in sides), height * width
    sizes = {}
    for name in names:
        b1, b2 = runs[0][name], runs[1][name]
        slope = (b2 - b1) / (p2 - p1)
        sizes[name] = int(round(b1 + slope * (target - p1)))
    return sizes


def min_live_bytes(path: str | Path, height: int, width: int, batch: int = 1) -> dict:
    """{peak_bytes, peak_node, unknown_tensors, nodes}: the liveness peak in node order (see the module doc);
    tensor sizes from shape inference, or where it fails or leaves any unknown, from :func:`measured_sizes`."""
    import onnx

    sizes_from = "ONNX (+ ORT symbolic) shape inference at this size"
    try:
        model = _fixed_model(path, height, width, batch)
        g = model.graph
        sizes = {vi.name: _tensor_bytes(vi) for vi in list(g.value_info) + list(g.output)}
        inferred = all(sizes.get(o) is not None for n in g.node for o in n.output if o)
    except Exception:  # noqa: BLE001 (ORT's symbolic inference raises on some exporters' graphs)
        inferred = False
    if not inferred:
        model = onnx.load(str(path))
        g = model.graph
        sizes = measured_sizes(path, height, width, batch)
        sizes_from = (f"tensor bytes measured by ONNX Runtime at {PROBE_SIDES[0]}^2 and {PROBE_SIDES[1]}^2, linear "
                      "in pixels (shape inference could not size every tensor)")
    outside = {i.name for i in g.input} | {i.name for i in g.initializer}
    keep = {o.name for o in g.output}
    last_use: dict[str, int] = {}
    for idx, node in enumerate(g.node):
        for name in node.input:
            last_use[name] = idx
    live = current = peak = 0
    peak_node, unknown = None, set()
    alive: dict[str, int] = {}
    for idx, node in enumerate(g.node):
        for name in node.output:
            if not name or name in outside:
                continue
            nbytes = sizes.get(name)
            if nbytes is None:
                unknown.add(name)
                continue
            alive[name] = nbytes
            current += nbytes
        if current > peak:
            peak, peak_node = current, f"{node.op_type} {node.name}"
        for name in set(node.input) | set(node.output):
            if name in alive and name not in keep and last_use.get(name, idx) <= idx:
                current -= alive.pop(name)
        live = max(live, len(alive))
    return {"peak_bytes": int(peak), "peak_node": peak_node, "unknown_tensors": len(unknown),
            "nodes": len(g.node), "input_hw": [height, width], "batch": batch,
            "method": f"{sizes_from} + liveness in node order (outputs allocated at their node, freed after the "
                      "last consumer; inputs and initializers excluded)"}


def main(argv: list[str] | None = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    if len(args) != 2:
        print("usage: python3 -m deploykit.bench.onnx_memory MODEL.onnx SIZE", file=sys.stderr)
        return 2
    print(json.dumps(min_live_bytes(args[0], int(args[1]), int(args[1])), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
