"""The Keras side of layer matching: units, their fused chains, what feeds them and what reads them."""

from __future__ import annotations

import numpy as np

from edgekit.formats.graph import Chain, float_names, kernel_key
from edgekit.quality.layer_graph import keras_tap_model, keras_units


def _model():
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    layers = keras.layers
    x = layers.Input((8, 8, 3), name="image")
    a = layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(x)
    a = layers.BatchNormalization(name="stem_bn")(a)
    a = layers.ReLU(6.0, name="stem_relu")(a)
    b = layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(a)
    c = layers.Conv2D(8, 1, name="project")(b)  # linear, then a residual add
    s = layers.Add(name="add")([a, c])
    p = layers.GlobalAveragePooling2D(name="pool")(s)
    d = layers.Dense(16, activation="swish", name="hidden")(p)  # swish does not fuse
    y = layers.Dense(4, activation="softmax", name="probs")(d)
    return keras.Model(x, y)


def test_units_chains_neighbours_and_keys():
    units = {u.name: u for u in keras_units(_model())}
    assert list(units) == ["stem", "dw", "project", "hidden", "probs"]
    assert units["stem"].end == "stem_relu" and not units["stem"].linear_twin
    assert units["hidden"].linear_twin and units["probs"].linear_twin  # compared before swish / softmax
    assert units["dw"].key == (3, 3, 8) and units["stem"].key == (3, 3, 3, 8) and units["probs"].key == (4, 16)
    assert units["dw"].upstream == ["stem"] and units["dw"].consumers == ["project"]
    # through the residual add and the pooling back to both branches; readers only through pass-through layers
    assert sorted(units["hidden"].upstream) == ["project", "stem"]
    assert units["project"].consumers == [] and units["hidden"].consumers == ["probs"]
    assert units["stem"].macs == 8 * 8 * 8 * 3 * 3 * 3


def test_tap_model_gives_pre_activation_outputs_of_unfused_activations():
    model = _model()
    units = keras_units(model)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    outputs = dict(zip([u.name for u in units], keras_tap_model(model, units)(x)))
    probs = np.asarray(model(x))
    logits = np.asarray(outputs["probs"])
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(softmax, probs, rtol=1e-5, atol=1e-6)
    assert np.asarray(outputs["stem"]).max() <= 6.0  # after ReLU6: the chain end


def test_kernel_keys_agree_across_layouts():
    assert kernel_key((3, 3, 32, 64)) == kernel_key((64, 32, 3, 3)) == kernel_key((64, 3, 3, 32))
    assert kernel_key((3, 3, 32, 1)) == kernel_key((1, 3, 3, 32)) == kernel_key((32, 1, 3, 3))


def test_float_names_take_the_readers_too():
    units = {u.name: u for u in keras_units(_model())}
    paired = {name: Chain((), [f"{name}/op"], None, False, passes=[f"{name}/after"]) for name in units}
    assert float_names(units["dw"], paired) == ["dw/op", "dw/after", "project/op"]
    assert float_names(units["probs"], paired) == ["probs/op", "probs/after"]
