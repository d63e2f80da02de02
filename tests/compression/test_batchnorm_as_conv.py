"""BatchNorms that do not fold become 1×1 depthwise convolutions (issue 26): the same function,
and ONNX files of DenseNet-style blocks become integer-only (ONNX Runtime has no integer
BatchNormalization)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.compression.repairs.batchnorm import batchnorm_as_conv
from tests.conftest import refusal_line, snapshot


def _keras():
    from edgekit.support.keras_compat import tf_keras

    return tf_keras()


def _dense_block_model(seed: int = 0):
    """input → BN (on the input) → conv; two convs concatenated → BN → ReLU → conv (DenseNet's
    pre-activation); an add → BN; one conv → BN that does fold. BatchNorm statistics drawn away
    from identity so that a wrong rewrite shows."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inputs = keras.Input((10, 10, 3))
    x = layers.BatchNormalization(name="bn_input")(inputs)
    a = layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv_a")(x)
    a = layers.BatchNormalization(name="bn_folds")(a)
    b = layers.Conv2D(8, 1, name="conv_b")(x)
    x = layers.Concatenate(name="concat")([a, b])
    x = layers.BatchNormalization(name="bn_concat")(x)
    x = layers.ReLU(name="relu")(x)
    c = layers.Conv2D(16, 3, padding="same", name="conv_c")(x)
    x = layers.Add(name="add")([c, x])
    x = layers.BatchNormalization(name="bn_add")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(4, activation="softmax", name="probs")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(0, 0.5, n), rng.normal(0, 1, n), rng.uniform(0.5, 3, n)])
    return model


def test_batchnorms_that_do_not_fold_become_depthwise_convs_computing_the_same():
    model = _dense_block_model()
    x = np.random.default_rng(1).normal(0, 1, (32, 10, 10, 3)).astype(np.float32)
    result = batchnorm_as_conv(model)
    assert result.folded == ["bn_folds"]
    assert sorted(result.converted) == ["bn_add", "bn_concat", "bn_input"]
    kinds = {layer.name: type(layer).__name__ for layer in result.model.layers}
    assert all(kinds[name] == "DepthwiseConv2D" for name in result.converted)
    assert "BatchNormalization" not in kinds.values()
    before = model.predict(x, verbose=0)
    after = result.model.predict(x, verbose=0)
    assert np.max(np.abs(after - before)) <= 1e-5
    assert model.get_layer("bn_concat").get_weights()[0].shape == (16,)  # the caller's model is not changed


def test_a_model_without_batchnorm_is_returned_as_it_is():
    keras = _keras()
    inputs = keras.Input((6, 6, 1))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(inputs))))
    result = batchnorm_as_conv(model)
    assert result.model is model and result.converted == [] and result.folded == []


@pytest.fixture(scope="module")
def dense_block(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dense_block")
    model = _dense_block_model()
    model.save(folder / "dense_block.h5")
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (64, 10, 10, 3)).astype(np.float32)
    np.savez(folder / "calib.npz", x=x, y=rng.integers(0, 4, 64))
    return folder


def test_integer_only_onnx_has_no_float_batchnorm_and_the_opt_out_is_refused(dense_block, cli, tmp_path):
    """--integer-only turns the rewrite on: the ONNX file holds no BatchNormalization and no op in
    float; a recipe that turns it off gets the BatchNorms named, exit 2, nothing written."""
    from edgekit.formats.onnx.facts import read_facts

    out = tmp_path / "out"
    result = cli("compress", dense_block / "dense_block.h5", "--integer-only", "--int8", "--data",
                 dense_block / "calib.npz", "--formats", "onnx,tflite", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    record = report["repairs"]["batchnorm_as_conv"]
    assert sorted(record["converted"]) == ["bn_add", "bn_concat", "bn_input"]
    assert record["max_abs_change"] <= 1e-5
    onnx_int8 = next(a for a in report["artifacts"] if a["id"] == "onnx-int8")
    facts = read_facts(out / onnx_int8["files"][0])
    assert "BatchNormalization" not in facts.ops
    assert facts.float_other_ops == [] and all(op.int8_compute for op in facts.mac_ops)

    recipe = tmp_path / "r.yaml"
    recipe.write_text("int8: true\ninteger_only: true\nformats: [onnx]\nrepairs: {batchnorm_as_conv: false}\n")
    before = snapshot(tmp_path)
    refused = cli("compress", dense_block / "dense_block.h5", "--recipe", recipe, "--data", dense_block / "calib.npz",
                  "-o", tmp_path / "out2")
    refusal_line(refused, ["--integer-only", "BatchNormalization"])
    assert snapshot(tmp_path) == before
