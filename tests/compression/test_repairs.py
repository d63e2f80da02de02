"""Bias correction and ReLU6 through equalization (issue 26): the weight grid bias correction
assumes is the one the converters write, the correction removes the mean rounding error, and
the repairs that change the float function say by how much."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.compression.repairs.bias import correct_biases, quantize_weights
from edgekit.compression.repairs.equalize import _out_axis, equalize, unclip_relu6
from tests.conftest import refusal_line, snapshot


def _keras():
    from edgekit.support.keras_compat import tf_keras

    return tf_keras()


def _narrow_channels_model(seed: int = 0):
    """conv → BN → ReLU6 → depthwise → ReLU6 → pointwise → GAP → dense, where a few channels of
    each kernel are 200× narrower than the rest: per-tensor int8 rounds them to zero."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(6.0, name="relu6_a")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.ReLU(6.0, name="relu6_b")(x)
    x = layers.Conv2D(16, 1, name="pw")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(4, name="logits")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    model.get_layer("bn").set_weights([rng.uniform(0.5, 2, 16), rng.normal(0.5, 0.1, 16), rng.normal(0, 0.1, 16),
                                       rng.uniform(0.5, 2, 16)])
    for name, axis in (("conv", -1), ("dw", 2), ("pw", -1)):
        layer = model.get_layer(name)
        weights = layer.get_weights()
        narrow = np.ones(weights[0].shape[axis], np.float32)
        narrow[:4] = 1 / 200
        shape = [1] * weights[0].ndim
        shape[axis] = -1
        weights[0] = weights[0] * narrow.reshape(shape) + (0.002 if name == "dw" else 0)  # a mean the rounding loses
        layer.set_weights(weights)
    return model


def _with_rounded_weights(model, per_tensor: bool):
    """A copy whose conv/dense kernels sit on the int8 grid: what the int8 file computes, activations apart."""
    keras = _keras()
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in copy.layers:
        if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D", "Dense"):
            weights = layer.get_weights()
            weights[0] = quantize_weights(weights[0], _out_axis(layer), per_tensor)
            layer.set_weights(weights)
    return copy


def _inputs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 12, 12, 3)).astype(np.float32)


def test_the_grid_is_the_one_the_tflite_converter_writes(tmp_path):
    """Per-tensor and per-channel, converted as edgekit's TFLite step configures the converter:
    the int8 weights read back from the file are exactly quantize_weights of the folded kernel."""
    import tensorflow as tf

    from edgekit.compression.stages.fold import fold_batchnorm
    from edgekit.formats.tflite.export import configure

    folded, _ = fold_batchnorm(_narrow_channels_model())
    np.save(tmp_path / "calib.npy", _inputs(16, 3))
    for per_tensor in (True, False):
        converter = tf.lite.TFLiteConverter.from_keras_model(folded)
        configure(converter, "int8", str(tmp_path / "calib.npy"), "float32", qat=False, per_tensor=per_tensor)
        interpreter = tf.lite.Interpreter(model_content=converter.convert())
        for name in ("dw", "pw"):
            layer = folded.get_layer(name)
            expected = np.moveaxis(quantize_weights(layer.get_weights()[0], _out_axis(layer), per_tensor), -1, 0)
            if name == "dw":
                expected = np.moveaxis(expected, 0, -1)[None, ..., 0]  # (h, w, C, 1) → (1, h, w, C)
            matches = [_dequantized(interpreter, d) for d in interpreter.get_tensor_details()
                       if d["dtype"] == np.int8 and tuple(d["shape"]) == expected.shape]
            assert any(np.max(np.abs(m - expected)) <= 1e-6 for m in matches if m is not None), (name, per_tensor)


def _dequantized(interpreter, detail):
    try:
        values = interpreter.get_tensor(detail["index"]).astype(np.float32)
    except ValueError:
        return None
    scales = detail["quantization_parameters"]["scales"]
    axis = detail["quantization_parameters"]["quantized_dimension"]
    shape = [1] * values.ndim
    shape[axis] = -1
    return values * (scales.reshape(shape) if len(scales) > 1 else scales[0])


def test_bias_correction_removes_the_mean_rounding_error_and_only_touches_biases():
    model = _narrow_channels_model()
    calibration, held_out = _inputs(64, 1), _inputs(64, 2)
    result = correct_biases(model, calibration, per_tensor=True)
    assert result.folded == ["bn"] and {c["layer"] for c in result.corrected} == {"conv", "dw", "pw", "logits"}
    from edgekit.compression.stages.fold import fold_batchnorm

    folded, _ = fold_batchnorm(model)
    for before, after in zip(folded.layers, result.model.layers):
        if type(before).__name__ in ("Conv2D", "DepthwiseConv2D", "Dense"):
            assert np.array_equal(before.get_weights()[0], after.get_weights()[0])  # the kernels are as they were
    float_out = folded.predict(held_out, verbose=0)
    plain_error = _with_rounded_weights(folded, True).predict(held_out, verbose=0) - float_out
    corrected_error = _with_rounded_weights(result.model, True).predict(held_out, verbose=0) - float_out
    # on inputs it was not measured on, the mean error of every logit shrinks, and the error overall
    assert np.all(np.abs(corrected_error.mean(0)) < np.abs(plain_error.mean(0)))
    assert np.sqrt(np.mean(corrected_error ** 2)) < 0.5 * np.sqrt(np.mean(plain_error ** 2))


