"""Cross-layer equalization (issue 26): the float function stays the same, an activation-outlier
channel is scaled back into line, and layers it cannot pass are left alone and named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.compression.repairs.equalize import equalize, find_pairs
from tests.conftest import refusal_line, snapshot


def _keras():
    from edgekit.support.keras_compat import tf_keras

    return tf_keras()


def _sqnr_db(x: np.ndarray) -> float:
    """The median channel's signal over its error on one symmetric per-tensor int8 grid over x
    (channels last): what the grid leaves of the channels that are not the outlier."""
    step = np.abs(x).max() / 127
    error = x - np.round(x / step) * step
    signal = np.sum(x.reshape(-1, x.shape[-1]) ** 2, axis=0)
    noise = np.maximum(np.sum(error.reshape(-1, x.shape[-1]) ** 2, axis=0), 1e-30)
    return float(np.median(10 * np.log10(np.maximum(signal, 1e-30) / noise)))


def _model(outlier: float = 1.0, seed: int = 0):
    """conv → max-pool → conv → BN → ReLU → depthwise → pointwise → GAP → dense → dense, plus a
    ReLU6 conv on a side branch; channel 3 of conv_a carries `outlier` times its values and
    conv_b reads it `outlier` times weaker (the same function)."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, activation="relu", name="conv_a")(inputs)
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.Conv2D(16, 3, name="conv_b")(x)
    x = layers.BatchNormalization(name="bn_b")(x)
    x = layers.ReLU(name="relu_b")(x)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(x)
    x = layers.Conv2D(16, 1, name="pw")(x)
    side = layers.Conv2D(16, 1, activation="relu6", name="side6")(x)
    x = layers.Add(name="join")([x, side])
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(12, activation="relu", name="fc")(x)
    outputs = layers.Dense(5, activation="softmax", name="probs")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    bn = model.get_layer("bn_b")
    bn.set_weights([rng.uniform(0.5, 2, 16), rng.normal(0, 0.1, 16), rng.normal(0, 0.1, 16), rng.uniform(0.5, 2, 16)])
    a, b = model.get_layer("conv_a"), model.get_layer("conv_b")
    (ka, ba), (kb, bb) = a.get_weights(), b.get_weights()
    ka[..., 3] *= outlier
    ba[3] = 0.1 * outlier
    kb[:, :, 3, :] /= outlier
    a.set_weights([ka, ba])
    b.set_weights([kb, bb])
    return model


def test_the_float_function_is_unchanged():
    model = _model(outlier=1000.0)
    x = np.random.default_rng(1).uniform(0, 1, (32, 16, 16, 3)).astype(np.float32)
    result = equalize(model)
    before, after = model.predict(x, verbose=0), result.model.predict(x, verbose=0)
    assert np.max(np.abs(before - after)) <= 1e-5
    assert result.folded == ["bn_b"]
    equalized = {(p["from"], p["to"]) for p in result.pairs}
    assert equalized == {("conv_a", "conv_b"), ("conv_b", "dw"), ("dw", "pw"), ("fc", "probs")}
    assert model.get_layer("conv_a").get_weights()[0][..., 3].max() > 100  # the caller's model is untouched


def test_an_activation_outlier_is_scaled_back_into_line():
    model = _model(outlier=1000.0)
    x = np.random.default_rng(2).uniform(0, 1, (64, 16, 16, 3)).astype(np.float32)
    result = equalize(model)
    pair = next(p for p in result.pairs if p["from"] == "conv_a")
    assert pair["range_spread_before"] > 300 and pair["range_spread_after"] < 10

    def conv_a_output(m):
        keras = _keras()
        return keras.Model(m.inputs, m.get_layer("conv_a").output).predict(x, verbose=0)

    # what a per-tensor int8 grid keeps of conv_a's output (its activations) and of conv_a's weights
    assert _sqnr_db(conv_a_output(result.model)) > _sqnr_db(conv_a_output(model)) + 20
    assert (_sqnr_db(result.model.get_layer("conv_a").get_weights()[0])
            > _sqnr_db(model.get_layer("conv_a").get_weights()[0]) + 20)


def test_layers_it_cannot_pass_are_named_with_the_reason():
    result = equalize(_model())
    why = {entry["layer"]: entry["why"] for entry in result.left_alone}
    assert "relu6" in why["side6"]
    assert "goes to 2 layers" in why["pw"]  # pw feeds the Add and the ReLU6 branch


def test_a_model_without_eligible_pairs_is_returned_unchanged():
    keras = _keras()
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="swish", name="c")(inputs)
    outputs = keras.layers.Dense(3, name="d")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    result = equalize(model)
    assert result.pairs == []
    assert [e["layer"] for e in result.left_alone] == ["c"] and "swish" in result.left_alone[0]["why"]
    x = np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 1)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x, verbose=0), result.model.predict(x, verbose=0))
    assert find_pairs(model)[0] == []


