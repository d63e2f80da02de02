"""Runners: load one artifact with its own runtime and run batches through it.

Each runner imports only its runtime, so `edgekit eval`/`bench` on a device need only that
runtime installed. `predict` takes preprocessed float32 NHWC input and returns float32 scores;
integer-I/O models are fed quantized input and their output is dequantized.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import InputError

RUNNER_FOR_SUFFIX = {".tflite": "tflite", ".onnx": "onnx", ".xml": "openvino"}


class Runner:
    """Base: subclasses implement `_run(batch)`; `predict` chunks the input."""

    format = ""
    chunk = 64

    def _run(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict(self, x: np.ndarray) -> np.ndarray:
        outputs = [self._run(x[i:i + self.chunk]) for i in range(0, len(x), self.chunk)]
        return np.concatenate(outputs, axis=0).astype(np.float32, copy=False)


def open_runner(path: Path, threads: int | None = None) -> Runner:
    """Open an artifact by its extension."""
    path = Path(path)
    kind = RUNNER_FOR_SUFFIX.get(path.suffix.lower())
    if kind == "tflite":
        from edgekit.runtime.tflite import TFLiteRunner

        return TFLiteRunner(path, threads)
    if kind == "onnx":
        from edgekit.runtime.onnx import OnnxRunner

        return OnnxRunner(path, threads)
    if kind == "openvino":
        from edgekit.runtime.openvino import OpenVINORunner

        return OpenVINORunner(path, threads)
    raise InputError(f"{path}: unknown artifact type; expected one of {', '.join(RUNNER_FOR_SUFFIX)}")
