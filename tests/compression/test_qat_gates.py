"""Swish and sigmoid gates in QAT (issue 22, EfficientNet): the int8 files compute a swish as
LOGISTIC (output fixed to 1/256 steps) then MUL, and a conv's fused swish after rounding the conv's
output. The QAT model now rounds in the same places, so it computes what the TFLite file computes."""

from __future__ import annotations

import numpy as np
import pytest

from tests.qat_tflite import qat_int8_interpreter


def _se_block_model(sequential: bool = False):
    """Conv(swish) → Conv → Activation(swish) → squeeze-excite (Dense swish, Dense sigmoid, Multiply)
    → Conv(swish) → logits: the gates of an EfficientNet block."""
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    keras.utils.set_random_seed(0)
    L = keras.layers
    if sequential:
        return keras.Sequential([L.Input((12, 12, 3)), L.Conv2D(8, 3, activation="swish", name="c1"),
                                 L.DepthwiseConv2D(3, activation="sigmoid", name="dw"), L.Flatten(name="flat"),
                                 L.Dense(10, name="head")])
    inputs = L.Input((12, 12, 3))
    x = L.Conv2D(16, 3, padding="same", activation="swish", name="c1")(inputs)
    x = L.Activation("swish", name="a2")(L.Conv2D(16, 3, padding="same", name="c2")(x))
    gate = L.Dense(4, activation="swish", name="reduce")(L.GlobalAveragePooling2D(name="gap")(x))
    gate = L.Reshape((1, 1, 16), name="r")(L.Dense(16, activation="sigmoid", name="expand")(gate))
    x = L.Conv2D(16, 3, padding="same", activation="swish", name="c3")(L.Multiply(name="excite")([x, gate]))
    return keras.Model(inputs, L.Dense(10, name="head")(L.GlobalAveragePooling2D(name="gap2")(x)))


@pytest.mark.parametrize("sequential", [False, True])
def test_split_gates_computes_the_same_function(sequential):
    from edgekit.compression.stages.fold import split_gates

    model = _se_block_model(sequential)
    split, names = split_gates(model)
    expected = {False: ["c1", "reduce", "expand", "c3"], True: ["c1", "dw"]}[sequential]
    assert names == expected
    for name in names:
        layer = split.get_layer(name)
        assert layer.activation.__name__ == "linear"
        gate = layer.outbound_nodes[0].outbound_layer
        assert type(gate).__name__ == "Activation" and gate.name.startswith(name)
    x = np.random.default_rng(1).uniform(0, 1, (8, 12, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(split(x).numpy(), model(x).numpy(), atol=1e-6)


def test_a_model_without_gates_is_returned_as_it_is():
    from edgekit.support.keras_compat import tf_keras
    from edgekit.compression.stages.fold import split_gates

    keras = tf_keras()
    model = keras.Sequential([keras.layers.Input((4, 4, 1)), keras.layers.Conv2D(2, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(3)])
    assert split_gates(model) == (model, [])


def test_the_qat_model_computes_what_its_int8_tflite_file_computes(tmp_path):
    """Before: 0.9% relative error between the QAT model's logits and the file's (the conv's fused
    swish rounded once, the sigmoid gate not at all, the squeeze-excite Multiply left float).
    Now the same numbers, to the bit on this model."""
    import tensorflow_model_optimization as tfmot

    from edgekit.compression.inspection import qat_unsupported_layers
    from edgekit.compression.stages.fold import split_gates
    from edgekit.compression.stages.qat import calibrate_ranges
    from edgekit.compression.stages.qat_scheme import qat_scheme

    qk = tfmot.quantization.keras
    model, _ = split_gates(_se_block_model())
    assert qat_unsupported_layers(model) == []  # Multiply included: it is quantized at its output, as the files do
    with qk.quantize_scope():
        qat = qk.quantize_apply(qk.quantize_annotate_model(model), qat_scheme(False)[1])
    x = np.random.default_rng(0).uniform(0, 1, (64, 12, 12, 3)).astype(np.float32)
    calibrate_ranges(qat, x)
    interpreter = qat_int8_interpreter(qat, x, tmp_path)
    given, taken = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    ops = {op["op_name"] for op in interpreter._get_ops_details()}  # noqa: SLF001
    assert "LOGISTIC" in ops and "DEQUANTIZE" in ops and "QUANTIZE" in ops
    from_file = []
    for sample in x:
        interpreter.set_tensor(given, sample[None])
        interpreter.invoke()
        from_file.append(interpreter.get_tensor(taken)[0])
    logits = qat(x, training=False).numpy()
    error = np.sqrt(np.mean((np.array(from_file) - logits) ** 2)) / np.sqrt(np.mean(logits ** 2))
    assert error <= 1e-3, error
