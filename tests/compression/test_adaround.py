"""Learned weight rounding (repairs.adaround, issue 26): the layer error it minimizes is the one a
convolution really makes, the kernels land exactly on the converters' grid, the output moves less
than with rounding to nearest, and every written file holds the int8 weights chosen."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.compression.repairs import adaround
from edgekit.compression.repairs.bias import quantize_weights
from edgekit.compression.repairs.equalize import _out_axis
from tests.compression.test_repairs import _inputs, _keras, _narrow_channels_model, _with_rounded_weights

KERNELS = ("Conv2D", "DepthwiseConv2D", "Dense")


def _strided_model():
    """A strided 'same' conv, a dilated depthwise and a dense on a 3-D input: every patch layout."""
    keras = _keras()
    keras.utils.set_random_seed(3)
    inputs = keras.Input((11, 9, 3))
    x = keras.layers.Conv2D(5, 3, strides=2, padding="same", name="strided")(inputs)
    x = keras.layers.DepthwiseConv2D(3, dilation_rate=2, padding="same", name="dilated")(x)
    outputs = keras.layers.Dense(4, name="dense")(x)
    return keras.Model(inputs, outputs)


def test_the_second_moment_error_is_the_convolutions_own():
    """E‖ΔWᵀp‖² from the gathered moments equals the mean squared output of each layer run with
    the kernel ΔW (no bias): the patches match the layer's strides, padding and dilation."""
    import tensorflow as tf

    from edgekit.compression.repairs.bias import _linear_part

    model = _strided_model()
    x = np.random.default_rng(0).normal(size=(6, 11, 9, 3)).astype(np.float32)
    layers = [model.get_layer(n) for n in ("strided", "dilated", "dense")]
    moments = adaround._gather(model, layers, x)
    taps = _keras().Model(model.inputs, [layer.input for layer in layers])(x)
    rng = np.random.default_rng(1)
    for layer, value, moment in zip(layers, taps, moments):
        delta = rng.normal(size=layer.get_weights()[0].shape).astype(np.float32)
        out = _linear_part(layer, value, tf.constant(delta)).numpy()
        measured = np.mean(np.sum(out.reshape(-1, out.shape[-1]) ** 2, axis=-1))
        depthwise = type(layer).__name__ == "DepthwiseConv2D"
        predicted = adaround._output_error(adaround._matrix(layer, delta), moment.second, depthwise)
        assert predicted == pytest.approx(measured, rel=1e-4), layer.name


@pytest.mark.parametrize("per_tensor", [True, False], ids=["per-tensor", "per-channel"])
def test_learned_rounding_lands_on_the_grid_and_moves_the_output_less(per_tensor):
    model = _narrow_channels_model()
    before = [w.copy() for w in model.get_weights()]
    calibration, held_out = _inputs(128, 1), _inputs(64, 2)
    result = adaround.learn_rounding(model, calibration, per_tensor)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the caller's model untouched
    assert result.folded == ["bn"] and {r["layer"] for r in result.rounded} == {"conv", "dw", "pw", "logits"}
    for layer in result.model.layers:
        if type(layer).__name__ in KERNELS:
            kernel = layer.get_weights()[0]
            # on the grid the converter computes from this very kernel: re-quantizing it is a fixed point,
            # so each channel's largest weight kept ±127 and the step did not move
            assert np.array_equal(quantize_weights(kernel, _out_axis(layer), per_tensor), kernel), layer.name
            chosen = result.chosen[layer.name]
            assert chosen.dtype == np.int8 and chosen.shape == kernel.shape and np.abs(chosen).max() == 127
    records = {r["layer"]: r for r in result.rounded}
    assert all(r["error_chosen"] <= r["error_nearest"] for r in records.values())
    assert sum(r["changed"] for r in records.values()) > 0  # it chose differently from nearest somewhere
    assert sum(r["error_chosen"] for r in records.values()) < 0.8 * sum(r["error_nearest"] for r in records.values())
    # end to end, on inputs it never saw: the weight-rounded network's outputs are closer to float
    from edgekit.compression.stages.fold import fold_batchnorm

    folded, _ = fold_batchnorm(model)
    float_out = folded.predict(held_out, verbose=0)
    nearest_error = _with_rounded_weights(folded, per_tensor).predict(held_out, verbose=0) - float_out
    learned_error = result.model.predict(held_out, verbose=0) - float_out
    assert np.sqrt(np.mean(learned_error ** 2)) < 0.8 * np.sqrt(np.mean(nearest_error ** 2))


