"""Keras 3 → tf_keras: rebuild a Keras 3 model as the tf_keras working model tfmot needs.

tf_keras cannot read Keras 3 configs (`batch_shape`, DTypePolicy objects, the new
inbound-node format), so the config is translated for built-in layers, the tf_keras model
is built from it, the weights are copied layer by layer by name, and the rebuild is proved
by comparing outputs on random input. A layer outside BRIDGEABLE stops the bridge with its
name; the caller then keeps the Keras 3 model for the PTQ/export path.
"""

from __future__ import annotations

import inspect as _inspect
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.errors import BridgeUnavailable, EdgekitError, ModelError, first_line
from edgekit.intake.safety import check_node_references, group_layers, has_own_input, iter_layers

BRIDGEABLE = frozenset("""
InputLayer Conv2D DepthwiseConv2D SeparableConv2D BatchNormalization ReLU LeakyReLU Activation
Softmax Dropout SpatialDropout2D Rescaling Normalization MaxPooling2D AveragePooling2D
GlobalAveragePooling2D GlobalMaxPooling2D ZeroPadding2D Cropping2D UpSampling2D Reshape
Flatten Permute Dense Add Subtract Multiply Average Maximum Minimum Concatenate
LayerNormalization Identity Functional Sequential Model
""".split())
# Keras 3 layers that ship outside keras.layers (in keras.applications) and their tf_keras
# twin: same constructor arguments, same weights, same math.
SHIPPED_TWINS = {
    ("keras.src.applications.convnext", "LayerScale"): ("tf_keras.src.applications.convnext", "LayerScale"),
}
# Activation names that mean the same function in both. Keras 3's hard_sigmoid is
# relu6(x+3)/6 while tf_keras' is 0.2x+0.5, so it is deliberately absent.
SAME_ACTIVATIONS = frozenset("relu sigmoid softmax tanh linear elu selu softplus softsign exponential gelu mish swish".split())
RENAMED_ACTIVATIONS = {"silu": "swish"}
# Keys Keras 3 writes that carry no meaning for a tf_keras layer whose weights are copied.
DROPPED_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
DROPPED_KEYS = {"module", "registered_name", "build_config", "compile_config", "shared_object_id", "optional",
                "quantization_config", "lora_rank", "lora_alpha"}
BASE_LAYER_KEYS = {"name", "trainable", "dtype", "batch_input_shape", "input_shape", "batch_size", "dynamic"}
BRIDGE_TOLERANCE = 1e-5


@dataclass
class BridgeResult:
    model: Any  # the tf_keras model
    max_abs_diff: float


def unbridgeable_layers(config: dict) -> list[str]:
    """Layers the bridge cannot translate, as "name (Class)" or "name (activation x)"."""

    problems = []
    for ref in iter_layers(config):
        if ref.class_name not in BRIDGEABLE and (ref.module, ref.class_name) not in SHIPPED_TWINS:
            problems.append(f"{ref.name} ({ref.class_name})")
        elif _activation_name(ref.config.get("activation")) is None and "activation" in ref.config:
            if not (ref.class_name == "Activation" and ref.config.get("activation") == "relu6"):
                problems.append(f"{ref.name} (activation {ref.config.get('activation')!r})")
    return problems


def _activation_name(value) -> str | None:
    if value is None:
        return "linear"
    if isinstance(value, dict):  # Keras 3 may serialize a built-in activation as an object
        value = value.get("config", {}).get("name") if value.get("class_name") == "function" else None
    if not isinstance(value, str):
        return None
    if value in SAME_ACTIVATIONS:
        return value
    return RENAMED_ACTIVATIONS.get(value)


# --- config translation -------------------------------------------------------------------

def translate(config: dict) -> dict:
    """A Keras 3 model config → the equivalent tf_keras config (built-in layers only)."""
    problems = unbridgeable_layers(config)
    if problems:
        raise BridgeUnavailable(f"no tf_keras equivalent for {group_layers(problems)}")
    try:
        return _translate_layer(config)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise BridgeUnavailable(f"the model config has an unexpected structure ({type(exc).__name__}: "
                                f"{first_line(exc)})") from None


