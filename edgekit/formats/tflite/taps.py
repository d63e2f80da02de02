"""Every tensor of a .tflite file readable after each invoke (LiteRT's preserve_all_tensors), dequantized."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np


class Taps:
    def __init__(self, path: Path, taps: list[int]):
        from edgekit.errors import require

        litert = require("ai_edge_litert.interpreter", "tflite")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging": it is
            self.interpreter = litert.Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.details = {d["index"]: d for d in self.interpreter.get_tensor_details()}
        self.taps = taps

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        from edgekit.formats.tflite.runner import quantize

        outputs = [[] for _ in self.taps]
        for sample in batch:  # batch 1: every intermediate tensor of this invoke stays readable
            x = sample[None]
            dtype = self.input["dtype"]
            if np.issubdtype(dtype, np.integer):
                x = quantize(x, dtype, *self.input["quantization"])
            self.interpreter.set_tensor(self.input["index"], x.astype(dtype, copy=False))
            self.interpreter.invoke()
            for i, index in enumerate(self.taps):
                outputs[i].append(self._read(index))
        return [np.concatenate(o) for o in outputs]

    def _read(self, index: int) -> np.ndarray:
        value = self.interpreter.get_tensor(index)
        if np.issubdtype(value.dtype, np.integer):
            scale, zero_point = self.details[index]["quantization"]
            value = (value.astype(np.float32) - zero_point) * scale
        return value.astype(np.float32, copy=False)
