"""Chains in an OpenVINO IR: each Convolution/MatMul op and the ops fused after it."""

from __future__ import annotations

from edgekit.formats.graph import Chain, follow, kernel_key, per_channel


def load_graph(path):
    """Read once: chains are found in this model and taps are added to it."""
    from edgekit.errors import require

    return require("openvino", "openvino").Core().read_model(str(path))


OPENVINO_MAC_OPS = {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData",
                    "MatMul"}
OPENVINO_UNARY = {"Relu", "Clamp", "FakeQuantize"}
OPENVINO_WITH_CONSTANT = {"Add", "Multiply", "Subtract"}


def file_chains(path_or_model) -> list[Chain]:
    from edgekit.errors import require

    ov = require("openvino", "openvino")
    model = path_or_model if isinstance(path_or_model, ov.Model) else ov.Core().read_model(str(path_or_model))
    constant_ops: set[str] = set()
    ordered = model.get_ordered_ops()
    for op in ordered:  # a constant, or computed from constants only (NNCF's weight decompression)
        ins = [i.get_source_output().get_node() for i in op.inputs()]
        if op.get_type_name() == "Constant" or (ins and all(p.get_friendly_name() in constant_ops for p in ins)):
            constant_ops.add(op.get_friendly_name())

    def is_constant(port) -> bool:
        return port.get_source_output().get_node().get_friendly_name() in constant_ops

    def readers(output):
        return [{"op": t.get_node().get_type_name(), "node": t.get_node(), "out": t.get_node().output(0)}
                for t in output.get_target_inputs()]

    def fusable(node) -> bool:
        op = node["node"]
        if node["op"] == "FakeQuantize" or node["op"] in OPENVINO_UNARY:
            return True
        return node["op"] in OPENVINO_WITH_CONSTANT and any(
            is_constant(i) and i.get_partial_shape().is_static and per_channel(i.get_partial_shape().to_shape())
            for i in op.inputs())

    chains = []
    for op in ordered:
        if op.get_type_name() not in OPENVINO_MAC_OPS or op.get_input_size() < 2 or not is_constant(op.input(1)):
            continue
        shape = op.input(1).get_partial_shape()
        if shape.is_dynamic:
            continue
        shape = [int(d) for d in shape.to_shape()]
        if op.get_type_name().startswith("Group"):  # (groups, out/groups, in/groups, kh, kw): as ONNX's (out, in/groups, …)
            shape = [shape[0] * shape[1], *shape[2:]]
        followed, taps = follow(op.output(0), readers, fusable)
        chains.append(Chain(kernel_key(shape), [op.get_friendly_name()] +
                            [n["node"].get_friendly_name() for n in followed], taps, channels_first=True, head=op))
    return chains
