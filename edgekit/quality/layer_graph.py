"""Which tensor of an exported file holds which Keras layer's output.

Converters rename and fuse: TFLite folds BatchNormalization and ReLU into the conv and joins
op names with ";", OpenVINO's transpose sinking drops the conv names altogether. Names are
no guide, so layers are matched by structure, the same way in every format:

- a *unit* is one conv/dense layer of the Keras model with the layers fused after it
  (BatchNormalization, ReLU/ReLU6); its output is compared at the end of that chain;
- in a file, a *chain* is one conv/fully-connected op with the ops fused after it
  (bias/BN adds and multiplies by constants, ReLU/Clip, quantize/dequantize pairs);
- units and chains are paired in execution order by the kernel's shape (its dimensions
  other than 1, sorted: HWIO, OIHW and OHWI kernels of one layer give the same key).

Activations that do not fuse (softmax, swish, sigmoid) end a chain before them; the Keras
side then compares the layer's pre-activation output, computed by a linear twin of it.
Layers inside a nested model are not units: their model is one opaque layer here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAC_LAYERS = {"Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "Dense", "Conv2DTranspose"}
RELU_FAMILY = {"relu", "relu6", "linear"}
# Layers that move or subsample values without computing new ones: a unit's output reaches
# the next unit through them unchanged in kind (and quantized with the same range).
PASS_THROUGH = {"Flatten", "Reshape", "Dropout", "MaxPooling1D", "MaxPooling2D", "AveragePooling2D",
                "GlobalAveragePooling2D", "GlobalMaxPooling2D", "GlobalAveragePooling1D", "ZeroPadding2D"}


@dataclass
class Unit:
    """A conv/dense layer of the Keras model and what is compared of it."""

    name: str  # the conv/dense layer
    kind: str
    key: tuple[int, ...]  # the kernel's dimensions other than 1, sorted
    macs: int
    end: str  # the last layer of its fused chain: its output is the unit's output
    linear_twin: bool = False  # its activation does not fuse: compare the pre-activation output
    upstream: list[str] = field(default_factory=list)  # units whose outputs feed it
    consumers: list[str] = field(default_factory=list)  # units that read its output


@dataclass
class Chain:
    """A conv/fully-connected op of an exported file and the ops fused after it."""

    key: tuple[int, ...]
    nodes: list[str]  # node names (ONNX, OpenVINO) or output tensor names (TFLite), in order
    taps: list  # where its values can be read (format-specific): after the conv, after each fused op
    channels_first: bool  # 4-D conv outputs are NCHW (ONNX, OpenVINO) rather than NHWC (TFLite)
    head: object = None  # the conv/fc node itself (format-specific)
    passes: list[str] = field(default_factory=list)  # pass-through nodes from its end to the next convs

    @property
    def tap(self):
        """The end of the chain."""
        return self.taps[-1]


def float_names(unit: Unit, paired: dict[str, "Chain"]) -> list[str]:
    """What keeping `unit`'s output in float takes in a file: the unit's chain, the reshapes
    and pools after it, and the chains of the units that read it (they must take it in float,
    or they would quantize it again with the same range)."""
    names = []
    for name in [unit.name, *unit.consumers]:
        chain = paired.get(name)
        if chain is not None:
            names += chain.nodes + (chain.passes if name == unit.name else [])
    return list(dict.fromkeys(names))


def _per_channel(shape) -> bool:
    """A bias or a folded BatchNormalization has one value per channel; a scalar constant
    (hard-sigmoid's +3 and ×1/6) is an activation's, which Keras computes in a later layer."""
    return int(np.prod([int(d) for d in shape])) > 1


def kernel_key(shape) -> tuple[int, ...]:
    return tuple(sorted(int(d) for d in shape if int(d) != 1))


# --- the Keras side --------------------------------------------------------------------------

class _Graph:
    """The model's own layer graph. A layer object can belong to several models (strip_pruning
    and clone_model build a new model from the same layers): its node lists then hold nodes of
    each, and only this model's may be followed, or tapped."""

    def __init__(self, model):
        own = getattr(model, "_network_nodes", None)
        self.node: dict[str, int | None] = {}
        self.producers: dict[str, list] = {}
        self.consumers: dict[str, list] = {layer.name: [] for layer in model.layers}
        for layer in model.layers:
            nodes = getattr(layer, "_inbound_nodes", [])
            index = next((i for i in range(len(nodes)) if own is None or f"{layer.name}_ib-{i}" in own), None)
            self.node[layer.name] = index
            inbound = nodes[index].inbound_layers if index is not None else []
            inbound = inbound if isinstance(inbound, list) else [inbound]
            self.producers[layer.name] = [l for l in inbound if type(l).__name__ != "InputLayer"]
            for producer in self.producers[layer.name]:
                self.consumers.setdefault(producer.name, []).append(layer)

    def output(self, layer):
        return layer.get_output_at(self.node[layer.name] or 0)

    def input(self, layer):
        return layer.get_input_at(self.node[layer.name] or 0)