# --- through `edgekit compress` -------------------------------------------------------------

def test_equalize_brings_an_outlier_model_back_in_every_format_with_every_conv_and_dense_integer(
        outlier_digits, cli, tmp_path):
    """Outliers ~400× in conv1 and in fc (the float function unchanged): plain int8 is near chance;
    with --equalize every int8 file is within 1 top-1 point of float and runs every conv/dense
    op as an integer kernel (read back from the file)."""
    import json

    from edgekit.demo import add_activation_outliers
    from edgekit.formats.facts import read_facts

    model = tmp_path / "twice.h5"
    add_activation_outliers(outlier_digits["model"], model, layer="conv1", consumer="conv2")
    out = tmp_path / "out"
    result = cli("compress", model, "--int8", "--equalize", "--data", outlier_digits["calib"],
                 "--val", outlier_digits["val"], "-o", out, "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    equalized = report["repairs"]["equalize"]
    assert {(p["from"], p["to"]) for p in equalized["pairs"]} == {("conv1", "conv2"), ("fc", "probs")}
    assert all(p["range_spread_before"] > 100 and p["range_spread_after"] < 5 for p in equalized["pairs"])
    assert equalized["max_abs_change"] <= 1e-5  # checked by the pipeline on the evidence inputs
    assert report["recipe"]["repairs"] == {"equalize": True, "relu6": False, "bias_correction": False,
                                           "adaround": False, "batchnorm_as_conv": False, "dead_channels": False}
    top1 = {a["id"]: a["accuracy"]["top1"] for a in report["artifacts"]}
    for fmt in ("tflite", "onnx", "openvino"):
        assert top1[f"{fmt}-int8"] >= top1[f"{fmt}-fp32"] - 0.01, top1
        entry = next(a for a in report["artifacts"] if a["id"] == f"{fmt}-int8")
        facts = read_facts(out / Path(entry["path"]).name, fmt)
        assert facts.mac_ops and all(op.int8_compute for op in facts.mac_ops), (fmt, facts.mac_ops)

    plain = tmp_path / "plain"
    result = cli("compress", model, "--int8", "--formats", "tflite", "--data", outlier_digits["calib"],
                 "--val", outlier_digits["val"], "-o", plain, "-q")
    assert result.exit_code == 0, result.output
    plain_top1 = {a["id"]: a["accuracy"]["top1"] for a in json.loads((plain / "report.json").read_text())["artifacts"]}
    assert plain_top1["tflite-int8"] < 0.3  # what the repair is for


def test_equalize_on_a_model_with_nothing_to_equalize_is_a_note(cli, tmp_path, digits):
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="swish"),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    path = tmp_path / "swish.h5"
    model.save(path)
    result = cli("compress", path, "--int8", "--equalize", "--formats", "tflite", "--data", digits["calib"],
                 "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "equalize: no pair of conv/dense layers" in result.stderr


BAD = [
    (["--equalize"], ["repairs.equalize", "needs int8"]),
    (["--equalize", "--int8", "--qat", "--epochs", "1"], ["repairs.equalize", "QAT"]),
]


@pytest.mark.parametrize("args, words", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_equalize_options_are_refused_before_any_work(args, words, digits, cli, tmp_path):
    before = snapshot(tmp_path)
    result = cli("compress", digits["model"], *args, "--data", digits["calib"], "-o", tmp_path / "out")
    refusal_line(result, words)
    assert snapshot(tmp_path) == before


def test_an_unknown_repair_in_a_recipe_is_named(digits, cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("int8: true\nrepairs: {equalise: true}\n")
    before = snapshot(tmp_path)
    result = cli("compress", digits["model"], "--recipe", recipe, "--data", digits["calib"], "-o", tmp_path / "out")
    refusal_line(result, ["equalise", "in repairs, equalize"])
    assert snapshot(tmp_path) == before


def test_a_repair_that_changed_the_function_writes_nothing(outlier_digits, cli, tmp_path, monkeypatch):
    """The pipeline checks the equalized model against the one it came from on the evidence
    inputs: a repair that changed the float function is edgekit's bug (exit 3), and no file of
    the changed model is written."""
    from edgekit.compression.repairs import equalize as module

    real = module.equalize

    def broken(model, **options):
        result = real(model, **options)
        layer = result.model.get_layer("fc")
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel * 1.5, bias])
        return result

    monkeypatch.setattr(module, "equalize", broken)
    before = snapshot(tmp_path)
    result = cli("compress", outlier_digits["model"], "--int8", "--equalize", "--data", outlier_digits["calib"],
                 "-o", tmp_path / "out")
    assert result.exit_code == 3, result.output
    assert "equalize changed the model's outputs" in result.stderr
    assert snapshot(tmp_path) == before
