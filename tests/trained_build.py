"""Train one keras.applications architecture for real on scikit-learn's digits, upscaled.

Run as `python -m tests.trained_build FLAVOUR NAME[:ALPHA] SIZE FOLDER [EPOCHS [adam|sgd]]` (a child process, so
the test process does not hold every trained network). Random-weight zoos prove that every
layer exports; only a converged network shows whether a fine-tuning stage keeps what training
found (issue 22: pruning took a trained MobileNetV2 from 90% to 15% and called it success).

The digits (8×8, 1,797 images) are resized to SIZE×SIZE and repeated over three channels,
in [0, 1]. Writes NAME.h5 (tf_keras) or NAME.keras (Keras 3), train.npz (the training split,
also the fine-tuning and calibration data) and val.npz, and prints a JSON line with the
validation top-1 and the training time.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# The architectures and widths the slow tier trains: small enough for 2 cores, deep enough to
# have what trained networks have (BatchNorm everywhere, depthwise convs, residual adds, SE blocks).
ARCHITECTURES = {
    "MobileNetV2": {"alpha": 0.35},
    "EfficientNetB0": {},
    "ResNet50": {},
}


def digits_images(size: int):
    """(x_train, y_train, x_val, y_val) at size×size×3 in [0, 1]."""
    import tensorflow as tf

    from edgekit.demo import digits_splits

    x_train, y_train, x_val, y_val = digits_splits()

    def images(x):
        return np.repeat(tf.image.resize(x, (size, size)).numpy(), 3, axis=-1).astype(np.float32)

    return images(x_train), y_train, images(x_val), y_val


def build(flavour: str, name: str, size: int, folder: Path, epochs: int = 6, recipe: str = "adam") -> dict:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf  # before Keras 3, so tf_keras stays TensorFlow's Keras

    if flavour == "keras3":
        if recipe == "sgd":
            raise SystemExit("the sgd recipe adds its weight decay as a tf_keras loss: use tf_keras")
        import keras
    else:
        import tf_keras as keras
    keras.utils.set_random_seed(0)
    x_train, y_train, x_val, y_val = digits_images(size)
    if recipe == "sgd":  # the architecture's own input range, [-1, 1], as its paper trained it
        x_train, x_val = x_train * 2 - 1, x_val * 2 - 1
    name, _, alpha = name.partition(":")  # "MobileNetV2:1.0": another width than ARCHITECTURES'
    options = ARCHITECTURES.get(name, {}) | ({"alpha": float(alpha)} if alpha else {})
    model = getattr(keras.applications, name)(weights=None, classes=10, input_shape=(size, size, 3), **options)
    # A few hundred steps leave BatchNorm's moving statistics (momentum 0.99/0.999) mostly at their
    # initial values; a long real training run does not. Train with a fast momentum, save the
    # architecture's own: the file is what a converged run would have written.
    norms = [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.8
    if recipe == "sgd":  # its L2 weight decay (4e-5), a loss term as the paper's TensorFlow had it
        kernels = [w for layer in model.layers for w in layer.weights if "kernel" in w.name]
        model.add_loss(lambda: 4e-5 * tf.add_n([tf.reduce_sum(tf.square(w)) for w in kernels]))
    model.compile(optimizer=_optimizer(keras, recipe, epochs * -(-len(x_train) // 32)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    started = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    seconds = time.perf_counter() - started
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum
    top1 = float(np.mean(np.argmax(model.predict(x_val, verbose=0), axis=1) == y_val))
    path = folder / f"{name}.{'keras' if flavour == 'keras3' else 'h5'}"
    model.save(path)
    np.savez(folder / "train.npz", x=x_train, y=y_train)
    np.savez(folder / "val.npz", x=x_val, y=y_val)
    return {"model": str(path), "top1": top1, "train_s": round(seconds, 1)}


def _optimizer(keras, recipe: str, steps: int):
    """adam: Adam 1e-3, quick to converge. sgd: MobileNetV2's own recipe (SGD, momentum 0.9, a high
    rate decayed to 0, weight decay 4e-5), which leaves what ImageNet-trained MobileNets have: ReLUs
    that never fire, BatchNorm channels of variance 0 behind them, and kernels that folding makes
    100-1000× the rest (issue 26; benchmarks/per_tensor.py)."""
    if recipe == "sgd":
        return keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.1, steps), momentum=0.9)
    return keras.optimizers.Adam(1e-3)


if __name__ == "__main__":
    flavour, name, size, folder = sys.argv[1:5]
    epochs = int(sys.argv[5]) if len(sys.argv) > 5 else 6
    recipe = sys.argv[6] if len(sys.argv) > 6 else "adam"
    print(json.dumps(build(flavour, name, int(size), Path(folder), epochs, recipe)))
