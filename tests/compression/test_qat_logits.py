"""A QAT classifier's logits quantized over the range that decides its top-1 (issue 22): tfmot's
range follows the most negative wrong-class logit, and on a trained EfficientNetB0 one int8 step
was ~1 logit, so 7% of the inputs had their top two classes exactly tied."""

from __future__ import annotations

import numpy as np
import pytest

from tests.qat_tflite import qat_int8_interpreter


def _qat_classifier(separate_softmax: bool):
    import tensorflow_model_optimization as tfmot

    from edgekit.compression.stages.qat import calibrate_ranges
    from edgekit.compression.stages.qat_scheme import qat_scheme
    from edgekit.support.keras_compat import tf_keras

    keras, qk = tf_keras(), tfmot.quantization.keras
    keras.utils.set_random_seed(0)
    L = keras.layers
    inputs = L.Input((8, 8, 3))
    x = L.GlobalAveragePooling2D()(L.Conv2D(16, 3, activation="relu")(inputs))
    if separate_softmax:
        outputs = L.Softmax()(L.Dense(10, name="head")(x))
    else:
        outputs = L.Dense(10, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs)
    head = model.get_layer("head")
    head.kernel.assign(head.kernel * 8.0)  # logits of a trained size: a few units apart
    with qk.quantize_scope():
        qat = qk.quantize_apply(qk.quantize_annotate_model(model), qat_scheme(False)[1])
    x = np.random.default_rng(0).uniform(0, 1, (256, 8, 8, 3)).astype(np.float32)
    calibrate_ranges(qat, x)
    return qat, x


def _head_range(qat):
    from edgekit.compression.stages.qat_logits import _range_variables

    _, low, high = _range_variables(qat.get_layer("quant_head"))
    return low, high


def _ties(scores: np.ndarray) -> int:
    top2 = np.sort(scores, axis=1)[:, -2:]
    return int(np.sum(top2[:, 0] == top2[:, 1]))


@pytest.mark.parametrize("separate_softmax", [False, True])
def test_a_logit_range_wide_as_the_worst_wrong_class_is_narrowed_to_what_decides_top1(separate_softmax, tmp_path):
    from edgekit.compression.stages.qat_logits import tighten_classifier_range

    qat, x = _qat_classifier(separate_softmax)
    low, high = _head_range(qat)
    low.assign(-240.0)  # what a trained network's moving average reached: one step ≈ 1 logit
    before = qat(x, training=False).numpy()

    changed = tighten_classifier_range(qat, x)

    assert changed is not None and changed["before"][0] == -240.0 and changed["layer"] == "head"
    new_low, new_high = changed["after"]
    assert new_low <= 0.0 <= new_high and new_high - new_low < 240.0 / 4
    after = qat(x, training=False).numpy()
    assert _ties(before) > 0 and _ties(after) < _ties(before)
    # The int8 file is written with the narrowed range: its logits step is (high − low) / 255.
    interpreter = qat_int8_interpreter(qat, x, tmp_path / "file")
    fc = [t for t in interpreter.get_tensor_details() if "quant_head" in t["name"] and t["dtype"] == np.int8
          and len(t["shape"]) == 2 and t["quantization_parameters"]["scales"].size == 1]
    scales = {float(t["quantization_parameters"]["scales"][0]) for t in fc}
    assert any(abs(s - (new_high - new_low) / 255) < 1e-3 * s for s in scales), (scales, changed)


def test_a_range_already_narrow_is_left_alone():
    from edgekit.compression.stages.qat_logits import tighten_classifier_range

    qat, x = _qat_classifier(False)
    low, high = (float(v.numpy()) for v in _head_range(qat))
    assert tighten_classifier_range(qat, x) is None
    assert [float(v.numpy()) for v in _head_range(qat)] == [low, high]


def test_the_deciding_range_ends_where_no_probability_or_top1_can_change():
    from edgekit.compression.stages.qat_logits import LOW_REACH, WINDOW, _deciding_range

    logits = np.array([[12.0, 3.0, -70.0],     # an ordinary confident sample
                       [2.0, 1.5, -40.0],      # the least confident: its top sets the floor
                       [85.0, 10.0, -90.0]])   # an outlier: its top beyond runner-up + WINDOW is clipped
    low, high = _deciding_range(logits)
    assert low == 2.0 - LOW_REACH and high == 10.0 + WINDOW
    clipped = np.clip(logits, low, high)
    assert np.array_equal(clipped.argmax(axis=1), logits.argmax(axis=1))


def test_the_range_is_narrowed_after_the_model_ran_as_a_graph():
    """tfmot swaps a wrapped layer's `kernel` for its fake-quantized tensor once called in a graph
    (as a fine-tune's fit does): the float kernel is read from the variables, not the attribute."""
    from edgekit.compression.stages.qat_logits import tighten_classifier_range
    from edgekit.support.keras_compat import tensorflow

    qat, x = _qat_classifier(False)
    tensorflow().function(lambda batch: qat(batch, training=True))(x[:8])  # a training step's graph
    low, _ = _head_range(qat)
    low.assign(-240.0)
    changed = tighten_classifier_range(qat, x)
    assert changed is not None and changed["after"][0] > -240.0
