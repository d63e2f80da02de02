"""Which output channels of a tf_keras model can be removed together: the dependency groups.

Every tensor's last axis is a list of segments, each a run of channels of one *space*. A conv or
dense layer makes a new space (its output channels); layers that keep channels apart pass their
input's segments on (BatchNorm, activations, pooling, padding, a depthwise conv, whose channels
follow its input); a Concatenate on the channel axis joins its inputs' segments; Add, Multiply
and the other merges tie their inputs' spaces into one (a residual block, a squeeze-excite
gate: removing channel 5 of one means removing it from all). Spaces tied together form a group,
and a group's channels are removed from every producer at once, and from every consumer's input.

A group is left alone, with the reason, when anything touches it that could not follow a
removal: the model's input or output, a layer that mixes channels in a way this module does not
slice (a Reshape that moves the channel axis, a softmax over the
channels, LayerNormalization, a Lambda or a TF op other than arithmetic with a number, a grouped
convolution, a shared layer), or a merge whose inputs are laid out differently. A Flatten over a
spatial map repeats its input's segments once per position, so the Dense after it loses the
removed channels' rows at every position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Conv/dense layers whose output channels are a new space that can lose channels; their input
# channels are sliced to what the input's spaces keep.
PRODUCERS = {"Conv1D", "Conv2D", "Conv3D", "Dense", "SeparableConv1D", "SeparableConv2D"}
# Per-channel layers: output channel i depends only on input channel i.
PASS_THROUGH = {
    "BatchNormalization", "DepthwiseConv2D", "DepthwiseConv1D",
    "Activation", "ReLU", "LeakyReLU", "ELU", "ThresholdedReLU", "PReLU",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization", "Identity",
    "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
    "ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D", "UpSampling1D", "UpSampling2D", "Resizing",
}
MERGES = {"Add", "Subtract", "Multiply", "Maximum", "Minimum", "Average"}
CHANNEL_MIXING_ACTIVATIONS = {"softmax", "log_softmax"}
# Elementwise TF ops a tf_keras model records as TFOpLambda layers: with one tensor and Python
# numbers they are per-channel (MobileNetV3's hard sigmoid: relu6(x + 3.0) * (1 / 6)); with two
# tensors they tie them as a merge does (RegNet's residual `x + y`)
ELEMENTWISE_OPS = {"__operators__.add", "math.add", "math.subtract", "math.multiply", "math.truediv", "math.divide",
                   "math.maximum", "math.minimum", "nn.relu", "nn.relu6", "math.sigmoid", "math.tanh", "nn.silu",
                   "nn.swish"}


@dataclass
class Space:
    size: int
    producers: list[str] = field(default_factory=list)
    pinned: str | None = None  # why its channels must all stay


@dataclass
class Group:
    """Spaces tied together: one set of channel indices, removed from all of them at once."""

    id: int
    size: int
    producers: list[str]  # the conv/dense layers whose output channels these are
    pinned: str | None  # why nothing is removed here (None: prunable)


@dataclass
class ChannelGraph:
    model: object
    segments: dict[str, list[tuple[int, int]]]  # layer name → its output's (space id, size) segments
    inputs: dict[str, list[str]]  # layer name → the names of the layers its inputs come from
    groups: dict[int, Group]  # by root space id
    root: dict[int, int]  # space id → its group's id

    def prunable(self) -> list[Group]:
        return [g for g in self.groups.values() if g.pinned is None and g.producers and g.size > 1]

    def left_alone(self) -> dict[str, str]:
        """Conv/dense layers whose output channels all stay, and why."""
        return {name: g.pinned for g in self.groups.values() if g.pinned for name in g.producers}

    def kept_indices(self, layer: str, keep: dict[int, np.ndarray], side: str = "output") -> np.ndarray | None:
        """Indices into the channel axis of `layer`'s output (or its first input) that stay when each
        group id in `keep` keeps those indices; None when all stay."""
        if side == "input":
            sources = self.inputs.get(layer) or []
            if not sources:
                return None
            layer = sources[0]
        parts, offset, changed = [], 0, False
        for space, size in self.segments[layer]:
            kept = keep.get(self.root[space])
            if kept is None:
                kept = np.arange(size)
            else:
                changed = True
            parts.append(offset + np.asarray(kept, dtype=np.int64))
            offset += size
        return np.concatenate(parts) if changed else None


class _Builder:
    def __init__(self):
        self.spaces: list[Space] = []
        self.parent: list[int] = []

    def new(self, size: int, producer: str | None = None, pinned: str | None = None) -> int:
        self.spaces.append(Space(int(size), [producer] if producer else [], pinned))
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a

    def pin(self, segments, why: str) -> None:
        for space, _ in segments:
            self.spaces[space].pinned = self.spaces[space].pinned or why

    def groups(self) -> tuple[dict[int, Group], dict[int, int]]:
        root = {i: self.find(i) for i in range(len(self.spaces))}
        groups: dict[int, Group] = {}
        for i, space in enumerate(self.spaces):
            g = groups.setdefault(root[i], Group(root[i], space.size, [], None))
            g.producers.extend(space.producers)
            g.pinned = g.pinned or space.pinned
        return groups, root


def channel_graph(model) -> ChannelGraph:
    """The dependency groups of a tf_keras model (Functional or Sequential, built)."""
    b = _Builder()
    segments: dict[str, list[tuple[int, int]]] = {}
    inputs: dict[str, list[str]] = {}
    producer_of = {}  # id(output tensor) → layer name
    for i, tensor in enumerate(_as_list(model.inputs)):  # a Sequential lists no InputLayer among its layers
        name = f"<input {i}>"
        producer_of[id(tensor)], inputs[name] = name, []
        channels = int(tensor.shape[-1] or 0)
        segments[name] = [(b.new(channels, pinned="the model's input"), channels)]
    for layer in model.layers:
        sources = _sources(layer, producer_of)
        inputs[layer.name] = sources
        segments[layer.name] = _layer_segments(b, layer, [segments[s] for s in sources], sources)
        for tensor in _as_list(_output(layer)):
            producer_of[id(tensor)] = layer.name
    for tensor in _as_list(model.outputs):
        name = producer_of.get(id(tensor))
        if name is not None:
            b.pin(segments[name], "feeds the model's output")
    groups, root = b.groups()
    return ChannelGraph(model, segments, inputs, groups, root)


def _sources(layer, producer_of: dict) -> list[str]:
    if type(layer).__name__ == "InputLayer":
        return []
    nodes = getattr(layer, "_inbound_nodes", [])
    try:  # every tensor the call took: a TF op's second operand is a keyword argument, not layer.input
        tensors = list(nodes[0].keras_inputs) if nodes else _as_list(layer.input)
    except (AttributeError, ValueError):
        return []
    return [producer_of[id(t)] for t in tensors if id(t) in producer_of]


def _output(layer):
    try:
        return layer.output
    except (AttributeError, ValueError):
        return []


def _as_list(x) -> list:
    if isinstance(x, dict):
        return list(x.values())
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _channels(layer) -> int:
    shape = _output(layer).shape
    return int(shape[-1]) if shape.rank and shape[-1] is not None else 0


def _layer_segments(b: _Builder, layer, ins: list, sources: list[str]) -> list[tuple[int, int]]:
    """The layer's output segments; pins whatever the layer cannot follow."""
    kind, name = type(layer).__name__, layer.name
    if kind == "InputLayer":
        return [(b.new(_channels(layer), pinned="the model's input"), _channels(layer))]
    if isinstance(_output(layer), (list, tuple, dict)) or not ins:
        why = f"{name} ({kind}) has several outputs or no input"
        for segs in ins:
            b.pin(segs, why)
        return [(b.new(0, pinned=why), 0)]
    problem = _unsupported(layer, kind, ins)
    if problem:
        why = f"{name} ({kind}): {problem}"
        for segs in ins:
            b.pin(segs, why)
        producer = name if kind in PRODUCERS else None  # named among the layers left alone
        return [(b.new(_channels(layer), producer=producer, pinned=why), _channels(layer))]
    if kind in PRODUCERS:
        if _activation(layer) in CHANNEL_MIXING_ACTIVATIONS:
            space = b.new(_channels(layer), producer=name, pinned="its softmax activation mixes its channels")
        else:
            space = b.new(_channels(layer), producer=name)
        return [(space, _channels(layer))]
    if kind in MERGES or (kind == "TFOpLambda" and len(ins) > 1):
        return _merged(b, name, kind, ins)
    if kind == "Concatenate":
        return [seg for segs in ins for seg in segs]
    if kind == "Flatten":  # position by position, each with every channel: the input's segments repeated
        return list(ins[0]) * _spatial(layer.input.shape)
    return list(ins[0])  # per-channel layers, and reshapes that keep the channel axis


