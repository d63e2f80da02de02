"""Dead channels (issue 26, repairs.dead_channels): a BatchNorm channel of variance 0 behind a
ReLU that never fires folds into a kernel 1/√ε too wide for a per-tensor grid. Silencing it keeps
the function exactly where the channel is constant, and gives the layer its SQNR back; a channel
the evidence inputs find alive is left as it is."""

from __future__ import annotations

import json

import numpy as np

from edgekit.compression.repairs.dead import silence_dead_channels
from edgekit.compression.repairs.equalize import _out_ranges, _spread
from edgekit.compression.repairs.sqnr import layer_sqnr
from edgekit.compression.stages.fold import fold_batchnorm
from tests.conftest import refusal_line


def _model_with_a_dead_channel(seed: int = 0, dead_input: bool = True):
    """conv → BN → ReLU6 → depthwise → BN → ReLU6 → GAP → dense. Channel 2 of the first BN outputs
    a constant −1 (ReLU6: 0), so the depthwise BN saw channel 2 constant and holds variance 0 there,
    as training leaves it; its γ and the untrained depthwise kernel are what they were at init.
    `dead_input=False`: the variance is 0 but the channel is alive (statistics that lie)."""
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inputs = keras.Input((10, 10, 3))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(6.0, name="relu_a")(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = layers.BatchNormalization(name="dw_bn")(x)
    x = layers.ReLU(6.0, name="relu_b")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, layers.Dense(4, name="logits")(x))
    rng = np.random.default_rng(seed)
    gamma, beta = rng.uniform(0.5, 1.5, 8), rng.normal(0.5, 0.1, 8)
    if dead_input:
        gamma[2], beta[2] = 0.0, -1.0  # ReLU6(−1) = 0 on every input
    model.get_layer("bn").set_weights([gamma, beta, rng.normal(0, 0.1, 8), rng.uniform(0.5, 2, 8)])
    variance = rng.uniform(0.5, 2, 8)
    variance[2] = 0.0
    mean = rng.normal(0, 0.1, 8)
    mean[2] = 0.0  # what a channel of zeros averages to
    model.get_layer("dw_bn").set_weights([rng.uniform(0.5, 1.5, 8), rng.normal(0.5, 0.1, 8), mean, variance])
    return model


def _inputs(n: int = 32) -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 1, (n, 10, 10, 3)).astype(np.float32)


def test_silencing_a_dead_channel_keeps_the_function_and_the_per_tensor_grid():
    model = _model_with_a_dead_channel()
    x = _inputs()
    before = model.predict(x, verbose=0)
    result = silence_dead_channels(model)
    assert [s["layer"] for s in result.silenced] == ["dw_bn"] and result.silenced[0]["channels"] == [2]
    assert result.silenced[0]["fold_over_median"] > 20  # 1/√ε against variances of ~1
    assert np.max(np.abs(result.model.predict(x, verbose=0) - before)) <= 1e-5
    assert model.get_layer("dw_bn").gamma.numpy()[2] != 0  # the caller's model is untouched

    folded_before, folded_after = fold_batchnorm(model)[0], fold_batchnorm(result.model)[0]
    spread_before = _spread(_out_ranges(folded_before.get_layer("dw")))
    spread_after = _spread(_out_ranges(folded_after.get_layer("dw")))
    assert spread_before > 10 and spread_after < 3, (spread_before, spread_after)
    sqnr_before = layer_sqnr(folded_before, folded_before, x, per_tensor=True)["dw"]
    sqnr_after = layer_sqnr(folded_after, folded_after, x, per_tensor=True)["dw"]
    assert sqnr_after > sqnr_before + 10, (sqnr_before, sqnr_after)


def test_a_model_without_dead_channels_is_returned_as_it_is():
    model = _model_with_a_dead_channel()
    weights = model.get_layer("dw_bn").get_weights()
    weights[3][2] = 1.0
    model.get_layer("dw_bn").set_weights(weights)
    result = silence_dead_channels(model)
    assert result.model is model and result.silenced == []


def test_per_tensor_turns_it_on_and_a_channel_alive_on_the_evidence_is_left_alone(cli, tmp_path):
    """--per-tensor silences the dead channel in every file (report.json says which); where the
    BatchNorm's variance 0 lies (the channel varies on the evidence inputs) nothing is changed and
    a note says so; a recipe turns the repair off."""
    x = _inputs(64)
    y = np.random.default_rng(2).integers(0, 4, 64)
    np.savez(tmp_path / "calib.npz", x=x, y=y)
    for name, dead_input in (("dead", True), ("lying", False)):
        _model_with_a_dead_channel(dead_input=dead_input).save(tmp_path / f"{name}.h5")
    out = tmp_path / "out"
    result = cli("compress", tmp_path / "dead.h5", "--int8", "--per-tensor", "--data", tmp_path / "calib.npz",
                 "--formats", "tflite", "-o", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "report.json").read_text())["repairs"]["dead_channels"]
    assert record["silenced"][0]["layer"] == "dw_bn" and record["max_abs_change"] <= 1e-5
    assert "dead_channels: 1 channel(s)" in result.output

    lying = cli("compress", tmp_path / "lying.h5", "--int8", "--per-tensor", "--data", tmp_path / "calib.npz",
                "--formats", "tflite", "-o", tmp_path / "out2")
    assert lying.exit_code == 0, lying.output
    record = json.loads((tmp_path / "out2" / "report.json").read_text())["repairs"]["dead_channels"]
    assert record["silenced"] == [] and record["max_abs_change"] > 1e-3
    assert "vary on the evidence inputs" in lying.output and "left as they are" in lying.output

    recipe = tmp_path / "off.yaml"
    recipe.write_text("int8: true\nper_tensor: true\nformats: [tflite]\nrepairs: {dead_channels: false}\n")
    off = cli("compress", tmp_path / "dead.h5", "--recipe", recipe, "--data", tmp_path / "calib.npz",
              "-o", tmp_path / "out3")
    assert off.exit_code == 0, off.output
    assert "dead_channels" not in (json.loads((tmp_path / "out3" / "report.json").read_text())["repairs"] or {})


def test_dead_channels_without_int8_is_refused(cli, tmp_path):
    _model_with_a_dead_channel().save(tmp_path / "dead.h5")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("repairs: {dead_channels: true}\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = cli("compress", tmp_path / "dead.h5", "--recipe", recipe, "-o", tmp_path / "out")
    refusal_line(result, ["repairs.dead_channels", "int8"])
    assert sorted(p.name for p in tmp_path.iterdir()) == before
