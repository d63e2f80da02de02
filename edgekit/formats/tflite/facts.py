"""What a .tflite file holds: precision, MACs, ops, I/O types (edgekit.formats.facts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import require
from edgekit.formats.facts import FUSED_ACTIVATIONS, INT8_TYPES, ArtifactFacts, MacOp, OtherOp, numel, other_group

TFLITE_MAC_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def read_facts(path: Path) -> ArtifactFacts:
    litert = require("ai_edge_litert.interpreter", "tflite")
    interpreter = litert.Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # the only API listing a model's ops and operands
    macs, weight_types, result_types, fp16_weights, mac_ops = 0, set(), set(), False, []
    variable = _variable_tensors(interpreter, ops)
    producer = {int(out): op for op in ops for out in op["outputs"]}
    other_ops = []
    for op in ops:
        name = op["op_name"]
        if name in TFLITE_MAC_OPS:
            weight = tensors[int(op["inputs"][1])]
            output = tensors[int(op["outputs"][0])]
            out = output["shape"]
            op_macs = numel(out) * numel(weight["shape"]) // max(int(out[-1]), 1)
            macs += op_macs
            weight_type = np.dtype(weight["dtype"]).name
            weight_types.add(weight_type)
            result_types.add(np.dtype(output["dtype"]).name)
            activation_type = np.dtype(tensors[int(op["inputs"][0])]["dtype"]).name
            mac_ops.append(MacOp(output["name"], op_macs, numel(weight["shape"]), weight_type in INT8_TYPES,
                                 weight_type in INT8_TYPES and activation_type in INT8_TYPES,
                                 _kind(name, weight["shape"]), _moved(op, tensors, variable),
                                 _scales(weight) if weight_type in INT8_TYPES else None))
        elif name == "DEQUANTIZE" and np.dtype(tensors[int(op["inputs"][0])]["dtype"]) == np.float16:
            fp16_weights = True
        elif _left_by_xnnpack(op, tensors):  # a ReLU still in the file is one no conv absorbed
            other_ops.append(OtherOp(tensors[int(op["outputs"][0])]["name"], _moved(op, tensors, variable), "fallback"))
        elif _does_work(op, variable, producer) and not _shape_arithmetic(op, tensors):
            other_ops.append(OtherOp(tensors[int(op["outputs"][0])]["name"], _moved(op, tensors, variable),
                                     other_group(name)))
    precision = ("int8" if weight_types & {"int8", "uint8"} and result_types <= {"int8", "uint8"}
                 else "int16x8" if weight_types & {"int8"} and result_types <= {"int16"}
                 else "int8w" if weight_types & {"int8", "uint8"} else "fp16" if fp16_weights else "fp32")
    first_in, first_out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    return ArtifactFacts(
        path=str(path), format="tflite", precision=precision, macs=int(macs), weight_bytes=path.stat().st_size,
        ops=sorted({op["op_name"] for op in ops}), input_dtype=np.dtype(first_in["dtype"]).name,
        output_dtype=np.dtype(first_out["dtype"]).name,
        dynamic_dims=bool(np.any(np.asarray(first_in.get("shape_signature", first_in["shape"])) < 0)),
        mac_ops=mac_ops, other_ops=other_ops, float_other_ops=_float_other_ops(interpreter, ops, tensors, variable))


def _scales(tensor: dict) -> int:
    return int(len(tensor.get("quantization_parameters", {}).get("scales", [])) or 1)


FREE_OPS = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}  # a new view of the same bytes
# Ops LiteRT's XNNPACK delegate leaves to TFLite's built-in kernels at int8, cutting the graph into
# separate delegate partitions around each (tests/formats/test_tflite_facts.py checks each on the
# installed LiteRT): NASNetMobile's 40 average pools and 48 lone ReLUs (those no conv before them
# absorbs) make its int8 file 3× slower than its fp32 one.
XNNPACK_LEAVES_INT8 = {"AVERAGE_POOL_2D", "RELU", "RELU6"}


def _left_by_xnnpack(op, tensors: dict) -> bool:
    data = tensors[int(op["inputs"][0])]
    return op["op_name"] in XNNPACK_LEAVES_INT8 and np.dtype(data["dtype"]).name in INT8_TYPES


def _variable_tensors(interpreter, ops) -> set[int]:
    """Tensors computed at run time: the inputs and every op's outputs (the rest are constants)."""
    found = {int(d["index"]) for d in interpreter.get_input_details()}
    for op in ops:  # in execution order
        if any(int(i) in found for i in op["inputs"]):  # a DEQUANTIZE of fp16 weights makes a constant
            found.update(int(o) for o in op["outputs"])
    return found


