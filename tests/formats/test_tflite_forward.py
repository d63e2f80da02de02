"""The TFLite export saves only the model's forward pass (export/tflite.save_forward) instead of
letting from_keras_model save the whole Keras object: the files must be the same."""

from __future__ import annotations

import os

import numpy as np
import pytest

from edgekit.support.keras_compat import tensorflow, tf_keras


def _convert(converter, precision: str, calib: np.ndarray) -> bytes:
    tf = tensorflow()
    if precision == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None]] for x in calib)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def _run(flatbuffer: bytes, x: np.ndarray):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for sample in x:
        interpreter.set_tensor(inp["index"], sample[None])
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"])[0])
    return np.stack(results), interpreter.get_signature_list()


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_forward_only_savedmodel_converts_to_the_same_file_as_from_keras_model(digits, tmp_path, precision):
    from edgekit.formats.tflite.export import save_forward

    tf = tensorflow()
    model = tf_keras().models.load_model(digits["model"], compile=False)
    calib = np.load(digits["calib"])["x"][:50]
    folder = tmp_path / "forward"
    assert save_forward(model, model.input_shape[1:], str(folder))
    ours = _convert(tf.lite.TFLiteConverter.from_saved_model(str(folder)), precision, calib)
    theirs = _convert(tf.lite.TFLiteConverter.from_keras_model(model), precision, calib)
    x = digits["x_val"][:64]
    got, got_signature = _run(ours, x)
    want, want_signature = _run(theirs, x)
    np.testing.assert_array_equal(got, want)
    assert got_signature == want_signature  # same input and output names as Keras gives them


def test_conversion_leaves_no_savedmodel_behind(digits, tmp_path):
    from edgekit.formats.source import keras_source
    from edgekit.formats.tflite.export import convert

    source = keras_source(digits["model"], (8, 8, 1))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    previous = os.getcwd()
    os.chdir(scratch)  # a step runs in the scratch folder
    try:
        convert(source, "fp32", str(tmp_path / "m.tflite"), None, "float32", qat=False)
    finally:
        os.chdir(previous)
    assert (tmp_path / "m.tflite").stat().st_size > 0
    assert list(scratch.iterdir()) == []