def keras_units(keras_model) -> list[Unit]:
    """The top-level conv/dense layers in order, with their fused chains and neighbours."""
    from edgekit.intake.model import count_macs

    graph = _Graph(keras_model)
    units, end_of = [], {}
    for layer in keras_model.layers:
        kind = type(layer).__name__
        if kind not in MAC_LAYERS:
            continue
        kernel = getattr(layer, "depthwise_kernel", None) if kind == "DepthwiseConv2D" else getattr(layer, "kernel", None)
        if kernel is None:
            continue
        unit = Unit(layer.name, kind, kernel_key(kernel.shape), _layer_macs(layer, count_macs), layer.name)
        if _activation(layer) in RELU_FAMILY:
            unit.end = _chain_end(layer, graph).name
        else:
            unit.linear_twin = True
        end_of[unit.end] = unit
        units.append(unit)
    by_name = {u.name: u for u in units}
    inside = {l.name for u in units for l in _chain_layers(keras_model, u, graph)}  # a chain's BN/ReLU layers
    producers, consumers = (lambda l: graph.producers[l.name]), (lambda l: graph.consumers[l.name])
    for unit in units:
        start = keras_model.get_layer(unit.name)
        # upstream: the nearest units on every path back, through adds, concatenations, pools, …
        unit.upstream = [end_of[l.name].name for l in _reach(start, producers, lambda l: l.name not in inside)
                         if l.name in end_of]
        # readers: only through layers that pass values on unchanged (see float_names)
        unit.consumers = [l.name for l in _reach(keras_model.get_layer(unit.end), consumers,
                                                 lambda l: type(l).__name__ in PASS_THROUGH) if l.name in by_name]
    return units


def _chain_layers(keras_model, unit: Unit, graph: _Graph) -> list:
    layers, current = [keras_model.get_layer(unit.name)], keras_model.get_layer(unit.name)
    while current.name != unit.end:
        current = graph.consumers[current.name][0]
        layers.append(current)
    return layers


def _layer_macs(layer, count_macs) -> int:
    class _One:  # count_macs walks .layers: give it just this one
        layers = [layer]
    return count_macs(_One)


def _activation(layer) -> str | None:
    kind = type(layer).__name__
    if kind == "ReLU":
        return "relu"
    if kind == "BatchNormalization":
        return "linear"
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) if activation is not None else None


def _chain_end(layer, graph: _Graph):
    """Follow single-consumer BatchNormalization / ReLU-family layers after `layer`."""
    current = layer
    while True:
        after = graph.consumers[current.name]
        if len(after) != 1 or len(graph.producers[after[0].name]) != 1:
            return current
        nxt = after[0]
        if type(nxt).__name__ not in ("BatchNormalization", "ReLU", "Activation") or _activation(nxt) not in RELU_FAMILY:
            return current
        current = nxt


def _reach(layer, step, through) -> list:
    """The layers one `step` away, looking through the layers `through` accepts."""
    found, frontier, seen = [], step(layer), set()
    while frontier:
        nxt = frontier.pop(0)
        if id(nxt) in seen:
            continue
        seen.add(id(nxt))
        if through(nxt):
            frontier += step(nxt)
        else:
            found.append(nxt)
    return found


