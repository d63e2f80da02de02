"""The Keras 3 → tf_keras bridge on its own: config translation and rebuilt models."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.intake.bridge import BridgeUnavailable, bridge, translate, unbridgeable_layers


def _keras3():
    from edgekit.support.keras_compat import tensorflow

    tensorflow()
    import keras

    return keras


def _tensor(layer, shape=(None, 4)):
    return {"class_name": "__keras_tensor__", "config": {"shape": list(shape), "dtype": "float32",
                                                         "keras_history": [layer, 0, 0]}}


def test_translates_keras3_specifics():
    policy = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}
    config = {"module": "keras.src.models.functional", "class_name": "Functional", "config": {
        "name": "m", "trainable": True,
        "layers": [
            {"module": "keras.layers", "class_name": "InputLayer", "name": "in",
             "config": {"batch_shape": [None, 4], "dtype": "float32", "name": "in", "optional": False},
             "inbound_nodes": []},
            {"module": "keras.layers", "class_name": "Dense", "name": "a", "registered_name": None,
             "build_config": {"input_shape": [None, 4]},
             "config": {"name": "a", "units": 3, "activation": "silu", "dtype": policy,
                        "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
                        "quantization_config": None},
             "inbound_nodes": [{"args": [_tensor("in")], "kwargs": {}}]},
            {"module": "keras.layers", "class_name": "Add", "name": "sum", "config": {"name": "sum", "dtype": policy},
             "inbound_nodes": [{"args": [[_tensor("a", (None, 3)), _tensor("a", (None, 3))]], "kwargs": {}}]},
        ],
        "input_layers": ["in", 0, 0], "output_layers": ["sum", 0, 0]}}
    out = translate(config)
    layers = out["config"]["layers"]
    assert out["class_name"] == "Functional"
    assert layers[0]["config"] == {"batch_input_shape": [None, 4], "dtype": "float32", "name": "in"}
    assert layers[1]["config"] == {"name": "a", "units": 3, "activation": "swish", "dtype": "float32"}
    assert layers[1]["inbound_nodes"] == [[["in", 0, 0, {}]]]
    assert layers[2]["inbound_nodes"] == [[["a", 0, 0, {}], ["a", 0, 0, {}]]]
    assert out["config"]["input_layers"] == [["in", 0, 0]]


def test_names_what_cannot_be_bridged():
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"name": "i", "batch_shape": [None, 8, 8, 1]}},
        {"class_name": "Conv2D", "config": {"name": "c", "activation": "hard_sigmoid"}},
        {"class_name": "GroupNormalization", "config": {"name": "g"}},
    ]}}
    assert unbridgeable_layers(config) == ["c (activation 'hard_sigmoid')", "g (GroupNormalization)"]
    with pytest.raises(BridgeUnavailable, match="activation 'hard_sigmoid': c; GroupNormalization: g"):
        translate(config)


def _same_outputs(original, rebuilt, shape):
    x = np.random.default_rng(3).uniform(-1, 1, (4, *shape)).astype(np.float32)
    return float(np.max(np.abs(np.asarray(original(x)) - np.asarray(rebuilt(x)))))


def test_sequential_with_relu6_activation_layer():
    keras = _keras3()
    L = keras.layers
    model = keras.Sequential([L.Input((6, 6, 2)), L.Conv2D(4, 3, activation="relu6"), L.Activation("relu6"),
                              L.GlobalMaxPooling2D(), L.Dense(3, activation="softmax")])
    # relu6 as a Conv activation has no tf_keras name; as an Activation layer it becomes ReLU(6).
    assert unbridgeable_layers(keras.saving.serialize_keras_object(model)) == [
        f"{model.layers[0].name} (activation 'relu6')"]
    model = keras.Sequential([L.Input((6, 6, 2)), L.Conv2D(4, 3), L.Activation("relu6", name="r6"),
                              L.GlobalMaxPooling2D(), L.Dense(3, activation="softmax")])
    result = bridge(model)
    assert type(result.model.get_layer("r6")).__name__ == "ReLU"
    assert result.max_abs_diff <= 1e-5 and _same_outputs(model, result.model, (6, 6, 2)) <= 1e-5


def test_nested_sequential_inside_functional():
    keras = _keras3()
    L = keras.layers
    block = keras.Sequential([L.Input((8, 8, 3)), L.Conv2D(4, 3, padding="same", name="inner_conv"),
                              L.BatchNormalization(name="inner_bn"), L.ReLU(name="inner_relu")], name="block")
    inp = L.Input((8, 8, 3))
    x = block(inp)
    x = L.Concatenate()([x, L.Conv2D(4, 1, name="side")(inp)])
    out = L.Dense(5, activation="softmax")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    # Non-trivial BatchNormalization statistics, so a missed weight copy would show.
    bn = block.get_layer("inner_bn")
    bn.set_weights([w + np.random.default_rng(i).uniform(0.5, 1.5, w.shape).astype(np.float32)
                    for i, w in enumerate(bn.get_weights())])
    result = bridge(model)
    assert _same_outputs(model, result.model, (8, 8, 3)) <= 1e-5
    assert np.allclose(result.model.get_layer("block").get_layer("inner_bn").get_weights()[2], bn.get_weights()[2])
