"""Model intake end to end: Keras 3 and tf_keras files, SavedModel, the bridge, safe loading,
integrity checks, and `edgekit inspect`."""

from __future__ import annotations

import json
import zipfile

import h5py
import numpy as np
import pytest

from tests.conftest import refusal_line, snapshot


def _keras3():
    from edgekit.support.keras_compat import tensorflow

    tensorflow()  # TF_USE_LEGACY_KERAS before Keras 3 imports TensorFlow
    import keras

    return keras


def keras3_zoo():
    """A Keras 3 Functional model using every layer kind the bridge must translate."""
    keras = _keras3()
    L = keras.layers
    inp = L.Input((8, 8, 1), name="image")
    x = L.Rescaling(1.0, name="rescale")(inp)
    x = L.Normalization(mean=0.3, variance=0.1, name="norm")(x)
    x = L.ZeroPadding2D(1, name="pad")(x)
    x = L.Conv2D(16, 3, use_bias=False, name="stem")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(max_value=6.0, name="stem_relu6")(x)
    a = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    a = L.Activation("relu", name="dw_relu")(a)
    b = L.SeparableConv2D(16, 3, padding="same", activation="silu", name="sep")(x)
    x = L.Add(name="residual")([a, b])
    se = L.GlobalAveragePooling2D(name="se_pool")(x)
    se = L.Dense(16, activation="sigmoid", name="se_fc")(se)
    se = L.Reshape((1, 1, 16), name="se_reshape")(se)
    x = L.Multiply(name="se_excite")([x, se])
    x = L.Concatenate(name="pools")([L.MaxPooling2D(2, name="max")(x), L.AveragePooling2D(2, name="avg")(x)])
    x = L.Conv2D(32, 1, activation="relu", name="mix")(x)
    x = L.Dropout(0.1, name="drop")(x)
    flat = L.Dense(16, activation="relu", name="fc")(L.Flatten(name="flat")(x))
    x = L.Concatenate(name="heads")([L.GlobalAveragePooling2D(name="gap")(x), flat])
    out = L.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="zoo")


@pytest.fixture(scope="module")
def keras3_digits(digits, tmp_path_factory):
    """The zoo model trained on digits with Keras 3, saved as .keras and .h5."""
    keras = _keras3()
    keras.utils.set_random_seed(0)
    calib = np.load(digits["calib"])
    model = keras3_zoo()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(calib["x"], calib["y"], epochs=15, batch_size=32, verbose=0)
    root = tmp_path_factory.mktemp("k3")
    model.save(root / "zoo.keras")
    model.save(root / "zoo.h5")
    top1 = float(np.mean(np.argmax(model.predict(digits["x_val"], verbose=0), 1) == digits["y_val"]))
    return {"keras": root / "zoo.keras", "h5": root / "zoo.h5", "top1": top1}


def _compress(cli, model, digits, out, *extra):
    result = cli("compress", model, "--int8", "--data", digits["calib"], "--val", digits["val"], "-o", out, *extra)
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("suffix", ["keras", "h5"])
@pytest.mark.heavy
def test_keras3_model_is_bridged_and_compressed(suffix, cli, keras3_digits, digits, tmp_path):
    report = _compress(cli, keras3_digits[suffix], digits, tmp_path / "out")
    src = report["source"]
    assert src["keras"] == "keras3" and src["format"] == suffix and src["keras_version"].startswith("3.")
    assert src["bridge"]["bridged"] is True and src["bridge"]["max_abs_diff"] <= 1e-5
    assert keras3_digits["top1"] > 0.9
    assert report["reference"]["accuracy"]["top1"] == pytest.approx(keras3_digits["top1"], abs=1e-6)
    for a in report["artifacts"]:
        if a["precision"] == "fp32":
            assert a["verification"]["max_abs_diff"] <= 1e-4
        else:
            assert abs(a["accuracy"]["top1"] - keras3_digits["top1"]) <= 0.015


