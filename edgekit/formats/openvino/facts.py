"""What an OpenVINO IR holds: precision, MACs, ops, I/O types (edgekit.formats.facts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import require
from edgekit.formats.facts import FUSED_ACTIVATIONS, ArtifactFacts, MacOp, OtherOp, numel, other_group

def read_facts(path: Path) -> ArtifactFacts:
    ov = require("openvino", "openvino")
    model = ov.Core().read_model(str(path))
    macs, kinds, constant_types, mac_ops, other_ops, in_float = 0, set(), set(), [], [], []
    constants: set[str] = set()
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        kinds.add(kind)
        data = [op.input_value(i) for i in range(op.get_input_size())
                if op.input_value(i).get_node().get_friendly_name() not in constants]
        if kind == "Constant" or (kind != "Parameter" and not data):
            constants.add(op.get_friendly_name())  # weights and what is computed from them alone
        if kind == "Constant":
            constant_types.add(op.get_output_element_type(0).get_type_name())
        elif kind in OV_MAC_OPS:
            weight, out = op.input(1).get_partial_shape(), op.output(0).get_partial_shape()
            if weight.is_static:
                dims = [d.get_length() if d.is_static else 1 for d in out]
                channels = dims[1] if kind != "MatMul" else dims[-1]
                op_macs = numel(dims) * numel(weight.to_shape()) // max(channels, 1)
                macs += op_macs
                int8_weights = _openvino_int8_source(op.input_value(1).get_node())
                int8_compute = int8_weights and _openvino_fake_quantized(op.input_value(0).get_node())
                mac_ops.append(MacOp(op.get_friendly_name(), op_macs, numel(weight.to_shape()), int8_weights,
                                     int8_compute, _kind(kind, list(weight.to_shape())), _moved(op, data),
                                     _weight_scales(op.input_value(1).get_node()) if int8_weights else None))
        elif data and _does_work(op, data):
            other_ops.append(OtherOp(op.get_friendly_name(), _moved(op, data), other_group(kind)))
            if kind != "FakeQuantize" and not all(_openvino_fake_quantized(d.get_node()) for d in data):
                in_float.append(op)
    inside, at_edges = _split_at_edges(model, in_float)
    precision = ("int8" if "FakeQuantize" in kinds
                 else "int8w" if constant_types & {"i8", "u8", "i4", "u4"}
                 else "fp16" if "f16" in constant_types else "fp32")
    first_in = model.inputs[0]
    bin_path = path.with_suffix(".bin")
    return ArtifactFacts(
        path=str(path), format="openvino", precision=precision, macs=int(macs),
        weight_bytes=bin_path.stat().st_size if bin_path.is_file() else path.stat().st_size,
        ops=sorted(kinds), input_dtype=first_in.get_element_type().get_type_name().replace("f32", "float32"),
        output_dtype=model.outputs[0].get_element_type().get_type_name().replace("f32", "float32"),
        dynamic_dims=first_in.get_partial_shape().is_dynamic, mac_ops=mac_ops, other_ops=other_ops,
        float_other_ops=inside, float_edge_ops=at_edges)


OV_MAC_OPS = {"Convolution", "GroupConvolution", "MatMul"}
# No work of their own on OpenVINO's CPU plugin: the graph's ends, views, and the FakeQuantize and
# Convert pairs it folds into int8 kernels.
OV_FREE = {"Parameter", "Result", "Convert", "FakeQuantize", "Reshape", "Squeeze", "Unsqueeze", "ShapeOf",
           "Concat_shape"}
OV_SUM_POST_OPS = {"Add", "Multiply", "Subtract"}


def _does_work(op, data) -> bool:
    """Not a view, not shape arithmetic, not a bias, activation or residual sum fused into the conv
    before it (swish too, written as Sigmoid then Multiply). The CPU plugin's post-op fusion, as its
    compiled model shows it (tests/formats/test_openvino_facts.py)."""
    kind = op.get_type_name()
    if kind == "FakeQuantize":  # the input's quantize runs; the others fold into int8 kernels
        return data[0].get_node().get_type_name() == "Parameter"
    if kind in OV_FREE or op.get_output_element_type(0).get_type_name() in ("i32", "i64"):
        return False
    source = _source(data[0].get_node())
    after_mac = source.get_type_name() in OV_MAC_OPS
    if after_mac and (kind.lower() in FUSED_ACTIVATIONS or (kind == "Add" and len(data) == 1)):
        return False
    if kind in OV_SUM_POST_OPS and len(data) == 2 and any(_sole_output_of_mac(d) for d in data):
        return False
    if kind == "Multiply" and len(data) == 2:
        first, second = (_source(d.get_node()) for d in data)
        for gate, other in ((first, second), (second, first)):
            if gate.get_type_name() == "Sigmoid" and other.get_type_name() in OV_MAC_OPS \
                    and _source(gate.input_value(0).get_node()) is other:
                return False
    return True


def _split_at_edges(model, in_float: list) -> tuple[list[str], list[str]]:
    """Ops computing on float activations ("Kind name"), split into those between quantized ops and
    those at the graph's ends: before anything is quantized (an input's rescaling) or after the last
    conv/dense and quantize (the Softmax NNCF never quantizes). Every OpenVINO device runs the ends
    as pre- and post-processing; an op between int8 ones breaks the integer graph."""
    quantizing = OV_MAC_OPS | {"FakeQuantize"}
    ops = model.get_ordered_ops()
    after: set[str] = set()  # nodes with a quantize or conv/dense upstream
    for op in ops:
        inputs = [op.input_value(i).get_node() for i in range(op.get_input_size())]
        if any(n.get_type_name() in quantizing or n.get_friendly_name() in after for n in inputs):
            after.add(op.get_friendly_name())
    before: set[str] = set()  # nodes with a quantize or conv/dense downstream
    for op in reversed(ops):
        readers = [t.get_node() for i in range(op.get_output_size()) for t in op.output(i).get_target_inputs()]
        if any(n.get_type_name() in quantizing or n.get_friendly_name() in before for n in readers):
            before.add(op.get_friendly_name())
    inside, at_edges = [], []
    for op in in_float:
        name = op.get_friendly_name()
        (inside if name in after and name in before else at_edges).append(f"{op.get_type_name()} {name}")
    return inside, at_edges


def _sole_output_of_mac(value) -> bool:
    """A conv's output (through its bias and quantize) read by nothing else: a sum with it runs as
    the conv's post-op."""
    node = value.get_node()
    while node.get_type_name() in ("FakeQuantize", "Convert") or (
            node.get_type_name() == "Add" and node.input_value(0).get_node().get_type_name() in OV_MAC_OPS):
        if len(value.get_target_inputs()) != 1:
            return False
        value = node.input_value(0)
        node = value.get_node()
    return node.get_type_name() in OV_MAC_OPS and len(value.get_target_inputs()) == 1


