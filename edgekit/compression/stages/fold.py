"""Fold each BatchNormalization into the Conv2D / DepthwiseConv2D / Dense before it.

Why before QAT: tfmot's 8-bit scheme fake-quantizes a conv's kernel *before* the BatchNorm
that follows it, while every converter (TFLite, tf2onnx, OpenVINO) folds the BatchNorm into
the kernel first and quantizes the folded kernel. The int8 files then hold a different
kernel grid than the one QAT trained, and disagree with the QAT model on 3–5% of inputs
(issue 22, trained MobileNetV2). Fine-tuning runs BatchNorm frozen (edgekit.compression.stages.finetune),
so a folded conv computes exactly what conv + frozen BatchNorm computes: folding first makes
QAT train the very kernel the files hold.

Only a BatchNormalization over the last axis whose single input is a layer of those kinds
with a linear activation, called once, whose output nothing else reads, is folded; anything
else is left as it is (tfmot then keeps it float and says so).
"""

from __future__ import annotations

import numpy as np

from edgekit.support.keras_compat import tf_keras

FOLDABLE = ("Conv2D", "DepthwiseConv2D", "Dense")


def fold_batchnorm(model):
    """A new tf_keras model with the foldable BatchNorms folded; (model, folded names).
    Returns the model itself when nothing folds or it is not a Functional/Sequential model."""
    pairs = _foldable_pairs(model)
    if not pairs:
        return model, []
    config = model.get_config()
    dropped = {bn for bn, _ in pairs}
    into = dict(pairs)
    if "layers" not in config:
        return model, []
    config["layers"] = [layer for layer in config["layers"] if layer["config"].get("name") not in dropped]
    for layer in config["layers"]:
        if layer["config"].get("name") in into.values():
            layer["config"]["use_bias"] = True
        _rewire(layer, into)
    folded = _rebuilt(model, config, into)
    _copy_weights(model, folded, dict((conv, bn) for bn, conv in pairs))
    return folded, sorted(dropped)


GATES = ("swish", "sigmoid")


def split_gates(model):
    """A new tf_keras model where each Conv2D/DepthwiseConv2D/Dense with a swish or sigmoid
    activation is the layer with a linear activation then an Activation layer; (model, names of
    the layers split). The same function, in float exactly; but tfmot then quantizes the
    layer's output and the gate as the int8 files compute them (edgekit.compression.stages.qat_scheme),
    not the fused activation, which it rounds once where the files round three times."""
    split = [layer.name for layer in model.layers if type(layer).__name__ in FOLDABLE
             and getattr(layer.activation, "__name__", None) in GATES and len(layer._inbound_nodes) == 1]  # noqa: SLF001
    config = model.get_config()
    if not split or "layers" not in config:
        return model, []
    taken = {layer["config"].get("name") for layer in config["layers"]}
    into, layers = {}, []
    for layer in config["layers"]:
        _rewire(layer, into)
        layers.append(layer)
        name = layer["config"].get("name")
        if name in split:
            gate = layer["config"]["activation"]
            layer["config"]["activation"] = "linear"
            into[name] = _unused(f"{name}_{gate}", taken)
            layers.append({"class_name": "Activation", "name": into[name],
                           "config": {"name": into[name], "trainable": True, "dtype": layer["config"].get("dtype"),
                                      "activation": gate},
                           "inbound_nodes": [[[name, 0, 0, {}]]]})
    config["layers"] = layers
    rebuilt = _rebuilt(model, config, into)
    for layer in rebuilt.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return rebuilt, split


def _rebuilt(model, config: dict, into: dict[str, str]):
    """The model of a rewritten config, its inputs and outputs following the renames in `into`."""
    keras = tf_keras()
    if isinstance(model, keras.Sequential):
        return keras.Sequential.from_config(config)
    for key in ("output_layers", "input_layers"):
        config[key] = [_renamed(entry, into) for entry in config.get(key, [])]
    return keras.Model.from_config(config)


def _unused(name: str, taken: set) -> str:
    candidate, n = name, 1
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    taken.add(candidate)
    return candidate


def _foldable_pairs(model) -> list[tuple[str, str]]:
    """(batchnorm, conv) names that can be folded."""
    pairs = []
    for layer in model.layers:
        if type(layer).__name__ != "BatchNormalization" or len(layer._inbound_nodes) != 1:  # noqa: SLF001
            continue
        axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
        if axis not in (-1, len(layer.input_shape) - 1):
            continue
        source = layer._inbound_nodes[0].inbound_layers  # noqa: SLF001
        if isinstance(source, list):
            if len(source) != 1:
                continue
            source = source[0]
        if type(source).__name__ not in FOLDABLE or len(source._inbound_nodes) != 1:  # noqa: SLF001
            continue
        if getattr(source.activation, "__name__", None) != "linear":  # BatchNorm after a ReLU is not affine in the conv
            continue
        if len(source._outbound_nodes) != 1:  # noqa: SLF001 - someone else reads the unnormalized output
            continue
        pairs.append((layer.name, source.name))
    return pairs


def _rewire(layer: dict, into: dict[str, str]) -> None:
    """Inbound references to a dropped BatchNorm point at its conv instead (tf_keras node lists)."""
    nodes = layer.get("inbound_nodes")
    if not nodes:
        return
    layer["inbound_nodes"] = [_renamed_node(node, into) for node in nodes]


def _renamed_node(node, into):
    if isinstance(node, list) and node and isinstance(node[0], str):
        return _renamed(node, into)  # a TFOpLambda's node is one entry: [name, node, tensor, kwargs]
    if isinstance(node, list):
        return [_renamed(entry, into) for entry in node]
    return node


def _renamed(entry, into):
    if isinstance(entry, list) and entry and isinstance(entry[0], str) and entry[0] in into:
        return [into[entry[0]], *entry[1:]]
    return entry


def _copy_weights(source, folded, norm_of: dict[str, str]) -> None:
    """Every layer's weights by name; a folded conv gets kernel × scale and a new bias."""
    for layer in folded.layers:
        original = source.get_layer(layer.name)
        if layer.name not in norm_of:
            layer.set_weights(original.get_weights())
            continue
        norm = source.get_layer(norm_of[layer.name])
        kernel, bias = _folded(original, norm)
        layer.set_weights([kernel, bias])


def _folded(conv, norm) -> tuple[np.ndarray, np.ndarray]:
    weights = {w.name.split("/")[-1].split(":")[0]: np.asarray(w) for w in norm.weights}
    mean, var = weights["moving_mean"], weights["moving_variance"]
    gamma = weights.get("gamma", np.ones_like(mean))
    beta = weights.get("beta", np.zeros_like(mean))
    scale = gamma / np.sqrt(var + norm.epsilon)
    own = conv.get_weights()  # [kernel (depthwise_kernel), bias?]
    kernel = own[0]
    bias = own[1] if conv.use_bias else np.zeros_like(mean)
    if type(conv).__name__ == "DepthwiseConv2D":  # (kh, kw, in, multiplier): output channel = in × mult + m
        kernel = kernel * scale.reshape(1, 1, kernel.shape[2], kernel.shape[3])
    else:
        kernel = kernel * scale  # the output axis is the last one
    return kernel.astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)
