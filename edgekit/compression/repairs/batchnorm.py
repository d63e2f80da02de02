"""BatchNormalization that folding cannot remove, rewritten as a 1×1 depthwise convolution.

A BatchNorm right after a conv/dense folds into it (edgekit/compression/stages/fold.py). One after
a concatenation, an add or the model input (DenseNet's pre-activation blocks) has no such layer;
each converter then writes it as its own op, and ONNX Runtime has no integer kernel for
BatchNormalization: an integer-only ONNX file of DenseNet121 kept 62 of them in float. In
inference a BatchNorm is the per-channel affine map x·s + b (s = γ/√(var+ε), b = β − mean·s),
which is exactly a 1×1 depthwise convolution with kernel s and bias b: an op every converter
quantizes. The function is unchanged up to float rounding (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgekit.compression.stages.fold import _rebuilt, fold_batchnorm


@dataclass
class BatchNormResult:
    model: object
    converted: list[str] = field(default_factory=list)
    left_alone: list[dict] = field(default_factory=list)
    folded: list[str] = field(default_factory=list)


def batchnorm_as_conv(model) -> BatchNormResult:
    """Fold what folds, then make each remaining channel-last BatchNorm over a 4-D tensor a 1×1
    DepthwiseConv2D of the same name; a new model where anything changed, else `model` itself."""
    folded_model, folded = fold_batchnorm(model)
    converted, left_alone = [], []
    for layer in folded_model.layers:
        if type(layer).__name__ != "BatchNormalization":
            continue
        why = _why_not(layer)
        if why:
            left_alone.append({"layer": layer.name, "reason": why})
        else:
            converted.append(layer.name)
    config = folded_model.get_config()
    if not converted or "layers" not in config:
        return BatchNormResult(folded_model, [], left_alone, folded)
    for layer in config["layers"]:
        if layer["config"].get("name") in converted:
            layer["class_name"] = "DepthwiseConv2D"
            layer["config"] = {"name": layer["config"]["name"], "trainable": layer["config"].get("trainable", True),
                               "dtype": layer["config"].get("dtype"), "kernel_size": (1, 1), "strides": (1, 1),
                               "padding": "valid", "depth_multiplier": 1, "use_bias": True, "activation": "linear"}
    rebuilt = _rebuilt(folded_model, config, {})
    for layer in rebuilt.layers:
        source = folded_model.get_layer(layer.name)
        layer.set_weights(_as_depthwise(source) if layer.name in converted else source.get_weights())
    return BatchNormResult(rebuilt, converted, left_alone, folded)


def _why_not(layer) -> str | None:
    axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
    shape = layer.input_shape
    if isinstance(shape, list) or len(shape) != 4:
        return "not over a 4-D image tensor"
    if axis not in (-1, 3):
        return "normalizes an axis other than the channels"
    return None


def _as_depthwise(norm) -> list[np.ndarray]:
    weights = {w.name.split("/")[-1].split(":")[0]: np.asarray(w) for w in norm.weights}
    mean, var = weights["moving_mean"], weights["moving_variance"]
    scale = weights.get("gamma", np.ones_like(mean)) / np.sqrt(var + norm.epsilon)
    bias = weights.get("beta", np.zeros_like(mean)) - mean * scale
    return [scale.reshape(1, 1, -1, 1).astype(np.float32), bias.astype(np.float32)]