def test_bridge_output_equals_keras3_layer_by_layer(keras3_digits):
    """The rebuilt tf_keras model has every layer, and the same outputs on real digits."""
    from edgekit.intake.model import load_model

    keras = _keras3()
    original = keras.saving.load_model(keras3_digits["keras"], compile=False)
    loaded = load_model(keras3_digits["keras"])
    assert type(loaded.keras_model).__module__.startswith("tf_keras")
    assert [l.name for l in loaded.keras_model.layers] == [l.name for l in original.layers]
    x = np.random.default_rng(1).uniform(0, 1, (16, 8, 8, 1)).astype(np.float32)
    assert np.max(np.abs(loaded.keras_model.predict(x, verbose=0) - original.predict(x, verbose=0))) <= 1e-5


@pytest.mark.heavy
def test_keras3_sequential_mobilenetv2_bridges(tmp_path, cli):
    """keras.applications MobileNetV2 (alpha 0.35), small input to keep the test quick."""
    keras = _keras3()
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=5)
    model.save(tmp_path / "mnv2.h5")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).uniform(0, 1, (16, 32, 32, 3)).astype(np.float32))
    result = cli("compress", tmp_path / "mnv2.h5", "--int8", "--data", tmp_path / "calib.npz", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["source"]["bridge"]["bridged"] is True
    assert len(report["artifacts"]) == 6


def test_unbridgeable_layer_keeps_the_ptq_path(cli, digits, tmp_path):
    """hard_silu has no tf_keras equivalent: named, and int8 export still works from Keras 3."""
    keras = _keras3()
    L = keras.layers
    model = keras.Sequential([L.Input((8, 8, 1)), L.Conv2D(8, 3, name="conv"), L.Activation("hard_silu", name="hs"),
                              L.Flatten(), L.Dense(10, activation="softmax")])
    model.save(tmp_path / "hs.keras")
    result = cli("compress", tmp_path / "hs.keras", "--int8", "--data", digits["calib"], "--val", digits["val"],
                 "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "not rebuilt in tf_keras" in result.stderr and "hs" in result.stderr and "pruning and QAT do not" in result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["source"]["bridge"] == {"bridged": False,
                                          "reason": "no tf_keras equivalent for activation 'hard_silu': hs"}
    fp32 = [a for a in report["artifacts"] if a["precision"] == "fp32"]
    assert len(fp32) == 3 and all(a["verification"]["max_abs_diff"] <= 1e-4 for a in fp32)

    inspected = json.loads(cli("inspect", tmp_path / "hs.keras", "--json").stdout)
    assert inspected["bridge_untranslatable"] == ["hs (activation 'hard_silu')"]
    assert inspected["trainable_path"] is False and inspected["qat_unsupported"] is None


def test_bridge_mismatch_names_the_first_differing_layer(cli, keras3_digits, tmp_path, monkeypatch):
    import edgekit.intake.bridge as bridge

    real_copy = bridge._copy_weights

    def copy_then_spoil(source, target):
        real_copy(source, target)
        layer = target.get_layer("mix")
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel * 1.5, bias])

    monkeypatch.setattr(bridge, "_copy_weights", copy_then_spoil)
    before = snapshot(tmp_path)
    result = cli("compress", keras3_digits["keras"], "--int8", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "first layer that differs: mix (Conv2D)" in result.stderr
    assert snapshot(tmp_path) == before


def test_saved_model_folder(cli, digits, tmp_path):
    from edgekit.support.keras_compat import tensorflow, tf_keras

    model = tf_keras().models.load_model(digits["model"], compile=False)
    tensorflow().saved_model.save(model, str(tmp_path / "sm"))
    report = _compress(cli, tmp_path / "sm", digits, tmp_path / "out")
    assert report["source"]["format"] == "savedmodel" and report["source"]["macs"] is None
    assert report["source"]["params"] == model.count_params()
    ref = report["reference"]["accuracy"]["top1"]
    assert ref > 0.9
    assert all(abs(a["accuracy"]["top1"] - ref) <= 0.01 for a in report["artifacts"])
    assert (tmp_path / "out" / "sm.int8.tflite").exists()


def test_tf_keras_native_keras_format(cli, digits, tmp_path):
    from edgekit.support.keras_compat import tf_keras

    model = tf_keras().models.load_model(digits["model"], compile=False)
    model.save(tmp_path / "digits.keras")
    result = cli("inspect", tmp_path / "digits.keras", "--json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["format"] == "keras" and facts["keras"] == "tf_keras" and facts["bridge"] is None


# --- safe loading -------------------------------------------------------------------------

def _tf_keras():
    from edgekit.support.keras_compat import tf_keras

    return tf_keras()


def _lambda_h5(path):
    keras = _tf_keras()
    model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Lambda(lambda t: t * 2.0, name="double"),
                              keras.layers.Flatten(), keras.layers.Dense(10, name="probs")])
    model.save(path)
    return path


