"""`edgekit demo`: a real, self-contained run on scikit-learn's digits (no download).

Trains a small CNN for a few seconds, saves it as a tf_keras .h5 with calibration and
validation .npz files beside it, then runs the same compress path as any user model.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from edgekit.errors import require
from edgekit.support.progress import StepLog

VALIDATION_FRACTION = 0.3


def digits_splits(seed: int = 0):
    """(x_train, y_train, x_val, y_val): 8×8×1 float32 images scaled to 0..1."""
    datasets = require("sklearn.datasets", "compress")
    digits = datasets.load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = int(len(x) * VALIDATION_FRACTION)
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def build_digits_cnn(seed: int = 0):
    """~85k parameters: big enough that int8 size ratios are meaningful, trains in seconds."""
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    return keras.Sequential([
        layers.Input((8, 8, 1), name="image"),
        layers.Conv2D(32, 3, activation="relu", name="conv1"),
        layers.Conv2D(64, 3, activation="relu", name="conv2"),
        layers.Flatten(name="flatten"),
        layers.Dense(64, activation="relu", name="fc"),
        layers.Dense(10, activation="softmax", name="probs"),
    ], name="digits_cnn")


def train_digits_model(path: Path, epochs: int = 20, seed: int = 0):
    """Train the digits CNN and save it (tf_keras .h5); return the validation split."""
    x_train, y_train, x_val, y_val = digits_splits(seed)
    model = build_digits_cnn(seed)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    with warnings.catch_warnings():  # .h5 is the format this demo means to show
        warnings.simplefilter("ignore", UserWarning)
        model.save(path)
    return x_train, y_train, x_val, y_val


def prepare_demo(outdir: Path, log: StepLog, seed: int = 0) -> tuple[Path, Path, Path]:
    """Write digits.h5, calib.npz and val.npz into outdir; return their paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    model_path, calib_path, val_path = outdir / "digits.h5", outdir / "calib.npz", outdir / "val.npz"
    with log.step("Demo: train a small CNN on scikit-learn's digits"):
        x_train, y_train, x_val, y_val = train_digits_model(model_path, seed=seed)
    np.savez(calib_path, x=x_train, y=y_train)
    np.savez(val_path, x=x_val, y=y_val)
    return model_path, calib_path, val_path


def run_demo(outdir: Path, force: bool, log: StepLog) -> dict:
    """Prepare the demo files, then compress them exactly as `edgekit compress` would."""
    from edgekit.formats import FORMATS
    from edgekit.formats.exporter import artifact_names
    from edgekit.support.output_folders import check_output_folder
    from edgekit.compression.config import Recipe
    from edgekit.compression.pipeline import CompressOptions, compress

    outdir = Path(outdir)
    options = CompressOptions(model=outdir / "digits.h5", recipe=Recipe(int8=True), data=outdir / "calib.npz",
                              val=outdir / "val.npz", outdir=outdir / "compressed", force=force)
    demo_files = ["digits.h5", "calib.npz", "val.npz"]
    check_output_folder(outdir, demo_files, force)
    check_output_folder(options.resolved_outdir(), artifact_names("digits", list(FORMATS), options.precisions), force)
    created = [p for p in [*reversed(outdir.parents), outdir] if not p.exists()]
    kept = {name for name in demo_files if (outdir / name).exists()}  # with --force: replaced on success
    try:
        prepare_demo(outdir, log)
        return compress(options, log)
    except BaseException:  # a failure, Ctrl-C or SIGTERM: the demo's inputs go with it
        _remove_inputs(outdir, [n for n in demo_files if n not in kept], created)
        raise


def _remove_inputs(outdir: Path, names: list[str], created: list[Path]) -> None:
    """The files this run wrote, and the folders it created (if they are empty again), so the
    demo can simply be rerun."""
    for name in names:
        (outdir / name).unlink(missing_ok=True)
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            break


OUTLIER_SCALE = 400.0


def add_activation_outliers(source: Path, out: Path, layer: str = "fc", consumer: str = "probs", channels: int = 2,
                            scale: float = OUTLIER_SCALE) -> None:
    """The digits CNN with a few activation outliers, the way they arise in trained networks:
    `channels` units of `layer` (the most active ones) are scaled up by `scale` and the reader
    `consumer` scales its weights for them down by as much. ReLU commutes with a positive scale,
    so the float model computes the same function, but a per-tensor int8 range over `layer`'s
    output is now ~scale× wider and rounds every other unit to a step or two."""
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    model = keras.models.load_model(source)
    x_train = digits_splits()[0]
    grown, reader = model.get_layer(layer), model.get_layer(consumer)
    outputs = np.asarray(keras.Model(model.inputs, grown.output)(x_train, training=False))
    activity = outputs.reshape(-1, outputs.shape[-1]).mean(axis=0)
    kernel, bias = grown.get_weights()
    reader_kernel, reader_bias = reader.get_weights()
    for unit in np.argsort(activity)[-channels:]:
        kernel[..., unit] *= scale  # Dense (in, out) and Conv2D (h, w, in, out) alike
        bias[unit] *= scale
        reader_kernel[..., unit, :] /= scale
    grown.set_weights([kernel, bias])
    reader.set_weights([reader_kernel, reader_bias])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.save(out)