def _translate_layer(layer: dict) -> dict:
    class_name = layer["class_name"]
    module = layer.get("module")
    cfg = _clean(layer.get("config", {}))
    if class_name in ("Functional", "Model"):
        class_name = "Functional"
        cfg = _translate_functional(cfg)
    elif class_name == "Sequential":
        cfg["layers"] = [_translate_layer(child) for child in cfg.get("layers", [])]
        cfg.pop("build_input_shape", None)
    elif (module, class_name) in SHIPPED_TWINS:
        cfg = _accepted_keys(_tf_keras_twin(module, class_name), cfg)
    else:
        class_name, cfg = _translate_builtin(class_name, cfg)
    out = {"class_name": class_name, "config": cfg}
    if "name" in layer:
        out["name"] = layer["name"]
    if "inbound_nodes" in layer:
        out["inbound_nodes"] = [_translate_node(node) for node in layer["inbound_nodes"]]
    return out


def _clean(cfg: dict) -> dict:
    out = {}
    for key, value in cfg.items():
        if key in DROPPED_KEYS or key.endswith(DROPPED_SUFFIXES):
            continue
        if key == "dtype" and isinstance(value, dict):  # DTypePolicy object → its name
            value = value.get("config", {}).get("name", "float32")
        out[key] = value
    return out


def _translate_builtin(class_name: str, cfg: dict) -> tuple[str, dict]:
    if class_name == "InputLayer" and "batch_shape" in cfg:
        cfg["batch_input_shape"] = cfg.pop("batch_shape")
    if class_name == "Activation" and cfg.get("activation") == "relu6":
        class_name, cfg = "ReLU", {"name": cfg["name"], "trainable": cfg.get("trainable", True),
                                   "dtype": cfg.get("dtype"), "max_value": 6.0}
    elif "activation" in cfg:
        cfg["activation"] = _activation_name(cfg["activation"])
    from edgekit.support.keras_compat import tf_keras

    return class_name, _accepted_keys(getattr(tf_keras().layers, class_name), cfg)


def _tf_keras_twin(module: str, class_name: str):
    import importlib

    from edgekit.support.keras_compat import tf_keras

    tf_keras()
    twin_module, twin_name = SHIPPED_TWINS[(module, class_name)]
    return getattr(importlib.import_module(twin_module), twin_name)


def tf_keras_twins() -> dict:
    """Every twin class by name: what loading a saved rebuilt model needs."""
    return {name: _tf_keras_twin(module, name) for module, name in SHIPPED_TWINS}


def _accepted_keys(cls, cfg: dict) -> dict:
    """Drop keys the tf_keras layer's constructor would reject (Keras 3 added several)."""
    params = set(_inspect.signature(cls.__init__).parameters) | BASE_LAYER_KEYS
    return {k: v for k, v in cfg.items() if k in params}


def _translate_functional(cfg: dict) -> dict:
    cfg["layers"] = [_translate_layer(child) for child in cfg.get("layers", [])]
    # Keras 3 numbers the calls of a nested model from 0; tf_keras from 1 when that model
    # has its own Input (its first node is the internal one).
    shifted = {child["config"]["name"] for child in cfg["layers"] if has_own_input(child)}
    for child in cfg["layers"]:
        for node in child.get("inbound_nodes", []):
            for ref in node:
                ref[1] += ref[0] in shifted
    for key in ("input_layers", "output_layers"):
        value = cfg.get(key, [])
        if value and isinstance(value[0], str):  # Keras 3 writes a lone tensor unnested
            value = [value]
        cfg[key] = [[name, index + (name in shifted), tensor] for name, index, tensor in value]
    return cfg


def _keras_tensors(value) -> list:
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _keras_tensors(item)]
    return []