def _lambda_keras3(path):
    keras = _keras3()
    model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Lambda(lambda t: t * 2.0, name="double"),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    model.save(path)
    return path


def _custom_class_h5(path):
    from tests.custom_layers import Scale

    keras = _tf_keras()
    model = keras.Sequential([keras.layers.Input((8, 8, 1)), Scale(3.0, name="scale"), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    model.save(path)
    return path


def _tf_op_model(op):
    keras = _tf_keras()
    import tensorflow as tf

    inp = keras.layers.Input((8, 8, 1))
    x = keras.layers.Flatten()(inp)
    x = keras.layers.Dense(10)(x)
    return keras.Model(inp, op(tf, x))


def _tf_op_h5(path, op, rename=None):
    """A tf_keras model calling a TensorFlow op directly (TFOpLambda); `rename` rewrites the
    op's name in the stored config, as a hostile file would."""
    _tf_op_model(op).save(path)
    if rename:
        with h5py.File(path, "r+") as f:
            config = f.attrs["model_config"]
            text = config.decode() if isinstance(config, bytes) else config
            f.attrs["model_config"] = text.replace(*rename)
    return path


def _rewrite_keras_config(src, dst, change):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                change(config)
                data = json.dumps(config).encode()
            zout.writestr(item, data)
    return dst


def _plain_keras3_with(tmp, name, change):
    """A small Keras 3 model whose stored config was edited by `change`, as a hostile file would be."""
    keras = _keras3()
    model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.save(tmp / "plain.keras")
    return _rewrite_keras_config(tmp / "plain.keras", tmp / name, change)


def _foreign_module_keras3(tmp):
    def point_at_os(config):
        config["config"]["layers"][1]["module"] = "os"
        config["config"]["layers"][1]["class_name"] = "system"

    return _plain_keras3_with(tmp, "foreign.keras", point_at_os)


def _tfsm_keras3(tmp):
    def wrap_tfsm(config):
        config["config"]["layers"][1]["class_name"] = "TFSMLayer"

    return _plain_keras3_with(tmp, "tfsm.keras", wrap_tfsm)


REFUSALS = {
    "Lambda in tf_keras .h5": (lambda tmp: _lambda_h5(tmp / "l.h5"), ["Lambda: runs stored Python bytecode: double", "--trust-model"]),
    "Lambda in Keras 3 .keras": (lambda tmp: _lambda_keras3(tmp / "l.keras"), ["Lambda: runs stored Python bytecode: double", "--trust-model"]),
    "custom class": (lambda tmp: _custom_class_h5(tmp / "c.h5"), ["custom class, not a Keras built-in layer: scale", "--custom-objects"]),
    "TFOpLambda outside the allowlist": (
        lambda tmp: _tf_op_h5(tmp / "op.h5", lambda tf, x: tf.math.cumsum(x, axis=1)),
        ["tf.math.cumsum", "allowlist"]),
    "TFOpLambda renamed to file I/O": (
        lambda tmp: _tf_op_h5(tmp / "io.h5", lambda tf, x: tf.nn.relu6(x), rename=('"nn.relu6"', '"io.write_file"')),
        ["tf.io.write_file", "allowlist"]),
    "class from a foreign module": (_foreign_module_keras3, ["module os", "not in Keras"]),
    "TFSMLayer": (_tfsm_keras3, ["TFSMLayer", "loads another model"]),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_unsafe_model_is_refused_before_loading(name, cli, tmp_path):
    make, words = REFUSALS[name]
    model = make(tmp_path)
    before = snapshot(tmp_path)
    for command in (["compress", model, "--int8", "-o", tmp_path / "out"], ["inspect", model]):
        result = cli(*command)
        assert result.exit_code == 2, result.output
        (line,) = [l for l in result.stderr.splitlines() if l.startswith("error:")]
        assert "refused" in line
        for word in words:
            assert word in line, (word, line)
    assert snapshot(tmp_path) == before


def test_refused_tf_op_is_never_called(tmp_path, monkeypatch):
    """The hostile name is refused from the config alone: TensorFlow is not even asked."""
    import edgekit.intake.model as model_module
    from edgekit.errors import ModelError

    path = _tf_op_h5(tmp_path / "io.h5", lambda tf, x: tf.nn.relu6(x), rename=('"nn.relu6"', '"io.write_file"'))
    monkeypatch.setattr(model_module, "_load_tf_keras", lambda *a: pytest.fail("deserialized a refused model"))
    with pytest.raises(ModelError, match="io.write_file"):
        model_module.load_model(path)


def test_allowlisted_tf_ops_load_without_trust(cli, digits, tmp_path):
    path = _tf_op_h5(tmp_path / "ok.h5", lambda tf, x: tf.nn.softmax(tf.nn.relu6(x)))
    result = cli("compress", path, "--int8", "--data", digits["calib"], "--formats", "tflite", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("steps", ["inline", "child"])
@pytest.mark.heavy
def test_trust_model_loads_lambda_and_custom_classes(cli, digits, tmp_path, monkeypatch, steps):
    """In child steps too: the child loads the trusted file and finds the --custom-objects
    module on the parent's import path (tests/ is not in the current folder's reach of -I)."""
    monkeypatch.setenv("EDGEKIT_STEP_PROCESSES", steps)
    lam = _lambda_h5(tmp_path / "l.h5")
    result = cli("compress", lam, "--trust-model", "--formats", "onnx", "-o", tmp_path / "out1")
    assert result.exit_code == 0, result.output
    custom = _custom_class_h5(tmp_path / "c.h5")
    result = cli("compress", custom, "--trust-model", "--custom-objects", "tests.custom_layers", "--formats", "onnx",
                 "-o", tmp_path / "out2")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out2" / "report.json").read_text())
    assert report["artifacts"][0]["verification"]["max_abs_diff"] <= 1e-4


def test_custom_objects_module_must_import(cli, tmp_path):
    custom = _custom_class_h5(tmp_path / "c.h5")
    result = cli("compress", custom, "--trust-model", "--custom-objects", "no_such_module_xyz", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "--custom-objects no_such_module_xyz cannot be imported" in result.stderr


# --- integrity --------------------------------------------------------------------------------

def _truncated_keras(tmp, keras3_digits):
    data = keras3_digits["keras"].read_bytes()
    (tmp / "cut.keras").write_bytes(data[: len(data) // 2])
    return tmp / "cut.keras", ["cut.keras", "truncated or corrupted"]


def _garbled_config_keras(tmp, keras3_digits):
    with zipfile.ZipFile(keras3_digits["keras"]) as zin, zipfile.ZipFile(tmp / "bad.keras", "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, data[:100] if item.filename == "config.json" else data)
    return tmp / "bad.keras", ["bad.keras", "not valid JSON"]


def _huge_config_keras(tmp, keras3_digits):
    with zipfile.ZipFile(tmp / "huge.keras", "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        z.writestr("config.json", '{"class_name": "Sequential", "config": {}}' + " " * (64 << 20))
    return tmp / "huge.keras", ["huge.keras", "config.json inflates to over 64 MiB"]


def _nan_weights_h5(tmp, keras3_digits):
    keras = _tf_keras()
    model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10, name="head")])
    kernel, bias = model.get_layer("head").get_weights()
    kernel[3, 4] = np.nan
    model.get_layer("head").set_weights([kernel, bias])
    model.save(tmp / "nan.h5")
    return tmp / "nan.h5", ["nan.h5", "layer head has NaN or Inf weights"]


def _inf_weights_keras3(tmp, keras3_digits):
    keras = _keras3()
    model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10, name="head")])
    kernel, bias = model.get_layer("head").get_weights()
    bias[0] = np.inf
    model.get_layer("head").set_weights([kernel, bias])
    model.save(tmp / "inf.keras")
    return tmp / "inf.keras", ["inf.keras", "layer head has NaN or Inf weights"]


def _not_an_image_model(tmp, keras3_digits):
    keras = _tf_keras()
    model = keras.Sequential([keras.layers.Input((64,)), keras.layers.Dense(10)])
    model.save(tmp / "tabular.h5")
    return tmp / "tabular.h5", ["tabular.h5", "(batch, height, width, channels)", "(None, 64)"]


def _zip_without_config(tmp, keras3_digits):
    with zipfile.ZipFile(tmp / "empty.keras", "w") as z:
        z.writestr("readme.txt", "hello")
    return tmp / "empty.keras", ["empty.keras", "without config.json"]


def _functional_h5_with(tmp, old, new, name):
    """A tf_keras Functional model whose stored connections were edited: tf_keras itself
    would loop forever rebuilding it."""
    keras = _tf_keras()
    inp = keras.layers.Input((8, 8, 1), name="image")
    x = keras.layers.Flatten(name="flat")(inp)
    model = keras.Model(inp, keras.layers.Dense(10, name="probs")(x))
    path = tmp / name
    model.save(path)
    with h5py.File(path, "r+") as f:
        text = f.attrs["model_config"]
        text = text.decode() if isinstance(text, bytes) else text
        assert old in text
        f.attrs["model_config"] = text.replace(old, new)
    return path


def _dangling_reference(tmp, keras3_digits):
    path = _functional_h5_with(tmp, '[["flat", 0, 0, {}]]', '[["ghost", 0, 0, {}]]', "ghost.h5")
    return path, ["ghost.h5", "probs takes input from layer 'ghost'", "corrupted"]


def _call_out_of_range(tmp, keras3_digits):
    path = _functional_h5_with(tmp, '[["flat", 0, 0, {}]]', '[["flat", 3, 0, {}]]', "call.h5")
    return path, ["call.h5", "takes call 3 of layer 'flat'", "corrupted"]


INTEGRITY = {"dangling layer reference": _dangling_reference, "call index out of range": _call_out_of_range,
             "truncated .keras": _truncated_keras, "garbled config.json": _garbled_config_keras,
             "config.json over 64 MiB": _huge_config_keras, "NaN weights (tf_keras .h5)": _nan_weights_h5,
             "Inf weights (Keras 3 .keras)": _inf_weights_keras3, "input is not an image": _not_an_image_model,
             "zip without config.json": _zip_without_config}


@pytest.mark.parametrize("name", list(INTEGRITY))
def test_integrity_failures_exit_2(name, cli, keras3_digits, tmp_path):
    model, words = INTEGRITY[name](tmp_path, keras3_digits)
    before = snapshot(tmp_path)
    result = cli("compress", model, "--int8", "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    for word in words:
        assert word in line, (word, line)
    assert "Traceback" not in result.stderr
    assert snapshot(tmp_path) == before


# --- inspect -----------------------------------------------------------------------------------

def test_inspect_tf_keras_model(cli, digits):
    result = cli("inspect", digits["model"], "--json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["format"] == "h5" and facts["keras"] == "tf_keras" and facts["keras_version"].startswith("2.")
    assert facts["input_shape"] == [None, 8, 8, 1] and facts["output_shape"] == [None, 10]
    assert facts["params"] == 85066 and facts["macs"] == 371456
    assert facts["size_bytes"] == digits["model"].stat().st_size
    assert facts["qat_unsupported"] == [] and facts["bridge_untranslatable"] == [] and facts["trainable_path"]
    table = cli("inspect", digits["model"]).stdout
    assert "85,066" in table and "371,456" in table and "tf_keras" in table


def test_inspect_keras3_model_has_no_qat_gaps_left(cli, keras3_digits):
    facts = json.loads(cli("inspect", keras3_digits["h5"], "--json").stdout)
    assert facts["keras"] == "keras3" and facts["bridge"]["bridged"] is True
    # BatchNormalization after a Conv folds; Rescaling, Normalization and the SE Multiply, which tfmot
    # leaves float, edgekit's scheme quantizes at their output (as the int8 files do): nothing is left.
    assert facts["qat_unsupported"] == []


def test_inspect_names_batchnorm_after_activation(cli, tmp_path):
    keras = _tf_keras()
    L = keras.layers
    model = keras.Sequential([L.Input((8, 8, 1)), L.Conv2D(4, 3, name="conv"), L.BatchNormalization(name="bn_ok"),
                              L.ReLU(name="relu"), L.BatchNormalization(name="bn_after_relu"), L.Flatten(),
                              L.Dense(3)])
    model.save(tmp_path / "bn.h5")
    facts = json.loads(cli("inspect", tmp_path / "bn.h5", "--json").stdout)
    assert facts["qat_unsupported"] == ["bn_after_relu (BatchNormalization)"]


# --- classes that ship with Keras ---------------------------------------------------------------

@pytest.fixture(scope="module")
def layer_scale_model(digits, tmp_path_factory):
    """A Keras 3 CNN holding ConvNeXt's LayerScale (keras.src.applications.convnext), trained on digits."""
    keras = _keras3()
    from keras.src.applications.convnext import LayerScale

    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = L.Input((8, 8, 1))
    x = L.Conv2D(16, 3, activation="relu")(inp)
    x = LayerScale(0.5, 16, name="layer_scale")(x)
    out = L.Dense(10, activation="softmax")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    calib = np.load(digits["calib"])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(calib["x"], calib["y"], epochs=20, verbose=0)  # trained past a flat softmax: agreement means something
    path = tmp_path_factory.mktemp("layerscale") / "scaled.keras"
    model.save(path)
    return path


@pytest.mark.heavy
def test_a_keras_shipped_class_loads_without_trust_and_is_bridged(layer_scale_model, digits, cli, tmp_path):
    out = tmp_path / "out"
    result = cli("compress", layer_scale_model, "--int8", "--data", digits["calib"], "--val", digits["val"],
                 "-o", out, "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["source"]["bridge"]["bridged"] and report["source"]["bridge"]["max_abs_diff"] <= 1e-5
    assert {a["id"] for a in report["artifacts"]} == {f"{f}-{p}" for f in ("tflite", "onnx", "openvino")
                                                      for p in ("fp32", "int8")}
    agreements = {a["id"]: a["agreement"] for a in report["artifacts"]}
    assert all(agreements[f"{f}-fp32"] == 1.0 and agreements[f"{f}-int8"] >= 0.9
               for f in ("tflite", "onnx", "openvino")), agreements


@pytest.mark.parametrize("module,class_name", [
    ("my_company.convnext", "LayerScale"),               # the same name from another module
    ("keras.src.applications.convnext_fake", "LayerScale"),  # a module Keras does not have
    ("keras.src.applications.convnext", "StochasticDepthX"),  # a class that module does not define
    ("keras.src.applications.convnext", "Lambda"),        # opaque classes stay refused wherever they come from
    ("keras.src.layers", "TFSMLayer"),
    ("keras.src.applications.convnext", "np"),            # a name there that is not a layer class
])
def test_a_look_alike_of_a_shipped_class_is_refused(layer_scale_model, module, class_name, cli, tmp_path):
    def impostor(config):
        layer = next(l for l in config["config"]["layers"] if l["class_name"] == "LayerScale")
        layer["module"], layer["class_name"] = module, class_name

    path = _rewrite_keras_config(layer_scale_model, tmp_path / "impostor.keras", impostor)
    out = tmp_path / "out"
    refusal_line(cli("compress", path, "-o", out), ["impostor.keras", "layer_scale", "refused", "--trust-model"])
    assert not out.exists()
