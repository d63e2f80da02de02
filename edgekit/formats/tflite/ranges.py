"""Percentile and MSE activation ranges for the TFLite converter, which has only min/max.

The converter calibrates in two halves: a calibrator runs the float model on the
representative dataset and writes each activation tensor's min/max into the model, then the
MLIR quantizer turns those into int8 scales (TensorFlow's QuantizationDebugger splits it the
same way). Between the halves, edgekit replaces each min/max with the range chosen from the
tensor's histogram (edgekit.formats.ranges); everything else the converter does (I/O types,
per-channel weights, op checks) is unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from edgekit.formats.ranges import FROM_HISTOGRAMS, Histograms
from edgekit.support.keras_compat import tensorflow


@contextmanager
def activation_ranges(method: str, calibration: str | None):
    """While open, the TFLite calibrator's min/max are replaced by `method`'s ranges; yields a
    dict that gets {"tensors": n, "narrowed": k} once the converter has calibrated."""
    summary: dict = {}
    if method not in FROM_HISTOGRAMS or calibration is None:
        yield summary
        return
    from tensorflow.lite.python.optimize import calibrator

    original = calibrator.Calibrator.calibrate

    def calibrate(self, dataset_gen):  # the converter's own calibration, then our ranges
        calibrated, found = with_ranges(original(self, dataset_gen), np.load(calibration), method)
        summary.update(found)
        return calibrated

    calibrator.Calibrator.calibrate = calibrate  # the only seam between the halves; restored below
    try:
        yield summary
    finally:
        calibrator.Calibrator.calibrate = original


def with_ranges(calibrated: bytes, samples: np.ndarray, method: str) -> tuple[bytes, dict]:
    """`calibrated` with every activation tensor's min/max set to `method`'s range over `samples`."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    tensors = model.subgraphs[0].tensors
    limits = {i: (float(t.quantization.min[0]), float(t.quantization.max[0])) for i, t in enumerate(tensors)
              if _calibrated_activation(t, model.buffers)}
    histograms = _histograms(calibrated, samples, limits)
    chosen = histograms.ranges(method)
    for i, (low, high) in chosen.items():
        tensors[i].quantization.min, tensors[i].quantization.max = [low], [high]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), histograms.narrowed(chosen)


def _calibrated_activation(tensor, buffers) -> bool:
    q = tensor.quantization
    has_data = buffers[tensor.buffer].data is not None and len(buffers[tensor.buffer].data) > 0
    return q is not None and q.min is not None and len(q.min) == 1 and not has_data


def _histograms(calibrated: bytes, samples: np.ndarray, limits: dict) -> Histograms:
    """Run the calibrated float model one sample at a time, keeping every tensor's values."""
    tf = tensorflow()
    interpreter = tf.lite.Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    feed = interpreter.get_input_details()[0]["index"]
    histograms = Histograms(limits)
    for i in range(len(samples)):
        interpreter.set_tensor(feed, samples[i:i + 1].astype(np.float32))
        interpreter.invoke()
        for index in limits:
            histograms.add(index, interpreter.get_tensor(index))
    return histograms
