"""QAT biases on the int32 grid of the int8 files (issue 22): a TFLite file stores each conv/dense
bias in steps of input scale × weight scale; tfmot trains float biases, so the file rounded them
itself and computed something slightly different from the QAT model it was checked against."""

from __future__ import annotations

import numpy as np

from tests.qat_tflite import qat_int8_interpreter

LAYERS = ("c1", "dw", "c2", "head")


def _qat_model():
    import tensorflow_model_optimization as tfmot

    from edgekit.compression.stages.qat import calibrate_ranges
    from edgekit.compression.stages.qat_scheme import qat_scheme
    from edgekit.support.keras_compat import tf_keras

    keras, qk = tf_keras(), tfmot.quantization.keras
    keras.utils.set_random_seed(0)
    L = keras.layers
    inputs = L.Input((12, 12, 3))
    x = L.Conv2D(8, 3, activation="relu", name="c1")(inputs)
    x = L.DepthwiseConv2D(3, name="dw")(L.ZeroPadding2D(1, name="pad")(x))  # the grid passes the padding
    x = L.Conv2D(8, 1, name="c2")(L.ReLU(6.0, name="r6")(x))
    model = keras.Model(inputs, L.Dense(10, name="head")(L.GlobalAveragePooling2D(name="gap")(x)))
    rng = np.random.default_rng(0)
    for name in LAYERS:  # biases of a trained size, well off any grid
        bias = model.get_layer(name).bias
        bias.assign(rng.normal(0, 0.3, bias.shape).astype(np.float32))
    with qk.quantize_scope():
        qat = qk.quantize_apply(qk.quantize_annotate_model(model), qat_scheme(False)[1])
    x = rng.uniform(0, 1, (64, 12, 12, 3)).astype(np.float32)
    calibrate_ranges(qat, x)
    return qat, x


def _file_biases(qat, x, folder) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{layer: (the bias the int8 TFLite file computes with, its step)}: int32 values × scales."""
    interpreter = qat_int8_interpreter(qat, x, folder)
    found = {}
    for tensor in interpreter.get_tensor_details():
        layer = next((n for n in LAYERS if f"quant_{n}/" in tensor["name"]), None)
        if tensor["dtype"] == np.int32 and layer and len(tensor["shape"]) == 1:
            scales = tensor["quantization_parameters"]["scales"]
            found[layer] = (interpreter.get_tensor(tensor["index"]).astype(np.float64) * scales, scales)
    assert set(found) == set(LAYERS), found.keys()
    return found


def _qat_biases(qat) -> dict[str, np.ndarray]:
    return {n: qat.get_layer(f"quant_{n}").layer.bias.numpy().astype(np.float64) for n in LAYERS}


def test_the_int8_file_stores_exactly_the_biases_the_qat_model_computes_with(tmp_path):
    from edgekit.compression.stages.qat_bias import round_biases_to_int32_grid

    qat, x = _qat_model()
    before = _qat_biases(qat)
    stored = _file_biases(qat, x, tmp_path / "before")
    # Without rounding the file's biases are not the model's: off by up to half a step (the test can fail).
    assert max(np.max(np.abs(stored[n][0] - before[n]) / stored[n][1]) for n in LAYERS) > 0.25

    assert round_biases_to_int32_grid(qat) == len(LAYERS)
    after = _qat_biases(qat)
    stored = _file_biases(qat, x, tmp_path / "after")
    for name in LAYERS:
        values, steps = stored[name]
        assert np.max(np.abs(values - after[name]) / steps) < 0.02, name  # the same (float32) numbers
        assert np.max(np.abs(after[name] - before[name]) / steps) <= 0.5 + 1e-3, name  # moved under half a step


def test_rounding_twice_changes_nothing_and_a_second_model_in_one_process_is_rounded_too():
    """A second QAT model in one process (a sweep, the API) names its input range
    "quantize_layer_1_min": its first conv is rounded all the same."""
    from edgekit.compression.stages.qat_bias import round_biases_to_int32_grid

    _qat_model()
    qat, _ = _qat_model()
    assert qat.layers[1].name != "quantize_layer"
    assert round_biases_to_int32_grid(qat) == len(LAYERS)
    once = _qat_biases(qat)
    round_biases_to_int32_grid(qat)
    for name in LAYERS:
        np.testing.assert_array_equal(_qat_biases(qat)[name], once[name])