def keras_tap_model(keras_model, units: list[Unit]):
    """A model with one output per unit: the end of its chain, or the pre-activation output
    of a layer whose activation does not fuse (a linear twin sharing its weights)."""
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    graph = _Graph(keras_model)
    outputs = []
    for unit in units:
        layer = keras_model.get_layer(unit.end)
        if unit.linear_twin:
            twin = type(layer).from_config({**layer.get_config(), "activation": "linear", "name": f"{layer.name}__linear"})
            tensor = twin(graph.input(layer))
            twin.set_weights(layer.get_weights())
            outputs.append(tensor)
        else:
            outputs.append(graph.output(layer))
    return keras.Model(keras_model.inputs, outputs)


# --- the file side ---------------------------------------------------------------------------

def file_chains(path, fmt: str) -> list[Chain]:
    reader = {"tflite": _tflite_chains, "onnx": _onnx_chains, "openvino": _openvino_chains}[fmt]
    return reader(path)


def match(units: list[Unit], chains: list[Chain]) -> dict[str, Chain]:
    """Pair each unit with the first unpaired chain of the same kernel key, in order."""
    paired, used = {}, set()
    for unit in units:
        for i, chain in enumerate(chains):
            if i not in used and chain.key == unit.key:
                paired[unit.name] = chain
                used.add(i)
                break
    return paired


RESHAPES = {"RESHAPE", "Reshape", "Squeeze", "Unsqueeze"}
QUANTIZERS = {"QUANTIZE", "DEQUANTIZE", "QuantizeLinear", "DequantizeLinear", "FakeQuantize"}


def _follow(start_tensor, consumers_of, fusable) -> tuple[list, list]:
    """From a conv/fc output, follow single-consumer fusable nodes; return them and the taps:
    the conv output and the output of each fused op after it. A quantize/dequantize (or a
    reshape) does not compute a new value: it moves the last tap to its output, so a tap of an
    int8 file holds the value as quantized, and depth k means the same op in every file of a
    format. A reshape is crossed only when a fusable node follows it: tf2onnx puts one between
    a conv and its BatchNormalization where the spatial size is 1×1."""
    nodes, taps, tensor = [], [start_tensor], start_tensor
    while True:
        after = consumers_of(tensor)
        if len(after) != 1:
            return nodes, taps
        node = after[0]
        if node["op"] in RESHAPES:
            beyond = consumers_of(node_output(node))
            if len(beyond) != 1 or not fusable(beyond[0]):
                return nodes, taps
        elif not fusable(node):
            return nodes, taps
        nodes.append(node)
        tensor = node_output(node)
        if node["op"] in QUANTIZERS or node["op"] in RESHAPES:
            taps[-1] = tensor
        else:
            taps.append(tensor)


def node_output(node):
    return node["out"]


def _passes(end, consumers_of, passable, name_of, limit: int = 8) -> list[str]:
    """Pass-through nodes reachable from a chain's end before the next conv/fc."""
    found, frontier = [], list(consumers_of(end))
    while frontier and len(found) < limit:
        node = frontier.pop(0)
        if passable(node) and name_of(node) not in found:
            found.append(name_of(node))
            frontier += consumers_of(node_output(node))
    return found


# TFLite ----------------------------------------------------------------------------------

