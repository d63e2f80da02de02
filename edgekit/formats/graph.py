"""The layer graph's two sides, as every format package reads them: a *unit* is one conv/dense
layer of the Keras model with what is fused after it (edgekit.quality.layer_graph builds them);
a *chain* is one conv/fully-connected op of an exported file with the ops fused after it (each
format's chains.py finds them); units and chains are paired by kernel shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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


def per_channel(shape) -> bool:
    """A bias or a folded BatchNormalization has one value per channel; a scalar constant
    (hard-sigmoid's +3 and ×1/6) is an activation's, which Keras computes in a later layer."""
    return int(np.prod([int(d) for d in shape])) > 1


def kernel_key(shape) -> tuple[int, ...]:
    return tuple(sorted(int(d) for d in shape if int(d) != 1))



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


def follow(start_tensor, consumers_of, fusable) -> tuple[list, list]:
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


def passes_after(end, consumers_of, passable, name_of, limit: int = 8) -> list[str]:
    """Pass-through nodes reachable from a chain's end before the next conv/fc."""
    found, frontier = [], list(consumers_of(end))
    while frontier and len(found) < limit:
        node = frontier.pop(0)
        if passable(node) and name_of(node) not in found:
            found.append(name_of(node))
            frontier += consumers_of(node_output(node))
    return found


def consumer_index(nodes: list[dict]):
    readers: dict = {}
    for node in nodes:
        for t in node["ins"]:
            readers.setdefault(t, []).append(node)
    return lambda tensor: readers.get(tensor, [])