def _unsupported(layer, kind: str, ins: list) -> str | None:
    """Why this layer cannot follow a removal of its input channels (None: it can)."""
    if len(getattr(layer, "_inbound_nodes", [])) > 1:
        return "a layer used more than once"
    rank = _output(layer).shape.rank
    if kind in PRODUCERS:
        if getattr(layer, "groups", 1) != 1:
            return "a grouped convolution (its input and output channels are tied group by group)"
        if getattr(layer, "depth_multiplier", 1) != 1:
            return "a depth multiplier above 1"
        return _channels_last(layer)
    if kind in ("DepthwiseConv2D", "DepthwiseConv1D"):
        return "a depth multiplier above 1" if layer.depth_multiplier != 1 else _channels_last(layer)
    if kind == "BatchNormalization":
        axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        return None if [a % rank for a in axis] == [rank - 1] else "normalizes over an axis other than the channels"
    if kind in ("Activation",) and _activation(layer) in CHANNEL_MIXING_ACTIVATIONS:
        return "a softmax over the channels"
    if kind in PASS_THROUGH:
        return _channels_last(layer)
    if kind in MERGES:
        return None
    if kind == "Concatenate":
        return None if layer.axis % rank == rank - 1 else "concatenates along an axis other than the channels"
    if kind == "Reshape":
        in_shape = layer.input.shape
        return None if in_shape[-1] == _output(layer).shape[-1] and _spatial(in_shape) == _spatial(_output(layer).shape) \
            else "moves channels to another axis"
    if kind == "TFOpLambda":
        return None if _elementwise_op(layer) else "a TF op the channel pruner does not slice"
    if kind == "Flatten":
        if _channels_last(layer) or not _spatial(layer.input.shape):
            return "flattens channels-first or unknown-size data"
        return None
    return "a layer the channel pruner does not slice"


