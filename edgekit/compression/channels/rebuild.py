"""A smaller tf_keras model with some channels removed, and the same removal as a mask.

`rebuild` clones the model with fewer filters/units in the producers of each pruned group and
copies the kept slices of every weight. `masked` zeroes, in place, the input weights through
which every conv/dense layer reads the removed channels: the original model then computes
exactly what the rebuilt one does (a per-channel layer's removed channels reach nothing else),
which makes it the cheap way to try a removal (the sensitivity pass) and the check that a
rebuild is right.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from edgekit.compression.channels.graph import PRODUCERS, ChannelGraph
from edgekit.support.keras_compat import tf_keras

Keep = dict  # group id → sorted kept channel indices


def rebuild(graph: ChannelGraph, keep: Keep):
    """The model with only the kept channels, weights sliced from the original."""
    keras = tf_keras()
    model = graph.model

    def clone(layer):
        config = layer.get_config()
        out = graph.kept_indices(layer.name, keep)
        if type(layer).__name__ in PRODUCERS and out is not None:
            config["units" if "units" in config else "filters"] = int(len(out))
        if type(layer).__name__ == "Reshape" and out is not None:  # it keeps the channel axis last (graph.py)
            config["target_shape"] = (*config["target_shape"][:-1], int(len(out)))
        return type(layer).from_config(config)

    smaller = keras.models.clone_model(model, clone_function=clone)
    by_name = {layer.name: layer for layer in smaller.layers}
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            by_name[layer.name].set_weights(sliced_weights(layer, weights, graph.kept_indices(layer.name, keep, "input"),
                                                           graph.kept_indices(layer.name, keep)))
    return smaller


def sliced_weights(layer, weights: list, into: np.ndarray | None, out: np.ndarray | None) -> list:
    """The layer's weights with only the kept input (`into`) and output (`out`) channels."""
    kind = type(layer).__name__
    if kind in PRODUCERS:
        if kind.startswith("Separable"):  # depthwise (…, in, 1), pointwise (…, in, out), bias
            depthwise, pointwise, *rest = weights
            depthwise, pointwise = _take(depthwise, into, -2), _take(_take(pointwise, into, -2), out, -1)
            return [depthwise, pointwise, *[_take(b, out, -1) for b in rest]]
        kernel, *rest = weights
        return [_take(_take(kernel, into, -2 if kernel.ndim > 2 else 0), out, -1), *[_take(b, out, -1) for b in rest]]
    if kind.startswith("Depthwise"):  # kernel (…, in, 1), bias (in,)
        kernel, *rest = weights
        return [_take(kernel, into, -2), *[_take(b, into, -1) for b in rest]]
    return [_take(w, into, -1) for w in weights]  # BatchNorm, PReLU: per-channel vectors


def _take(array: np.ndarray, kept: np.ndarray | None, axis: int) -> np.ndarray:
    return array if kept is None else np.take(array, kept, axis=axis)


def removed_inputs(graph: ChannelGraph, keep: Keep) -> dict[str, np.ndarray]:
    """For each conv/dense layer reading removed channels: the input channel indices it loses."""
    lost = {}
    for layer in graph.model.layers:
        if type(layer).__name__ not in PRODUCERS:
            continue
        kept = graph.kept_indices(layer.name, keep, "input")
        if kept is not None:
            total = int(layer.input.shape[-1])
            lost[layer.name] = np.setdiff1d(np.arange(total), kept)
    return lost


@contextmanager
def masked(graph: ChannelGraph, keep: Keep):
    """The original model computing as if the channels were removed (weights restored after)."""
    saved = []
    layers = {layer.name: layer for layer in graph.model.layers}
    try:
        for name, lost in removed_inputs(graph, keep).items():
            layer = layers[name]
            weights = layer.get_weights()
            saved.append((layer, weights))
            zeroed = [w.copy() for w in weights]
            if type(layer).__name__.startswith("Separable"):
                zeroed[1][..., lost, :] = 0  # the pointwise kernel reads the depthwise outputs
            elif zeroed[0].ndim > 2:
                zeroed[0][..., lost, :] = 0
            else:
                zeroed[0][lost, :] = 0
            layer.set_weights(zeroed)
        yield graph.model
    finally:
        for layer, weights in saved:
            layer.set_weights(weights)