def test_layers_without_a_bias_are_left_alone_and_named():
    keras = _keras()
    model = keras.Sequential([keras.layers.Input((6, 6, 1)), keras.layers.Conv2D(4, 3, use_bias=False, name="nb"),
                              keras.layers.Flatten(), keras.layers.Dense(3, name="head")])
    result = correct_biases(model, np.ones((4, 6, 6, 1), np.float32), per_tensor=False)
    assert result.left_alone == [{"layer": "nb", "why": "it has no bias to carry the correction"}]
    assert [c["layer"] for c in result.corrected] == ["head"]


def test_relu6_made_relu_lets_equalization_through_mobilenet_blocks():
    """Where no activation passes 6 the function is the same; the pairs now join through ReLU6."""
    model = _narrow_channels_model()
    x = _inputs(16, 4) * 0.1  # small inputs: no activation reaches 6
    assert {(p["from"], p["to"]) for p in equalize(model).pairs} == {("pw", "logits")}  # ReLU6 ends the others
    unclipped, names = unclip_relu6(model)
    assert names == ["relu6_a", "relu6_b"]
    result = equalize(unclipped)
    assert {(p["from"], p["to"]) for p in result.pairs} == {("conv", "dw"), ("dw", "pw"), ("pw", "logits")}
    assert np.max(np.abs(result.model.predict(x, verbose=0) - model.predict(x, verbose=0))) <= 1e-5
    assert unclip_relu6(result.model)[1] == []  # nothing left to unclip


def test_the_repairs_reach_every_format_and_the_report_says_what_changed(outlier_digits, cli, tmp_path):
    out = tmp_path / "out"
    result = cli("compress", outlier_digits["model"], "--int8", "--per-tensor", "--relu6", "--bias-correction",
                 "--data", outlier_digits["calib"], "--val", outlier_digits["val"], "-o", out, "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    repairs = report["repairs"]
    assert repairs["equalize"]["pairs"] and repairs["equalize"]["relu6_made_relu"] == []  # the digits CNN has none
    assert repairs["bias_correction"]["weights"] == "per-tensor"
    assert {c["layer"] for c in repairs["bias_correction"]["corrected"]} == {"conv1", "conv2", "fc", "probs"}
    assert 0 < repairs["change"]["max_abs_change"] < 0.1 and repairs["change"]["top1_agreement"] >= 0.95
    # per-layer int8 SQNR after each repair: the outliers ruin the layer reading them until equalization
    sqnr = repairs["layer_sqnr_db"]
    assert sqnr["stages"] == ["before", "equalize", "bias_correction"]
    by_layer = {row["layer"]: row["sqnr_db"] for row in sqnr["layers"]}
    assert set(by_layer) == {"conv1", "conv2", "fc", "probs"}
    assert by_layer["probs"][0] < 10 and by_layer["probs"][1] > 30, by_layer
    assert "Repairs: per-layer int8 SQNR (dB)" in (out / "report.html").read_text()
    assert "per-layer int8 SQNR median" in (out / "report.md").read_text()
    top1 = {a["id"]: a["accuracy"]["top1"] for a in report["artifacts"]}
    for fmt in ("tflite", "onnx", "openvino"):
        assert top1[f"{fmt}-int8"] >= top1[f"{fmt}-fp32"] - 0.01, top1


BAD = [
    (["--int8", "--bias-correction"], "no-data", ["--bias-correction", "--data CALIB"]),
    (["--relu6"], "data", ["repairs.equalize", "needs int8"]),
    (["--bias-correction", "--int8", "--qat", "--epochs", "1"], "data", ["repairs.bias_correction", "QAT"]),
    # learned rounding (tests/compression/test_adaround.py)
    (["--int8", "--adaround"], "no-data", ["--adaround", "--data CALIB"]),
    (["--adaround"], "data", ["repairs.adaround", "needs int8"]),
    (["--int8", "--adaround", "--bias-correction"], "data", ["repairs.adaround", "repairs.bias_correction",
                                                            "choose one"]),
    (["--int8", "--adaround", "--qat", "--epochs", "1"], "data", ["repairs.adaround", "QAT"]),
]


@pytest.mark.parametrize("args, data, words", BAD, ids=[" ".join(a) for a, _, _ in BAD])
def test_bad_repair_options_are_refused_before_any_work(args, data, words, digits, cli, tmp_path):
    calibration = ["--data", digits["calib"]] if data == "data" else []
    before = snapshot(tmp_path)
    result = cli("compress", digits["model"], *args, *calibration, "-o", tmp_path / "out")
    refusal_line(result, words)
    assert snapshot(tmp_path) == before


def test_relu6_in_a_recipe_needs_equalize(digits, cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("int8: true\nrepairs: {relu6: true}\n")
    before = snapshot(tmp_path)
    result = cli("compress", digits["model"], "--recipe", recipe, "--data", digits["calib"], "-o", tmp_path / "out")
    refusal_line(result, ["repairs.relu6", "needs repairs.equalize"])
    assert snapshot(tmp_path) == before


def test_repairs_on_a_model_without_keras_layers_are_a_note(digits, cli, tmp_path):
    """A SavedModel has no Keras layers to repair: exported as it is, said, and recorded."""
    from edgekit.support.keras_compat import tensorflow, tf_keras

    model = tf_keras().models.load_model(digits["model"], compile=False)
    tensorflow().saved_model.save(model, str(tmp_path / "sm"))
    out = tmp_path / "out"
    result = cli("compress", tmp_path / "sm", "--int8", "--equalize", "--bias-correction", "--formats", "tflite",
                 "--data", digits["calib"], "-o", out, "--no-bench")
    assert result.exit_code == 0, result.output
    assert "repairs: no Keras layers to repair in this model" in result.stderr
    assert "no Keras layers" in json.loads((out / "report.json").read_text())["repairs"]["not_applied"]
