"""What an OpenVINO IR holds: precision, MACs, ops, I/O types (edgekit.formats.facts)."""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import require
from edgekit.formats.facts import ArtifactFacts, MacOp, numel

def read_facts(path: Path) -> ArtifactFacts:
    ov = require("openvino", "openvino")
    model = ov.Core().read_model(str(path))
    macs, kinds, constant_types, mac_ops = 0, set(), set(), []
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        kinds.add(kind)
        if kind == "Constant":
            constant_types.add(op.get_output_element_type(0).get_type_name())
        elif kind in ("Convolution", "GroupConvolution", "MatMul"):
            weight, out = op.input(1).get_partial_shape(), op.output(0).get_partial_shape()
            if weight.is_static:
                dims = [d.get_length() if d.is_static else 1 for d in out]
                channels = dims[1] if kind != "MatMul" else dims[-1]
                op_macs = numel(dims) * numel(weight.to_shape()) // max(channels, 1)
                macs += op_macs
                int8_weights = _openvino_int8_source(op.input_value(1).get_node())
                int8_compute = int8_weights and _openvino_fake_quantized(op.input_value(0).get_node())
                mac_ops.append(MacOp(op.get_friendly_name(), op_macs, numel(weight.to_shape()), int8_weights,
                                     int8_compute))
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
        dynamic_dims=first_in.get_partial_shape().is_dynamic, mac_ops=mac_ops)


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


# Ops that keep int8 activations int8: NNCF quantizes their inputs, not their output (a max
# pool or a concatenation of int8 tensors with one scale is int8).
OV_INT8_PRESERVING = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "MaxPool", "Concat"}


def _openvino_fake_quantized(node, depth: int = 0) -> bool:
    """Activations are int8 when a FakeQuantize precedes the op, through int8-preserving ops."""
    kind = node.get_type_name()
    if kind == "FakeQuantize":
        return True
    if kind in OV_INT8_PRESERVING and depth < 6:
        inputs = [node.input_value(i).get_node() for i in range(node.get_input_size())]
        data = inputs if kind == "Concat" else inputs[:1]  # the others are shapes and axes
        return all(_openvino_fake_quantized(n, depth + 1) for n in data)
    return False
