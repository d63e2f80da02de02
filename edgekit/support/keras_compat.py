"""One place that imports TensorFlow, so tf_keras (Keras 2) is the `tf.keras` it sees.

tfmot only works on tf_keras models and needs TF_USE_LEGACY_KERAS=1 set before TensorFlow
is first imported; everything in edgekit that needs TensorFlow goes through `tensorflow()`.
"""

from __future__ import annotations

import os

from edgekit.errors import require


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide C++ info/warning spam
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def tensorflow():
    """Import TensorFlow with tf_keras as its Keras; return the `tensorflow` module."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    _quiet_tensorflow()
    tf = require("tensorflow", "compress")
    tf.get_logger().setLevel("ERROR")
    return tf


def tf_keras():
    """Return the tf_keras (Keras 2) module — the working model's Keras."""
    tensorflow()
    return require("tf_keras", "compress")
