"""Which channels of each group go: importance scores, per-group ratios, and the search for the
ratios that meet a MACs or latency target.

Importance of a channel of a group: the sum over the group's producers of that channel's score
in each, each producer's scores divided by their mean first so that a wide-valued layer does not
outvote the rest. Scores: the L1 or L2 norm of the channel's filter, or (`bn`) the |γ| of the
BatchNorm right after the producer (its output's scale; the filter's L2 norm where no BatchNorm
follows).
"""

from __future__ import annotations

import math

import numpy as np

from edgekit.compression.channels.graph import ChannelGraph, Group
from edgekit.compression.channels.rebuild import Keep

MAX_RATIO = 0.9  # a group keeps at least a tenth of its channels (and at least one)


def importance(graph: ChannelGraph, group: Group, how: str) -> np.ndarray:
    layers = {layer.name: layer for layer in graph.model.layers}
    consumers = _consumers(graph)
    total = np.zeros(group.size)
    for name in group.producers:
        scores = _scores(layers[name], [layers[c] for c in consumers.get(name, [])], how)
        mean = float(np.mean(scores))
        total += scores / mean if mean > 0 else scores
    return total


def _consumers(graph: ChannelGraph) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, sources in graph.inputs.items():
        for source in sources:
            out.setdefault(source, []).append(name)
    return out


def _scores(layer, consumers: list, how: str) -> np.ndarray:
    if how == "bn" and len(consumers) == 1 and type(consumers[0]).__name__ == "BatchNormalization" \
            and consumers[0].scale:
        return np.abs(consumers[0].get_weights()[0]).astype(np.float64)
    weights = layer.get_weights()
    kernel = weights[1] if type(layer).__name__.startswith("Separable") else weights[0]
    flat = kernel.reshape(-1, kernel.shape[-1]).astype(np.float64)
    return np.abs(flat).sum(axis=0) if how == "l1" else np.sqrt((flat ** 2).sum(axis=0))


def keep_count(size: int, ratio: float, multiple: int) -> int:
    """Channels a group of `size` keeps when it loses `ratio` of them: rounded to a multiple of
    `multiple` (SIMD-friendly widths) where the group is at least twice that wide."""
    ratio = min(max(ratio, 0.0), MAX_RATIO)
    want = size * (1 - ratio)
    step = multiple if size >= 2 * multiple else 1
    count = max(step, int(round(want / step)) * step)
    return int(min(size, max(1, count, math.ceil(size * (1 - MAX_RATIO)))))


def plan(graph: ChannelGraph, ratios: dict[int, float], how: str, multiple: int,
         scores: dict[int, np.ndarray] | None = None) -> Keep:
    """Kept channel indices per group that loses any (the most important ones, in order)."""
    keep = {}
    for group in graph.prunable():
        count = keep_count(group.size, ratios.get(group.id, 0.0), multiple)
        if count < group.size:
            score = scores[group.id] if scores else importance(graph, group, how)
            keep[group.id] = np.sort(np.argsort(-score, kind="stable")[:count])
    return keep


def all_scores(graph: ChannelGraph, how: str) -> dict[int, np.ndarray]:
    return {g.id: importance(graph, g, how) for g in graph.prunable()}


def macs_of_plan(graph: ChannelGraph, keep: Keep) -> int:
    """MACs per inference (batch 1) of the model with only the kept channels, from the original's
    layer shapes: each conv/dense/depthwise layer's MACs scale with its kept input and output
    channels."""
    from edgekit.intake.model import layer_macs

    total = 0
    for layer in graph.model.layers:
        macs = layer_macs(layer)
        if not macs:
            continue
        into, out = graph.kept_indices(layer.name, keep, "input"), graph.kept_indices(layer.name, keep)
        in_all, out_all = int(layer.input.shape[-1]), int(layer.output.shape[-1])
        kind = type(layer).__name__
        if kind.startswith("Depthwise"):
            total += macs * (len(out) / out_all if out is not None else 1.0)
        elif kind.startswith("Separable"):
            kh_kw = int(np.prod(layer.kernel_size))
            depth = len(into) if into is not None else in_all
            width = len(out) if out is not None else out_all
            total += macs * (depth * kh_kw + depth * width) / (in_all * kh_kw + in_all * out_all)
        else:
            total += macs * (len(into) / in_all if into is not None else 1.0) * (len(out) / out_all if out is not None else 1.0)
    return int(round(total))


def weighted_ratios(groups: list[Group], drops: dict[int, float] | None, ratio: float) -> dict[int, float]:
    """Per-group ratios around `ratio`: with a sensitivity pass, the groups whose trial removal
    cost least top-1 lose up to 1.5× the ratio and the costliest 0.5× (by rank); without, all
    lose `ratio`."""
    if not drops:
        return {g.id: ratio for g in groups}
    order = sorted(groups, key=lambda g: (drops[g.id], g.id))
    n = max(1, len(order) - 1)
    return {g.id: min(MAX_RATIO, ratio * (1.5 - i / n)) for i, g in enumerate(order)}


def search_ratio(meets, low: float = 0.0, high: float = MAX_RATIO / 0.5, steps: int = 12) -> float | None:
    """The smallest base ratio in [low, high] for which `meets(ratio)` holds (it holds for every
    larger one), by bisection; None when not even `high` meets it."""
    if not meets(high):
        return None
    for _ in range(steps):
        middle = (low + high) / 2
        if meets(middle):
            high = middle
        else:
            low = middle
    return high
