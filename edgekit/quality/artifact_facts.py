"""What an exported artifact is, read from the file itself with its own runtime's tools:
precision, multiply-accumulates per inference, weight bytes, ops, I/O dtypes, dynamic dims.

The device estimates need these for artifacts that have no Keras model beside them (a
.tflite handed to `edgekit bench --device rpi4`). One rule counts MACs in every format:
for a conv or fully-connected op, MACs = output elements x weight elements / output
channels, which is (Cin/groups) x kh x kw per output element for any convolution
(grouped and depthwise included) and the input width for a matrix multiply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.errors import require


@dataclass
class MacOp:
    """One conv or fully-connected op as the file holds it."""

    name: str
    macs: int
    weights: int  # weight elements
    int8_weights: bool  # its weights are stored as 8-bit integers
    int8_compute: bool  # its activations are 8-bit too: it runs as an integer kernel


@dataclass
class ArtifactFacts:
    path: str
    format: str
    precision: str                  # fp32 | fp16 | int8w | int8
    macs: int
    weight_bytes: int               # the file's size: every parameter is in it once
    ops: list[str] = field(default_factory=list)
    input_dtype: str = "float32"
    output_dtype: str = "float32"
    dynamic_dims: bool = False
    mac_ops: list[MacOp] = field(default_factory=list, repr=False)

    def quantization(self) -> dict:
        """What share of the conv/dense weights and MACs the file really holds in int8, and
        which of those ops it left in float: the report states this, not the recipe."""
        weights = sum(op.weights for op in self.mac_ops)
        macs = sum(op.macs for op in self.mac_ops)
        float_ops = [op.name for op in self.mac_ops if not op.int8_compute]
        return {
            "int8_weight_share": round(sum(op.weights for op in self.mac_ops if op.int8_weights) / weights, 4)
            if weights else None,
            "int8_mac_share": round(sum(op.macs for op in self.mac_ops if op.int8_compute) / macs, 4) if macs else None,
            "mac_ops": len(self.mac_ops),
            "float_mac_ops": len(float_ops),
            "float_mac_op_names": float_ops[:MAX_NAMED_OPS],
        }


MAX_NAMED_OPS = 20
INT8_TYPES = {"int8", "uint8"}


def _numel(shape) -> int:
    return int(np.prod([max(int(d), 1) for d in shape]))  # unknown (batch) dims count as 1


def read_facts(path: Path, fmt: str) -> ArtifactFacts:
    reader = {"tflite": _tflite_facts, "onnx": _onnx_facts, "openvino": _openvino_facts}[fmt]
    return reader(Path(path))


# --- TFLite -------------------------------------------------------------------------------

TFLITE_MAC_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def _tflite_facts(path: Path) -> ArtifactFacts:
    litert = require("ai_edge_litert.interpreter", "tflite")
    interpreter = litert.Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # the only API listing a model's ops and operands
    macs, weight_types, result_types, fp16_weights, mac_ops = 0, set(), set(), False, []
    for op in ops:
        name = op["op_name"]
        if name in TFLITE_MAC_OPS:
            weight = tensors[int(op["inputs"][1])]
            output = tensors[int(op["outputs"][0])]
            out = output["shape"]
            op_macs = _numel(out) * _numel(weight["shape"]) // max(int(out[-1]), 1)
            macs += op_macs
            weight_type = np.dtype(weight["dtype"]).name
            weight_types.add(weight_type)
            result_types.add(np.dtype(output["dtype"]).name)
            activation_type = np.dtype(tensors[int(op["inputs"][0])]["dtype"]).name
            mac_ops.append(MacOp(output["name"], op_macs, _numel(weight["shape"]), weight_type in INT8_TYPES,
                                 weight_type in INT8_TYPES and activation_type in INT8_TYPES))
        elif name == "DEQUANTIZE" and np.dtype(tensors[int(op["inputs"][0])]["dtype"]) == np.float16:
            fp16_weights = True
    precision = ("int8" if weight_types & {"int8", "uint8"} and result_types <= {"int8", "uint8"}
                 else "int8w" if weight_types & {"int8", "uint8"} else "fp16" if fp16_weights else "fp32")
    first_in, first_out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    return ArtifactFacts(
        path=str(path), format="tflite", precision=precision, macs=int(macs), weight_bytes=path.stat().st_size,
        ops=sorted({op["op_name"] for op in ops}), input_dtype=np.dtype(first_in["dtype"]).name,
        output_dtype=np.dtype(first_out["dtype"]).name,
        dynamic_dims=bool(np.any(np.asarray(first_in.get("shape_signature", first_in["shape"])) < 0)),
        mac_ops=mac_ops)


# --- ONNX ---------------------------------------------------------------------------------

ONNX_CONV_OPS = {"Conv", "ConvInteger", "QLinearConv"}
ONNX_MATMUL_OPS = {"MatMul", "Gemm", "MatMulInteger", "QLinearMatMul"}
ONNX_WEIGHT_INPUT = {"QLinearConv": 3, "QLinearMatMul": 3}  # (x, x_scale, x_zp, w, ...)


def _onnx_facts(path: Path) -> ArtifactFacts:
    onnx = require("onnx", "onnx")
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
    macs, mac_ops = 0, []
    producers = {out: node for node in graph.node for out in node.output}
    int8_initializers = {init.name for init in graph.initializer
                         if init.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)}
    for node in graph.node:
        if node.op_type in ONNX_CONV_OPS | ONNX_MATMUL_OPS:
            weight_name = node.input[ONNX_WEIGHT_INPUT.get(node.op_type, 1)]
            weight = shapes.get(weight_name)
            out = shapes.get(node.output[0])
            if weight and out:
                channels = out[1] if node.op_type in ONNX_CONV_OPS else out[-1]
                op_macs = _numel(out) * _numel(weight) // max(channels, 1)
                macs += op_macs
                int8_weights, int8_compute = _onnx_int8(node, producers, int8_initializers)
                mac_ops.append(MacOp(node.name or node.output[0], op_macs, _numel(weight), int8_weights,
                                     int8_compute))
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
        dynamic_dims=any(not d.HasField("dim_value") for d in first_in.shape.dim), mac_ops=mac_ops)


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


# --- OpenVINO -----------------------------------------------------------------------------

def _openvino_facts(path: Path) -> ArtifactFacts:
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
                op_macs = _numel(dims) * _numel(weight.to_shape()) // max(channels, 1)
                macs += op_macs
                int8_weights = _openvino_int8_source(op.input_value(1).get_node())
                int8_compute = int8_weights and _openvino_fake_quantized(op.input_value(0).get_node())
                mac_ops.append(MacOp(op.get_friendly_name(), op_macs, _numel(weight.to_shape()), int8_weights,
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
