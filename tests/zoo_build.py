"""Build one keras.applications model (weights=None) with distinct outputs, and its data.

Run as `python -m tests.zoo_build FLAVOUR NAME SIZE FOLDER` (a child process, so the test
process does not keep every model of the zoo). Random weights give either a nearly flat
softmax, where top-1 ties everywhere, or a saturated one-hot, where any export matches; the
classifier head is re-drawn so that on the model's own features its logits have a standard
deviation of LOGIT_STD: classes are separated, probabilities are not all 0 or 1, and both
the fp32 max |Δ| and the int8 agreement measure something.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

LOGIT_STD = 3.0
SAMPLES = 16


def build(flavour: str, name: str, size: int, folder: Path) -> Path:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow  # noqa: F401  (before Keras 3, so tf_keras stays TensorFlow's Keras)

    if flavour == "keras3":
        import keras
    else:
        import tf_keras as keras
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, classes=10, input_shape=(size, size, 3))
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 255.0, (SAMPLES, size, size, 3)).astype(np.float32)
    # the classifier: the last layer with a kernel (a Dense, or MobileNetV3's 1x1 Conv2D)
    head = [layer for layer in model.layers if type(layer).__name__ in ("Dense", "Conv2D")][-1]
    features = np.asarray(keras.Model(model.inputs, head.input)(x, training=False))
    kernel, bias = head.get_weights()
    fan_in = int(np.prod(kernel.shape[:-1]))
    scale = LOGIT_STD / (np.sqrt(fan_in) * max(float(np.sqrt(np.mean(features ** 2))), 1e-6))
    head.set_weights([rng.normal(0.0, scale, kernel.shape).astype(np.float32), np.zeros_like(bias)])
    path = folder / f"{name}.{'keras' if flavour == 'keras3' else 'h5'}"
    model.save(path)
    np.savez(folder / "data.npz", x=x, y=rng.integers(0, 10, SAMPLES))
    return path




def build_mobilenet_on_digits(folder: Path, size: int = 64) -> Path:
    """MobileNetV2 with random weights whose BatchNormalization statistics come from the data
    (one training-mode pass with momentum 0), on scikit-learn's digits resized to size×size×3
    in [-1, 1]: activations in the ranges a trained network has, without a download.
    Writes mnv2.h5, mcalib.npz and mval.npz (200 images each)."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf

    from edgekit.demo import digits_splits
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, classes=10, input_shape=(size, size, 3))
    x_train, y_train, x_val, y_val = digits_splits()

    def images(x):
        return np.repeat(tf.image.resize(x, (size, size)).numpy() * 2 - 1, 3, axis=-1).astype(np.float32)

    calib, val = images(x_train[:200]), images(x_val[:200])
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(calib, training=True)
    model.save(folder / "mnv2.h5")
    np.savez(folder / "mcalib.npz", x=calib, y=y_train[:200])
    np.savez(folder / "mval.npz", x=val, y=y_val[:200])
    return folder / "mnv2.h5"


if __name__ == "__main__":
    if sys.argv[1] == "mobilenet-on-digits":
        print(build_mobilenet_on_digits(Path(sys.argv[3]), int(sys.argv[2])))
    else:
        flavour, name, size, folder = sys.argv[1:5]
        print(build(flavour, name, int(size), Path(folder)))
