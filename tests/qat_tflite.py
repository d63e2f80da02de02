"""The int8 TFLite file of a QAT model, converted the way edgekit's exporter does (the forward
pass saved alone, then the converter configured for QAT): shared by the QAT unit tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def qat_int8_interpreter(qat_model, x: np.ndarray, folder: Path):
    """An allocated LiteRT interpreter of `qat_model`'s int8 file; `x[:32]` calibrates what QAT left
    without ranges. `folder` is created."""
    from edgekit.formats.tflite.export import configure, save_forward
    from edgekit.support.keras_compat import tensorflow

    tf = tensorflow()
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "calibration.npy", x[:32])
    assert save_forward(qat_model, tuple(x.shape[1:]), str(folder / "forward"))
    converter = tf.lite.TFLiteConverter.from_saved_model(str(folder / "forward"))
    configure(converter, "int8", str(folder / "calibration.npy"), "float32", qat=True)
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    return interpreter