TFLITE_MAC_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_3D", "TRANSPOSE_CONV"}
TFLITE_UNARY = {"RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "QUANTIZE", "DEQUANTIZE"}
TFLITE_WITH_CONSTANT = {"ADD", "MUL", "SUB"}
TFLITE_PASS = {"RESHAPE", "TRANSPOSE", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN", "SQUEEZE", "PAD", "QUANTIZE",
               "DEQUANTIZE"}


def _tflite_chains(path) -> list[Chain]:
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
    readers = _consumer_index(nodes)

    def fusable(node) -> bool:
        if node["op"] in TFLITE_UNARY:
            return True
        return node["op"] in TFLITE_WITH_CONSTANT and any(
            constant(t) and _per_channel(tensors[t]["shape"]) for t in node["ins"])

    chains = []
    for node in nodes:
        if node["op"] not in TFLITE_MAC_OPS:
            continue
        weights = node["ins"][1]
        if not constant(weights):
            continue
        followed, taps = _follow(node["out"], readers, fusable)
        name_of = lambda n: tensors[n["out"]]["name"]  # noqa: E731 - denylisted_nodes takes output names
        passes = _passes(taps[-1], readers, lambda n: n["op"] in TFLITE_PASS, name_of)
        chains.append(Chain(kernel_key(tensors[weights]["shape"]), [name_of(n) for n in [node, *followed]], taps,
                            channels_first=False, head=node, passes=passes))
    return chains


def _consumer_index(nodes: list[dict]):
    readers: dict = {}
    for node in nodes:
        for t in node["ins"]:
            readers.setdefault(t, []).append(node)
    return lambda tensor: readers.get(tensor, [])


# ONNX ------------------------------------------------------------------------------------

ONNX_MAC_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
ONNX_UNARY = {"Relu", "Clip", "QuantizeLinear", "DequantizeLinear"}
ONNX_WITH_CONSTANT = {"Add", "Mul", "Sub", "Div", "BatchNormalization"}
ONNX_PASS = {"Reshape", "Transpose", "Flatten", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
             "Squeeze", "Unsqueeze", "Identity", "Pad", "ReduceMean", "QuantizeLinear", "DequantizeLinear"}


def _onnx_chains(path_or_model) -> list[Chain]:
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
    readers = _consumer_index(nodes)

    def fusable(node) -> bool:
        if node["op"] in ONNX_UNARY:
            return True
        operands = node["ins"][1:]
        return (node["op"] in ONNX_WITH_CONSTANT and all(t in constants for t in operands)
                and any(_per_channel(shapes.get(t) or [2]) for t in operands))

    chains = []
    for node in nodes:
        if node["op"] not in ONNX_MAC_OPS or len(node["ins"]) < 2 or node["ins"][1] not in constants:
            continue
        if shapes.get(node["ins"][1]) is None:
            continue
        followed, taps = _follow(node["out"], readers, fusable)
        passes = _passes(taps[-1], readers, lambda n: n["op"] in ONNX_PASS, lambda n: n["name"])
        chains.append(Chain(kernel_key(shapes[node["ins"][1]]), [n["name"] for n in [node, *followed]], taps,
                            channels_first=True, head=node, passes=passes))
    return chains


# OpenVINO --------------------------------------------------------------------------------

OPENVINO_MAC_OPS = {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData",
                    "MatMul"}
OPENVINO_UNARY = {"Relu", "Clamp", "FakeQuantize"}
OPENVINO_WITH_CONSTANT = {"Add", "Multiply", "Subtract"}


def _openvino_chains(path_or_model) -> list[Chain]:
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
            is_constant(i) and i.get_partial_shape().is_static and _per_channel(i.get_partial_shape().to_shape())
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
        followed, taps = _follow(op.output(0), readers, fusable)
        chains.append(Chain(kernel_key(shape), [op.get_friendly_name()] +
                            [n["node"].get_friendly_name() for n in followed], taps, channels_first=True, head=op))
    return chains


def to_keras_layout(value: np.ndarray, shape: tuple, channels_first: bool) -> np.ndarray | None:
    """The file's value in the Keras layer's layout, or None when it cannot be. A 4-D value
    already of the Keras shape is taken as it is, unless its height, width and channels are
    all equal and the format's convs are channels-first; an NCHW value is transposed."""
    value = np.asarray(value)
    nhwc = value.ndim == 4 and tuple(value.shape) == tuple(shape)
    if value.ndim == 4 and (not nhwc or (channels_first and len(set(value.shape[1:])) == 1)):
        moved = np.transpose(value, (0, 2, 3, 1))
        if tuple(moved.shape) == tuple(shape):
            return moved
    if tuple(value.shape) == tuple(shape):
        return value
    if value.size != int(np.prod(shape)):
        return None
    # (N, 1, 1, C) held as (N, C, 1, 1) or (N, C); a dense layer on a 4-D input flattened to
    # (N·H·W, C) by LiteRT's FULLY_CONNECTED, rows still in NHWC order
    flattened = not channels_first and value.ndim == 2 and value.shape[-1] == shape[-1]
    return value.reshape(shape) if _one_by_one(shape) or flattened else None


def _one_by_one(shape) -> bool:
    """Shapes that differ only by unit dimensions hold their values in the same order."""
    return sum(int(d) > 1 for d in shape[1:]) <= 1
