from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import ModelError
from edgekit.quality.evaluation import accuracy, agreement, top_k_accuracy
from edgekit.intake.model import check_classifier, count_macs, read_model_file


def test_top_k_and_agreement():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    labels = np.array([1, 1, 0])
    assert top_k_accuracy(scores, labels, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(scores, labels, 2) == pytest.approx(2 / 3)
    assert accuracy(scores, labels)["top5"] == 1.0  # k is capped at the class count
    assert accuracy(scores, None) is None
    assert agreement(scores, scores[[0, 2, 1]]) == pytest.approx(1 / 3)


def _keras():
    from edgekit.support.keras_compat import tf_keras

    return tf_keras()


def test_macs_of_conv_depthwise_separable_dense():
    keras = _keras()
    layers = keras.layers
    model = keras.Sequential([
        layers.Input((16, 16, 3)),
        layers.Conv2D(8, 3, padding="same"),           # 16*16*8*3*3*3
        layers.DepthwiseConv2D(3, padding="same"),     # 16*16*8*3*3
        layers.SeparableConv2D(4, 3, padding="valid"),  # 14*14*(8*9 + 8*4)
        layers.GlobalAveragePooling2D(),
        layers.Dense(5),                               # 4*5
    ])
    expected = 16 * 16 * 8 * 27 + 16 * 16 * 8 * 9 + 14 * 14 * (8 * 9 + 8 * 4) + 4 * 5
    assert count_macs(model) == expected


def test_classifier_checks_name_the_signature():
    with pytest.raises(ModelError, match=r"one input of shape \(batch, height, width, channels\).*\(None, 10\)"):
        check_classifier([(None, 10)], [(None, 3)])
    with pytest.raises(ModelError, match=r"one output of shape \(batch, classes\).*\(None, 8, 8, 3\)"):
        check_classifier([(None, 8, 8, 1)], [(None, 8, 8, 3)])
    with pytest.raises(ModelError, match=r"fixed height, width and channels"):
        check_classifier([(None, None, None, 3)], [(None, 3)])
    assert check_classifier([(None, 8, 8, 1)], [(None, 4)]) == ((None, 8, 8, 1), 4)


def test_read_model_file_identifies_tf_keras_h5(digits):
    info = read_model_file(digits["model"])
    assert info.format == "h5" and info.keras == "tf_keras" and info.keras_version.startswith("2.")
    assert info.config["class_name"] == "Sequential"


def test_weights_only_h5_is_refused_with_a_hint(tmp_path):
    keras = _keras()
    model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(2)])
    model.save_weights(tmp_path / "w.h5")
    with pytest.raises(ModelError, match="weights only"):
        read_model_file(tmp_path / "w.h5")