def test_layers_it_cannot_round_are_left_alone_and_named():
    keras = _keras()
    inputs = keras.Input((6, 6, 2))
    shared = keras.layers.Conv2D(2, 1, name="shared")
    x = shared(shared(inputs))
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="multiplied")(x)
    outputs = keras.layers.Dense(3, name="head")(keras.layers.Flatten()(x))
    result = adaround.learn_rounding(keras.Model(inputs, outputs), np.ones((4, 6, 6, 2), np.float32), False)
    assert result.left_alone == [{"layer": "shared", "why": "it is called more than once"},
                                 {"layer": "multiplied", "why": "a depthwise layer with a channel multiplier"}]
    assert [r["layer"] for r in result.rounded] == ["head"]


def test_a_layer_whose_second_moment_would_not_fit_is_left_alone(monkeypatch):
    """VGG16's fc1 reads 25,088 values: its G would take 2.5 GB; such a layer keeps nearest rounding
    and is named (here with a 1,000-float budget: 64 inputs need 4,096)."""
    monkeypatch.setattr(adaround, "MOMENT_FLOATS", 1000)
    keras = _keras()
    inputs = keras.Input((64,))
    outputs = keras.layers.Dense(3, name="narrow")(keras.layers.Dense(8, name="wide")(inputs))
    result = adaround.learn_rounding(keras.Model(inputs, outputs), np.ones((4, 64), np.float32), False)
    assert [r["layer"] for r in result.rounded] == ["narrow"]
    (alone,) = result.left_alone
    assert alone["layer"] == "wide" and "64-value inputs" in alone["why"] and "GiB second moment" in alone["why"]


def test_every_file_holds_the_weights_chosen(digits, cli, tmp_path):
    """Read back from each int8 file; and the check can fail: the nearest-rounded kernels of the
    same model are not what the files hold."""
    from edgekit.formats.held import layers_not_held
    from edgekit.compression.stages.fold import fold_batchnorm

    out = tmp_path / "out"
    result = cli("compress", digits["model"], "--int8", "--per-tensor", "--adaround", "--data", digits["calib"],
                 "--val", digits["val"], "-o", out, "--no-bench")
    assert result.exit_code == 0, result.output
    assert "adaround:" in result.stderr and "of the weights round the other way" in result.stderr
    report = json.loads((out / "report.json").read_text())
    record = report["repairs"]["adaround"]
    layers = [r["layer"] for r in record["rounded"]]
    assert layers == ["conv1", "conv2", "fc", "probs"] and record["weights"] == "per-tensor"
    sqnr = report["repairs"]["layer_sqnr_db"]
    assert sqnr["stages"] == ["before", "adaround"]
    gains = [row["sqnr_db"][1] - row["sqnr_db"][0] for row in sqnr["layers"]]
    assert np.median(gains) > 0.5, sqnr  # each layer's int8 form is closer to its float form
    held = record["held"]
    assert held["digits.int8.tflite"] == {"held": 4, "of": 4, "not_held": []}
    assert held["digits.int8.onnx"] == {"held": 4, "of": 4, "not_held": []}
    # NNCF keeps the first conv's weights to 7 bits (its overflow fix): another grid, named
    assert held["digits.int8.xml"]["not_held"] in ([], ["conv1"]), held
    top1 = {a["id"]: a["accuracy"]["top1"] for a in report["artifacts"]}
    for fmt in ("tflite", "onnx", "openvino"):
        assert top1[f"{fmt}-int8"] >= top1[f"{fmt}-fp32"] - 0.01, top1

    from edgekit.support.keras_compat import tf_keras

    folded, _ = fold_batchnorm(tf_keras().models.load_model(digits["model"], compile=False))
    nearest = {}
    for name in layers:
        layer = folded.get_layer(name)
        kernel = layer.get_weights()[0]
        step = np.abs(kernel).max() / 127
        nearest[name] = np.round(quantize_weights(kernel, _out_axis(layer), True) / step).astype(np.int8)
    assert layers_not_held(nearest, out / "digits.int8.tflite", "tflite")  # at least one layer differs

