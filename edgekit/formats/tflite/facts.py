"""What a .tflite file holds: precision, MACs, ops, I/O types (edgekit.formats.facts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import require
from edgekit.formats.facts import INT8_TYPES, ArtifactFacts, MacOp, numel

TFLITE_MAC_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def read_facts(path: Path) -> ArtifactFacts:
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
            op_macs = numel(out) * numel(weight["shape"]) // max(int(out[-1]), 1)
            macs += op_macs
            weight_type = np.dtype(weight["dtype"]).name
            weight_types.add(weight_type)
            result_types.add(np.dtype(output["dtype"]).name)
            activation_type = np.dtype(tensors[int(op["inputs"][0])]["dtype"]).name
            mac_ops.append(MacOp(output["name"], op_macs, numel(weight["shape"]), weight_type in INT8_TYPES,
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