def _does_work(op, variable: set[int], producer: dict) -> bool:
    """An op the runtime executes on its own: not a view, not a constant's dequantization, not an
    activation fused into the conv before it (swish too: LOGISTIC then MUL of the conv's output)."""
    name = op["op_name"]
    inputs = [int(i) for i in op["inputs"] if int(i) >= 0 and int(i) in variable]
    if name in FREE_OPS or not inputs:
        return False
    before = producer.get(inputs[0])
    after_mac = before is not None and before["op_name"] in TFLITE_MAC_OPS
    if name.lower() in FUSED_ACTIVATIONS and after_mac:
        return False
    if name == "MUL" and len(inputs) == 2:
        gates = [producer.get(i) for i in inputs]
        for gate, other in ((gates[0], inputs[1]), (gates[1], inputs[0])):
            source = producer.get(other)
            if gate is not None and gate["op_name"] == "LOGISTIC" and int(gate["inputs"][0]) == other \
                    and source is not None and source["op_name"] in TFLITE_MAC_OPS:
                return False
    return True


def _float_other_ops(interpreter, ops, tensors: dict, variable: set[int]) -> list[str]:
    """Ops other than conv/fully-connected that read or write float activations ("MUL name"):
    LiteRT's types are explicit, so this is exact. The QUANTIZE of a float input and the
    DEQUANTIZE of a float output are the file's edges (its I/O type, checked on its own), not ops
    inside the integer graph."""
    inputs = {int(d["index"]) for d in interpreter.get_input_details()}
    outputs = {int(d["index"]) for d in interpreter.get_output_details()}
    found = []
    for op in ops:
        if op["op_name"] in TFLITE_MAC_OPS:
            continue  # their activations are MacOp.int8_compute
        read = [int(i) for i in op["inputs"] if int(i) >= 0 and int(i) in variable]
        written = [int(o) for o in op["outputs"]]
        if not read or (op["op_name"] == "QUANTIZE" and set(read) <= inputs) \
                or (op["op_name"] == "DEQUANTIZE" and set(written) <= outputs):
            continue
        if any(np.dtype(tensors[t]["dtype"]).kind == "f" for t in read + written):
            found.append(f"{op['op_name']} {tensors[written[0]]['name']}")
    return found


def _shape_arithmetic(op, tensors: dict) -> bool:
    """SHAPE → STRIDED_SLICE → PACK computing a RESHAPE's target: integers, not activations."""
    return all(np.dtype(tensors[int(o)]["dtype"]).kind in "iu" and np.dtype(tensors[int(o)]["dtype"]).itemsize >= 4
               for o in op["outputs"])


def _moved(op, tensors: dict, variable: set[int]) -> int:
    """Elements of the run-time inputs read and the outputs written."""
    read = sum(numel(tensors[int(i)]["shape"]) for i in op["inputs"] if int(i) >= 0 and int(i) in variable)
    return read + sum(numel(tensors[int(o)]["shape"]) for o in op["outputs"])


def _kind(op_name: str, weight_shape) -> str:
    if op_name == "DEPTHWISE_CONV_2D":
        return "depthwise"
    if op_name == "FULLY_CONNECTED":
        return "dense"
    return "pointwise" if tuple(int(d) for d in weight_shape[1:3]) == (1, 1) else "conv"  # (out, kh, kw, in)


def int8_weights(path: Path) -> list[np.ndarray]:
    """The int8 weights of the file's conv/fully-connected ops, as stored (edgekit.formats.held)."""
    litert = require("ai_edge_litert.interpreter", "tflite")
    interpreter = litert.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    found = []
    for op in interpreter._get_ops_details():  # noqa: SLF001 (as read_facts)
        if op["op_name"] in TFLITE_MAC_OPS:
            weight = int(op["inputs"][1])
            if np.dtype(tensors[weight]["dtype"]) == np.int8:
                found.append(np.array(interpreter.get_tensor(weight)))
    return found
