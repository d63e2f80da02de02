"""Channels a BatchNorm saw constant: their kernels set to nothing, so that folding cannot blow them up.

A channel whose input is dead (a ReLU upstream that never fires) computes a constant; the
BatchNorm after it learns a moving variance of ~0 for that channel, and its output there is β
whatever the kernel holds. Folding the BatchNorm into the conv multiplies that channel's kernel by
γ/√(var + ε) ≈ γ/√ε (31.6γ for Keras' ε = 1e-3): the kernel, untrained since no gradient reached it,
becomes 100-1000× the other channels' (a MobileNetV2 trained with SGD on the digits: the first
depthwise conv's widest folded channel 1,012× the median, all of them channels of variance 0), and
one such channel sets the whole layer's per-tensor int8 step: top-1 11% against 95% per-channel.

Setting γ = 0 for those channels keeps β as their output, folds their kernel to zeros, and changes
nothing where the channel is constant, which the BatchNorm's own statistics say it was on the
training data; edgekit/compression/repairs/apply.py checks the outputs on the evidence inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# A channel the BatchNorm saw vary by less than this share of its ε: a constant, up to float
# rounding (the dead channels of a trained MobileNetV2 hold 0 or ~1e-8; live ones 1e-2 and up)
CONSTANT_VARIANCE = 1e-4


@dataclass
class DeadChannelsResult:
    model: object
    # {"layer", "channels", "fold_over_median": the widest silenced channel's γ/√(var+ε) over the median's}
    silenced: list[dict] = field(default_factory=list)
    left_alone: list[dict] = field(default_factory=list)


def silence_dead_channels(model, owned: bool = False) -> DeadChannelsResult:
    """γ := 0 for each BatchNorm channel whose moving variance is below CONSTANT_VARIANCE·ε; the
    model (a copy unless `owned`) and what was changed. `model` itself where nothing was."""
    found, left_alone = [], []
    for layer in model.layers:
        if type(layer).__name__ != "BatchNormalization":
            continue
        if not layer.scale:
            left_alone.append({"layer": layer.name, "reason": "a BatchNorm without γ (scale=False)"})
            continue
        variance = np.asarray(layer.moving_variance.numpy())
        dead = np.flatnonzero(variance < CONSTANT_VARIANCE * layer.epsilon)
        gamma = np.asarray(layer.gamma.numpy())
        dead = dead[gamma[dead] != 0]
        if dead.size:
            fold = np.abs(gamma) / np.sqrt(variance + layer.epsilon)
            found.append((layer.name, dead, float(fold[dead].max() / max(np.median(fold), 1e-12))))
    if not found:
        return DeadChannelsResult(model, [], left_alone)
    from edgekit.compression.repairs.equalize import _copy

    target = model if owned else _copy(model)
    silenced = []
    for name, dead, widest in found:
        layer = target.get_layer(name)
        gamma = np.asarray(layer.gamma.numpy()).copy()
        gamma[dead] = 0.0
        layer.gamma.assign(gamma)
        silenced.append({"layer": name, "channels": [int(c) for c in dead], "fold_over_median": round(widest, 1)})
    return DeadChannelsResult(target, silenced, left_alone)
