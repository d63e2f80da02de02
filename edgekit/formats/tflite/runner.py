"""TFLite runner on ai_edge_litert (LiteRT), with its default XNNPACK CPU delegate."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import require
from edgekit.formats.runner import Runner


def quantize(x: np.ndarray, dtype, scale: float, zero_point: int) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def looks_like(head: bytes) -> bool:
    """A TFLite flatbuffer carries "TFL3" at offset 4."""
    return head[4:8] == b"TFL3"


class TFLiteRunner(Runner):
    format = "tflite"

    def __init__(self, path: Path, threads: int | None = None, **_profile):
        litert = require("ai_edge_litert.interpreter", "tflite")
        self.interpreter = litert.Interpreter(model_path=str(path), num_threads=threads)
        self.execution = "LiteRT (XNNPACK)"
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self._batch = 0
        self.input_shape = tuple(int(d) for d in self.input["shape"][1:])
        scale, zero_point = self.input["quantization"]
        quantized = np.dtype(self.input["dtype"]).kind in "iu" and scale > 0  # float input: no scale (as ONNX)
        self.input_spec = {"dtype": np.dtype(self.input["dtype"]).name, "scale": float(scale) if quantized else None,
                           "zero_point": int(zero_point) if quantized else None}

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            shape = [batch, *self.input["shape"][1:]]
            self.interpreter.resize_tensor_input(self.input["index"], shape)
            self.interpreter.allocate_tensors()
            self.output = self.interpreter.get_output_details()[0]
            self._batch = batch

    def _run(self, batch: np.ndarray) -> np.ndarray:
        self._resize(len(batch))
        dtype = self.input["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero_point = self.input["quantization"]
            batch = quantize(batch, dtype, scale, zero_point)
        self.interpreter.set_tensor(self.input["index"], batch.astype(dtype, copy=False))
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output["index"])
        if np.issubdtype(out.dtype, np.integer):
            scale, zero_point = self.output["quantization"]
            out = (out.astype(np.float32) - zero_point) * scale
        return out
