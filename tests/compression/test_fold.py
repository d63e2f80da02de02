"""Folding BatchNorm before QAT: exact where the conv is linear, never across an activation."""

from __future__ import annotations

import numpy as np
import pytest


def _model(activation: str, depthwise: bool):
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    keras.utils.set_random_seed(0)
    L = keras.layers
    conv = (L.DepthwiseConv2D(3, padding="same", activation=activation, name="conv") if depthwise
            else L.Conv2D(8, 3, padding="same", activation=activation, name="conv"))
    inputs = L.Input((8, 8, 4))
    x = L.BatchNormalization(name="bn")(conv(inputs))
    x = L.ReLU(name="relu")(x)
    outputs = L.Dense(3, name="head")(L.GlobalAveragePooling2D(name="gap")(x))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    bn = model.get_layer("bn")  # statistics far from the identity, so a wrong fold shows
    bn.set_weights([rng.uniform(0.5, 2, w.shape).astype(np.float32) if i in (0, 3) else
                    rng.normal(0, 1, w.shape).astype(np.float32) for i, w in enumerate(bn.get_weights())])
    return model


@pytest.mark.parametrize("depthwise", [False, True])
def test_a_linear_conv_and_its_batchnorm_become_one_layer_computing_the_same(depthwise):
    from edgekit.compression.stages.fold import fold_batchnorm

    model = _model("linear", depthwise)
    folded, names = fold_batchnorm(model)
    assert names == ["bn"] and "bn" not in [l.name for l in folded.layers]
    x = np.random.default_rng(1).normal(0, 1, (4, 8, 8, 4)).astype(np.float32)
    np.testing.assert_allclose(folded(x).numpy(), model(x, training=False).numpy(), atol=1e-5)


def test_batchnorm_after_an_activation_is_left_alone():
    from edgekit.compression.stages.fold import fold_batchnorm

    model = _model("relu", depthwise=False)
    folded, names = fold_batchnorm(model)
    assert names == [] and folded is model


def test_a_batchnorm_read_by_a_tf_op_is_folded_with_the_op_rewired():
    """MobileNetV3's hard-swish reads its BatchNorm through a TFOpLambda (`x + 3`), whose node
    is a single entry rather than a list of them: it must follow the fold to the conv."""
    from edgekit.compression.stages.fold import fold_batchnorm
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    keras.utils.set_random_seed(0)
    L = keras.layers
    inputs = L.Input((8, 8, 4))
    x = L.BatchNormalization(name="bn")(L.Conv2D(8, 3, padding="same", name="conv")(inputs))
    x = L.Multiply(name="hard_swish")([x, L.ReLU(6.0, name="gate")(x + 3.0) * (1.0 / 6.0)])
    model = keras.Model(inputs, L.Dense(3, name="head")(L.GlobalAveragePooling2D(name="gap")(x)))
    folded, names = fold_batchnorm(model)
    assert names == ["bn"]
    x = np.random.default_rng(1).normal(0, 1, (4, 8, 8, 4)).astype(np.float32)
    np.testing.assert_allclose(folded(x).numpy(), model(x, training=False).numpy(), atol=1e-5)