def _source(node):
    """The node that computed a value, looking through FakeQuantize, Convert, a conv's bias Add and
    a sum fused into a conv (so a ReLU after a residual sum is fused too)."""
    while True:
        if node.get_type_name() in ("FakeQuantize", "Convert") or (
                node.get_type_name() == "Add" and node.input_value(0).get_node().get_type_name() in OV_MAC_OPS):
            node = node.input_value(0).get_node()
            continue
        fused = [node.input_value(i) for i in range(node.get_input_size())
                 if node.get_type_name() in OV_SUM_POST_OPS and _sole_output_of_mac(node.input_value(i))]
        if not fused:
            return node
        node = fused[0].get_node()


def _moved(op, data) -> int:
    """Elements of the run-time inputs read and the output written."""
    def elements(shape):
        return numel([d.get_length() if d.is_static else 1 for d in shape])
    return sum(elements(v.get_partial_shape()) for v in data) + elements(op.output(0).get_partial_shape())


def _kind(op_kind: str, weight: list[int]) -> str:
    if op_kind == "MatMul":
        return "dense"
    if op_kind == "GroupConvolution":  # (groups, out / groups, in / groups, kh, kw)
        return "depthwise" if weight[2] == 1 else "conv"
    return "pointwise" if weight[2:] == [1, 1] else "conv"  # (out, in, kh, kw)


OV_PASS_THROUGH = {"Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze", "Squeeze"}


def _openvino_int8_source(node, depth: int = 0) -> bool:
    """Weights are int8 when an 8-bit constant (NNCF's compressed weights) or a FakeQuantize
    feeds the op through decompression ops (Convert, Subtract, Multiply, reshapes)."""
    kind = node.get_type_name()
    if kind == "Constant":
        return node.get_output_element_type(0).get_type_name() in ("i8", "u8")
    if kind == "FakeQuantize":
        return True
    if kind in OV_PASS_THROUGH and depth < 6:
        return any(_openvino_int8_source(node.input_value(i).get_node(), depth + 1) for i in range(node.get_input_size()))
    return False


def _weight_scales(node, depth: int = 0) -> int | None:
    """The scales of an int8 weight's decompression (the Multiply by its scale, or a FakeQuantize's
    output range): 1 is per-tensor."""
    kind = node.get_type_name()
    constant_sizes = [numel(list(node.input_value(i).get_shape())) for i in range(node.get_input_size())
                      if node.input_value(i).get_node().get_type_name() == "Constant"
                      and node.input_value(i).get_element_type().get_type_name() in ("f32", "f16")]
    if kind == "FakeQuantize" or (kind == "Multiply" and constant_sizes):
        return max(constant_sizes or [1], default=1)
    if kind in OV_PASS_THROUGH and depth < 6:
        found = [_weight_scales(node.input_value(i).get_node(), depth + 1) for i in range(node.get_input_size())]
        return next((f for f in found if f is not None), None)
    return None


# Ops that keep int8 activations int8: NNCF quantizes their inputs, not their output (a max
# pool, a zero padding or a concatenation of int8 tensors with one scale is int8).
OV_INT8_PRESERVING = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "MaxPool", "Concat", "Pad"}


# DenseNet concatenates each layer's output onto the previous concatenation: NNCF quantizes the
# pieces, and a block of 24 layers nests 24 Concats between a conv and its FakeQuantizes.
MAX_PRESERVING_DEPTH = 64


def _openvino_fake_quantized(node, depth: int = 0) -> bool:
    """Activations are int8 when a FakeQuantize precedes the op, through int8-preserving ops."""
    kind = node.get_type_name()
    if kind == "FakeQuantize":
        return True
    if kind in OV_INT8_PRESERVING and depth < MAX_PRESERVING_DEPTH:
        inputs = [node.input_value(i).get_node() for i in range(node.get_input_size())]
        data = inputs if kind == "Concat" else inputs[:1]  # the others are shapes and axes
        return all(_openvino_fake_quantized(n, depth + 1) for n in data)
    return False


def int8_weights(path: Path) -> list[np.ndarray]:
    """The i8 constants (NNCF's compressed weights), as stored (edgekit.formats.held)."""
    ov = require("openvino", "openvino")
    model = ov.Core().read_model(str(path))
    return [np.array(op.get_data()) for op in model.get_ordered_ops()
            if op.get_type_name() == "Constant" and op.get_output_element_type(0).get_type_name() == "i8"]
