"""The work a network does, layer by layer and by kind of layer: what a per-layer latency model
costs (issue 25). Dense and depthwise convolutions reach very different fractions of a device's
peak, so MACs are counted per kind, and the bytes each layer reads and writes are counted too:
a depthwise or elementwise layer is bound by memory, not arithmetic.

Kinds:
    conv       a k×k convolution over all input channels (k > 1)
    pointwise  a 1×1 convolution
    depthwise  one filter per channel (DepthwiseConv2D, or a grouped conv with groups = channels)
    dense      a fully-connected layer
    other      no MACs: pooling, Add, Multiply, Concatenate, padding, resizing, standalone activations

BatchNormalization and an activation that follows a conv/dense (or that BatchNorm) are folded or
fused into it by every converter, so they add no layer of their own here; reshapes are free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("conv", "pointwise", "depthwise", "dense", "other")
FREE = {"InputLayer", "Dropout", "SpatialDropout2D", "Flatten", "Reshape", "Permute", "Identity"}
FUSED_AFTER = {"Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense", "BatchNormalization"}
ACTIVATIONS = {"Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax"}


@dataclass(frozen=True)
class LayerWork:
    name: str
    kind: str  # one of KINDS
    macs: int
    weights: int  # parameter elements
    activations: int  # input + output elements: what the layer reads and writes besides its weights
    group: str = ""  # of an "other" layer read from a file: elementwise | activation | pool | move (edgekit.formats.facts)


@dataclass(frozen=True)
class NetworkWork:
    """Totals per kind of a network's layers (what the latency model is fitted on)."""

    layers: tuple[LayerWork, ...]

    def macs(self, kind: str) -> int:
        return sum(layer.macs for layer in self.layers if layer.kind == kind)

    def count(self, kind: str | None = None) -> int:
        return sum(1 for layer in self.layers if kind is None or layer.kind == kind)

    @property
    def weights(self) -> int:
        return sum(layer.weights for layer in self.layers)

    @property
    def activations(self) -> int:
        return sum(layer.activations for layer in self.layers)

    def summary(self) -> dict:
        return {"macs": {kind: self.macs(kind) for kind in KINDS}, "layers": {kind: self.count(kind) for kind in KINDS},
                "weights": self.weights, "activations": self.activations}


def keras_network_work(model) -> NetworkWork:
    """Layer work of a Keras (tf_keras or Keras 3) functional model, batch 1."""
    layers = []
    for layer in model.layers:
        layers.extend(_keras_layer_work(layer))
    return NetworkWork(tuple(layers))


def _keras_layer_work(layer) -> list[LayerWork]:
    kind = type(layer).__name__
    if kind in FREE or kind == "BatchNormalization" or (kind in ACTIVATIONS and _follows(layer, FUSED_AFTER)):
        return []
    inputs, output = _elements(_shapes(layer, "input")), _elements(_shapes(layer, "output"))
    weights = int(sum(np.prod(w.shape) for w in layer.weights))
    out_shape = _shapes(layer, "output")[0]
    if kind == "SeparableConv2D":
        kh, kw = layer.kernel_size
        cin = int(_shapes(layer, "input")[0][-1]) * layer.depth_multiplier
        spatial = int(np.prod(out_shape[1:-1]))
        depthwise = LayerWork(f"{layer.name}/depthwise", "depthwise", spatial * cin * kh * kw, kh * kw * cin,
                              inputs + spatial * cin)
        pointwise = LayerWork(f"{layer.name}/pointwise", "pointwise", output * cin, weights - kh * kw * cin,
                              spatial * cin + output)
        return [depthwise, pointwise]
    if kind == "DepthwiseConv2D":
        kh, kw = layer.kernel_size
        return [LayerWork(layer.name, "depthwise", output * kh * kw, weights, inputs + output)]
    if kind == "Conv2D":
        kh, kw = layer.kernel_size
        cin = int(_shapes(layer, "input")[0][-1])
        groups = getattr(layer, "groups", 1) or 1
        conv_kind = "depthwise" if groups > 1 and groups == cin else "pointwise" if (kh, kw) == (1, 1) else "conv"
        return [LayerWork(layer.name, conv_kind, output * kh * kw * cin // groups, weights, inputs + output)]
    if kind == "Dense":
        cin = int(_shapes(layer, "input")[0][-1])
        return [LayerWork(layer.name, "dense", output * cin, weights, inputs + output)]
    return [LayerWork(layer.name, "other", 0, weights, inputs + output)]


def _follows(layer, kinds: set[str]) -> bool:
    """Whether the layer's single input comes straight from a layer of one of `kinds`."""
    nodes = getattr(layer, "_inbound_nodes", None) or []
    if len(nodes) != 1:
        return False
    inbound = nodes[0].inbound_layers
    inbound = inbound if isinstance(inbound, (list, tuple)) else [inbound]
    return len(inbound) == 1 and type(inbound[0]).__name__ in kinds


def _shapes(layer, side: str) -> list[tuple]:
    """The layer's input or output shapes as a list of tuples (tf_keras and Keras 3)."""
    try:
        value = getattr(layer, f"{side}_shape")
    except (AttributeError, RuntimeError):
        tensors = getattr(layer, side)
        value = [tuple(t.shape) for t in tensors] if isinstance(tensors, (list, tuple)) else tuple(tensors.shape)
    if isinstance(value, list):
        return [tuple(v) for v in value]
    return [tuple(value)]


def _elements(shapes: list[tuple]) -> int:
    return int(sum(np.prod([d or 1 for d in shape[1:]]) for shape in shapes))


def file_network_work(facts) -> NetworkWork:
    """Layer work of an exported file, from what its format's reader found
    (edgekit.formats.facts.ArtifactFacts: mac_ops and other_ops)."""
    layers = [LayerWork(op.name, op.kind, op.macs, op.weights, op.activations) for op in facts.mac_ops]
    layers += [LayerWork(op.name, "other", 0, 0, op.activations, op.group) for op in facts.other_ops]
    return NetworkWork(tuple(layers))
