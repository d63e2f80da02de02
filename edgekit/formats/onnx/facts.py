"""What an .onnx file holds: precision, MACs, ops, I/O types (edgekit.formats.facts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import require
from edgekit.formats.facts import FUSED_ACTIVATIONS, ArtifactFacts, MacOp, OtherOp, numel, other_group

ONNX_CONV_OPS = {"Conv", "ConvInteger", "QLinearConv"}
ONNX_MATMUL_OPS = {"MatMul", "Gemm", "MatMulInteger", "QLinearMatMul"}
ONNX_WEIGHT_INPUT = {"QLinearConv": 3, "QLinearMatMul": 3}  # (x, x_scale, x_zp, w, ...)


def read_facts(path: Path) -> ArtifactFacts:
    onnx = require("onnx", "onnx")
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
    macs, mac_ops, other_ops = 0, [], []
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    int8_initializers = {init.name for init in graph.initializer
                         if init.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)}
    constants = _constant_values(graph)
    integers = _integer_values(graph, onnx)
    for node in graph.node:
        moved = sum(numel(shapes[n]) for n in [*node.input, *node.output] if n and n not in constants and n in shapes)
        if node.op_type in ONNX_CONV_OPS | ONNX_MATMUL_OPS:
            weight_name = node.input[ONNX_WEIGHT_INPUT.get(node.op_type, 1)]
            weight = shapes.get(weight_name)
            out = shapes.get(node.output[0])
            if weight and out:
                channels = out[1] if node.op_type in ONNX_CONV_OPS else out[-1]
                op_macs = numel(out) * numel(weight) // max(channels, 1)
                macs += op_macs
                int8_weights, int8_compute = _onnx_int8(node, producers, int8_initializers)
                mac_ops.append(MacOp(node.name or node.output[0], op_macs, numel(weight), int8_weights,
                                     int8_compute, _kind(node, weight), moved,
                                     _weight_scales(node, producers, shapes) if int8_weights else None))
        elif _does_work(node, constants, integers, producers, consumers):
            other_ops.append(OtherOp(node.name or node.output[0], moved, other_group(node.op_type)))
    kinds = {node.op_type for node in graph.node}
    float16 = onnx.TensorProto.FLOAT16
    precision = ("int8w" if "DynamicQuantizeLinear" in kinds or ("DequantizeLinear" in kinds and "QuantizeLinear" not in kinds)
                 else "int8" if kinds & {"QuantizeLinear", "QLinearConv", "QLinearMatMul"}
                 else "fp16" if any(init.data_type == float16 for init in graph.initializer) else "fp32")
    elem = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8",
            float16: "float16"}
    first_in, first_out = graph.input[0].type.tensor_type, graph.output[0].type.tensor_type
    return ArtifactFacts(
        path=str(path), format="onnx", precision=precision, macs=int(macs), weight_bytes=path.stat().st_size,
        ops=sorted(kinds), input_dtype=elem.get(first_in.elem_type, "other"),
        output_dtype=elem.get(first_out.elem_type, "other"),
        dynamic_dims=any(not d.HasField("dim_value") for d in first_in.shape.dim), mac_ops=mac_ops,
        other_ops=other_ops, float_other_ops=_float_other_ops(graph, constants, producers, consumers)
        if precision == "int8" else None)


# Ops with no work of their own once ONNX Runtime has optimised the graph: views (a QDQ pair is
# free where it folds into an integer kernel: _float_island_edge).
FREE_OPS = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Shape", "Cast", "Dropout"}
# How a value reaches an op through the QDQ pairs around it.
QDQ = {"QuantizeLinear", "DequantizeLinear"}
# What ONNX Runtime's QDQ fusion folds into the integer conv before it: clamps (the output range does it)
QDQ_ABSORBED = {"Relu", "Clip"}
# Ops ONNX Runtime runs on int8 between QDQ pairs (its QDQ selectors): a DQ/Q around them is folded in
QDQ_KERNELS = {*ONNX_CONV_OPS, *ONNX_MATMUL_OPS, "Add", "Mul", "Sigmoid", "LeakyRelu", "Relu", "Clip", "Concat",
               "AveragePool", "GlobalAveragePool", "MaxPool", "Softmax", "Transpose", "Reshape", "Squeeze",
               "Unsqueeze", "Flatten", "Resize", "Pad", "Split", "Gather", "Slice", "Where", "HardSigmoid",
               "QuantizeLinear", "DequantizeLinear"}


def _constant_values(graph) -> set[str]:
    """Initializers and what nodes compute from nothing else (a DequantizeLinear of int8 weights)."""
    constants = {init.name for init in graph.initializer}
    for node in graph.node:  # topologically sorted, as ONNX requires
        if all(not name or name in constants for name in node.input):
            constants.update(node.output)
    return constants


def _integer_values(graph, onnx) -> set[str]:
    """Values typed int32/int64: shape arithmetic, not activations."""
    wide = (onnx.TensorProto.INT32, onnx.TensorProto.INT64)
    return {info.name for info in [*graph.value_info, *graph.output] if info.type.tensor_type.elem_type in wide}


def _source(name: str, producers: dict):
    """The node that computed a value, looking through QDQ pairs."""
    node = producers.get(name)
    while node is not None and node.op_type in QDQ:
        node = producers.get(node.input[0])
    return node


def _through_qdq(name: str, producers: dict) -> bool:
    node = producers.get(name)
    return node is not None and node.op_type == "DequantizeLinear"


def _float_island_edge(node, producers: dict, consumers: dict) -> bool:
    """A Q or DQ that converts for real: the graph's input and output, and into or out of an op with
    no integer kernel (a float island: a batch norm ahead of its conv, an activation ONNX Runtime
    has no QLinear form of)."""
    if node.op_type == "DequantizeLinear":  # the graph's output too: no consumer
        after = consumers.get(node.output[0], [])
        return not after or any(c.op_type not in QDQ_KERNELS for c in after)
    source = producers.get(node.input[0])  # the graph's input too: no producer
    return source is None or source.op_type not in QDQ_KERNELS


def _does_work(node, constants: set[str], integers: set[str], producers: dict, consumers: dict) -> bool:
    """An op ONNX Runtime runs on its own: not a view, not on constants or shapes, not an
    activation or bias fused into the conv/matmul before it (swish too: Sigmoid, then Mul), not a
    QDQ pair it folds into an integer kernel."""
    data = [n for n in node.input if n and n not in constants]
    if not data or all(n in integers for n in node.output):
        return False
    if node.op_type in QDQ:
        return _float_island_edge(node, producers, consumers)
    if node.op_type in FREE_OPS:
        return False
    source = _source(data[0], producers)
    after_mac = source is not None and source.op_type in ONNX_CONV_OPS | ONNX_MATMUL_OPS
    if _through_qdq(data[0], producers):
        # int8 (QDQ): a clamp is absorbed into the conv's output range; anything else after the
        # conv (sigmoid, the swish's Mul, an Add) runs as its own QLinear kernel
        return not (after_mac and node.op_type in QDQ_ABSORBED)
    if after_mac and (node.op_type.lower() in FUSED_ACTIVATIONS or (node.op_type == "Add" and len(data) == 1)):
        return False
    if node.op_type == "Mul" and len(data) == 2:
        sources = [_source(n, producers) for n in data]
        for gate, other in ((sources[0], sources[1]), (sources[1], sources[0])):
            if gate is not None and gate.op_type == "Sigmoid" and other is not None \
                    and other.op_type in ONNX_CONV_OPS | ONNX_MATMUL_OPS and _source(gate.input[0], producers) is other:
                return False
    return True


def _float_other_ops(graph, constants: set[str], producers: dict, consumers: dict) -> list[str]:
    """Ops other than conv/matmul ONNX Runtime runs in float in a QDQ file: one it has no integer
    kernel for, or one whose inputs are not all dequantized int8 or whose outputs are not all
    quantized again (a node accuracy-aware int8 or the quantizer left out)."""
    ends = {v.name for v in [*graph.input, *graph.output]}
    found = []
    for node in graph.node:
        data = [n for n in node.input if n and n not in constants]
        if node.op_type in QDQ | FREE_OPS | ONNX_CONV_OPS | ONNX_MATMUL_OPS or not data:
            continue
        if node.op_type == "Transpose" and ends & {*data, *node.output}:
            continue  # tf2onnx's NHWC ↔ NCHW at the float input or output: a layout, no arithmetic
        from_int8 = all(_through_qdq(n, producers) for n in data)
        to_int8 = all(any(c.op_type == "QuantizeLinear" for c in consumers.get(out, [])) for out in node.output)
        if not (node.op_type in QDQ_KERNELS and from_int8 and to_int8):
            found.append(f"{node.op_type} {node.name or node.output[0]}")
    return found


def _kind(node, weight: list[int]) -> str:
    if node.op_type in ONNX_MATMUL_OPS:
        return "dense"
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    if group > 1 and len(weight) > 1 and weight[1] == 1:
        return "depthwise"
    return "pointwise" if list(weight[2:]) == [1, 1] else "conv"  # (out, in / groups, kh, kw)


def _weight_scales(node, producers: dict, shapes: dict) -> int | None:
    """How many scales the DequantizeLinear of a conv/matmul's weight holds (1: per-tensor)."""
    producer = producers.get(node.input[1])
    while producer is not None and producer.op_type in ("Transpose", "Reshape", "Identity"):
        producer = producers.get(producer.input[0])
    if producer is None or producer.op_type != "DequantizeLinear":
        return None
    return max(numel(shapes.get(producer.input[1]) or []), 1)


def _onnx_int8(node, producers: dict, int8_initializers: set) -> tuple[bool, bool]:
    """(int8 weights, int8 compute) of a conv/matmul node: integer ops are both; a float op
    is int8 in QDQ form when its weight comes from DequantizeLinear of an 8-bit initializer
    and its input from DequantizeLinear (ONNX Runtime fuses the pattern into an int8 kernel)."""
    if node.op_type in ("ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul"):
        return True, True

    def dequantized_int8(name: str) -> bool:
        producer = producers.get(name)
        while producer is not None and producer.op_type in ("Transpose", "Reshape", "Identity"):
            producer = producers.get(producer.input[0])
        return producer is not None and producer.op_type == "DequantizeLinear" and (
            producer.input[0] in int8_initializers or producers.get(producer.input[0]) is not None)

    weights = dequantized_int8(node.input[1])
    return weights, weights and dequantized_int8(node.input[0])


def int8_weights(path: Path) -> list[np.ndarray]:
    """The int8 initializers (a QDQ file's weights), as stored (edgekit.formats.held)."""
    onnx = require("onnx", "onnx")
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return [numpy_helper.to_array(init) for init in model.graph.initializer if init.data_type == onnx.TensorProto.INT8]