def _elementwise_op(layer) -> bool:
    """An elementwise TF op whose operands are tensors and Python numbers."""
    nodes = getattr(layer, "_inbound_nodes", [])
    if layer.get_config().get("function") not in ELEMENTWISE_OPS or len(nodes) != 1:
        return False
    args = [*nodes[0].call_args, *nodes[0].call_kwargs.values()]
    others = [a for a in args if not hasattr(a, "shape") and a is not None and not isinstance(a, str)]
    return all(isinstance(a, (int, float)) for a in others)


def _spatial(shape) -> int:
    size = 1
    for d in list(shape)[1:-1]:
        size *= int(d or 0)
    return size


def _channels_last(layer) -> str | None:
    fmt = getattr(layer, "data_format", None)
    return "channels-first data" if fmt == "channels_first" else None


def _activation(layer) -> str | None:
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", act if isinstance(act, str) else None)


def _merged(b: _Builder, name: str, kind: str, ins: list) -> list[tuple[int, int]]:
    layouts = [[size for _, size in segs] for segs in ins]
    if any(layout != layouts[0] for layout in layouts):
        why = f"{name} ({kind}): its inputs' channels are laid out differently (a broadcast or a concatenation)"
        for segs in ins:
            b.pin(segs, why)
        return [(b.new(sum(layouts[0]), pinned=why), sum(layouts[0]))]
    for segs in ins[1:]:
        for (a, _), (c, _) in zip(ins[0], segs):
            b.union(a, c)
    return list(ins[0])
