"""Chains in an .onnx file: each Conv/Gemm/MatMul node and the nodes fused after it."""

from __future__ import annotations

from edgekit.formats.graph import Chain, consumer_index, follow, kernel_key, passes_after, per_channel


def load_graph(path):
    """ONNX Runtime reads the file itself, for chains and for taps."""
    return path


ONNX_MAC_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
ONNX_UNARY = {"Relu", "Clip", "QuantizeLinear", "DequantizeLinear"}
ONNX_WITH_CONSTANT = {"Add", "Mul", "Sub", "Div", "BatchNormalization"}
ONNX_PASS = {"Reshape", "Transpose", "Flatten", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
             "Squeeze", "Unsqueeze", "Identity", "Pad", "ReduceMean", "QuantizeLinear", "DequantizeLinear"}


def file_chains(path_or_model) -> list[Chain]:
    import onnx

    model = path_or_model if isinstance(path_or_model, onnx.ModelProto) else onnx.load(str(path_or_model))
    graph = model.graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    constants = set(shapes) | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    nodes = []
    for n in graph.node:
        node = {"op": n.op_type, "name": n.name, "ins": list(n.input), "out": n.output[0] if n.output else None}
        if n.op_type == "DequantizeLinear" and n.input and n.input[0] in constants:
            constants.add(n.output[0])  # a dequantized weight is still a constant
            shapes[n.output[0]] = shapes.get(n.input[0])
        nodes.append(node)
    readers = consumer_index(nodes)

    def fusable(node) -> bool:
        if node["op"] in ONNX_UNARY:
            return True
        operands = node["ins"][1:]
        return (node["op"] in ONNX_WITH_CONSTANT and all(t in constants for t in operands)
                and any(per_channel(shapes.get(t) or [2]) for t in operands))

    chains = []
    for node in nodes:
        if node["op"] not in ONNX_MAC_OPS or len(node["ins"]) < 2 or node["ins"][1] not in constants:
            continue
        if shapes.get(node["ins"][1]) is None:
            continue
        followed, taps = follow(node["out"], readers, fusable)
        passes = passes_after(taps[-1], readers, lambda n: n["op"] in ONNX_PASS, lambda n: n["name"])
        chains.append(Chain(kernel_key(shapes[node["ins"][1]]), [n["name"] for n in [node, *followed]], taps,
                            channels_first=True, head=node, passes=passes))
    return chains
