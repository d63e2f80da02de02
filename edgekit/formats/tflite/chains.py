"""Chains in a .tflite file: each CONV_2D/DEPTHWISE_CONV_2D/FULLY_CONNECTED op and the ops fused after it."""

from __future__ import annotations

from edgekit.formats.graph import Chain, consumer_index, follow, kernel_key, passes_after, per_channel


def load_graph(path):
    """LiteRT reads the file itself, for chains and for taps."""
    return path


TFLITE_MAC_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_3D", "TRANSPOSE_CONV"}
TFLITE_UNARY = {"RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "QUANTIZE", "DEQUANTIZE"}
TFLITE_WITH_CONSTANT = {"ADD", "MUL", "SUB"}
TFLITE_PASS = {"RESHAPE", "TRANSPOSE", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN", "SQUEEZE", "PAD", "QUANTIZE",
               "DEQUANTIZE"}


def file_chains(path) -> list[Chain]:
    from edgekit.errors import require

    litert = require("ai_edge_litert.interpreter", "tflite")
    interpreter = litert.Interpreter(model_path=str(path))
    tensors = interpreter.get_tensor_details()
    ops = interpreter._get_ops_details()  # noqa: SLF001 - the op list LiteRT's own tools read
    produced = {int(t) for op in ops for t in op["outputs"]}
    inputs = {int(d["index"]) for d in interpreter.get_input_details()}
    constant = lambda t: t >= 0 and t not in produced and t not in inputs  # noqa: E731
    nodes = [{"op": op["op_name"], "ins": [int(t) for t in op["inputs"]], "out": int(op["outputs"][0])}
             for op in ops if len(op["outputs"]) == 1]
    readers = consumer_index(nodes)

    def fusable(node) -> bool:
        if node["op"] in TFLITE_UNARY:
            return True
        return node["op"] in TFLITE_WITH_CONSTANT and any(
            constant(t) and per_channel(tensors[t]["shape"]) for t in node["ins"])

    chains = []
    for node in nodes:
        if node["op"] not in TFLITE_MAC_OPS:
            continue
        weights = node["ins"][1]
        if not constant(weights):
            continue
        followed, taps = follow(node["out"], readers, fusable)
        name_of = lambda n: tensors[n["out"]]["name"]  # noqa: E731 - denylisted_nodes takes output names
        passes = passes_after(taps[-1], readers, lambda n: n["op"] in TFLITE_PASS, name_of)
        chains.append(Chain(kernel_key(tensors[weights]["shape"]), [name_of(n) for n in [node, *followed]], taps,
                            channels_first=False, head=node, passes=passes))
    return chains