def _translate_node(node) -> list:
    """{"args": [...keras tensors...], "kwargs": {}} → [[layer, node, tensor, {}], ...]."""
    if isinstance(node, list):  # already tf_keras style
        return node
    kwargs = {k: v for k, v in node.get("kwargs", {}).items() if isinstance(v, (bool, int, float, str))}
    refs = []
    for tensor in _keras_tensors(node.get("args", [])):
        layer, node_index, tensor_index = tensor["config"]["keras_history"]
        refs.append([layer, node_index, tensor_index, kwargs])
    return refs


# --- build, copy weights, prove ---------------------------------------------------------

def bridge(keras3_model, seed: int = 0) -> BridgeResult:
    """Rebuild keras3_model in tf_keras and prove it computes the same function."""
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    config = _model_config(keras3_model)
    tf_config = translate(config)
    check_node_references(tf_config, "the translated model")
    used = {(ref.module, ref.class_name) for ref in iter_layers(config)}
    twins = {name: _tf_keras_twin(module, name) for module, name in SHIPPED_TWINS if (module, name) in used}
    try:
        rebuilt = keras.models.model_from_json(json.dumps(tf_config), custom_objects=twins)
    except (EdgekitError, MemoryError):
        raise
    except Exception as exc:  # any failure of tf_keras' deserializer: Keras 3 loaded it, the bridge cannot
        raise BridgeUnavailable(f"tf_keras could not build the translated config ({first_line(exc)})") from None
    _copy_weights(keras3_model, rebuilt)
    diff = _prove(keras3_model, rebuilt, seed)
    return BridgeResult(model=rebuilt, max_abs_diff=diff)


def _model_config(model) -> dict:
    import keras

    return json.loads(json.dumps(keras.saving.serialize_keras_object(model)))


def _flat_layers(model) -> dict:
    out = {}
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            out.update(_flat_layers(layer))
        out[layer.name] = layer
    return out


def _copy_weights(source, target) -> None:
    source_layers = _flat_layers(source)
    for name, layer in _flat_layers(target).items():
        if not layer.weights or (hasattr(layer, "layers") and layer.layers):
            continue
        values = source_layers[name].get_weights()
        expected = layer.get_weights()
        if len(values) != len(expected):
            raise BridgeUnavailable(f"layer {name} has {len(values)} weights in Keras 3 but {len(expected)} in tf_keras")
        fitted = []
        for value, like in zip(values, expected):
            if value.size != like.size:
                raise BridgeUnavailable(f"layer {name}: weight of shape {value.shape} cannot fill {like.shape}")
            fitted.append(np.reshape(value, like.shape))
        layer.set_weights(fitted)


def _prove(source, target, seed: int) -> float:
    shape = (2, *[int(d) for d in source.inputs[0].shape[1:]])
    x = np.random.default_rng(seed).uniform(0.0, 1.0, shape).astype(np.float32)
    diff = float(np.max(np.abs(np.asarray(source(x, training=False)) - np.asarray(target(x, training=False)))))
    if not diff <= BRIDGE_TOLERANCE:
        layer = _first_differing_layer(source, target, x)
        raise ModelError(
            f"the Keras 3 → tf_keras rebuild changed the outputs (max |Δ| = {diff:.3g} > {BRIDGE_TOLERANCE:g}); "
            f"first layer that differs: {layer}; please report this model"
        )
    return diff


def _first_differing_layer(source, target, x) -> str:
    import keras

    from edgekit.support.keras_compat import tf_keras

    tfk = tf_keras()
    for layer in source.layers[1:]:
        try:
            other = target.get_layer(layer.name)
            a = keras.Model(source.inputs, layer.output)(x, training=False)
            b = tfk.Model(target.inputs, other.output)(x, training=False)
        except (ValueError, AttributeError, TypeError):
            continue
        a, b = np.asarray(a), np.asarray(b)
        scale = max(1.0, float(np.max(np.abs(a))))
        if a.shape != b.shape or np.max(np.abs(a - b)) > BRIDGE_TOLERANCE * scale:
            return f"{layer.name} ({type(layer).__name__})"
    return "none found layer by layer (the difference builds up across layers)"
