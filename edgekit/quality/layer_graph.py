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

import numpy as np

from edgekit.formats.graph import Chain, Unit, kernel_key

MAC_LAYERS = {"Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "Dense", "Conv2DTranspose"}
RELU_FAMILY = {"relu", "relu6", "linear"}
# Layers that move or subsample values without computing new ones: a unit's output reaches
# the next unit through them unchanged in kind (and quantized with the same range).
PASS_THROUGH = {"Flatten", "Reshape", "Dropout", "MaxPooling1D", "MaxPooling2D", "AveragePooling2D",
                "GlobalAveragePooling2D", "GlobalMaxPooling2D", "GlobalAveragePooling1D", "ZeroPadding2D"}


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
    from edgekit.intake.model import layer_macs

    graph = _Graph(keras_model)
    units, end_of = [], {}
    for layer in keras_model.layers:
        kind = type(layer).__name__
        if kind not in MAC_LAYERS:
            continue
        kernel = getattr(layer, "depthwise_kernel", None) if kind == "DepthwiseConv2D" else getattr(layer, "kernel", None)
        if kernel is None:
            continue
        unit = Unit(layer.name, kind, kernel_key(kernel.shape), layer_macs(layer), layer.name)
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

def file_chains(path_or_graph, fmt: str) -> list[Chain]:
    from edgekit.formats import get_format

    return get_format(fmt).part("chains")(path_or_graph)


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
