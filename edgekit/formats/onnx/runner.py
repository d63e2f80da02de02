"""ONNX Runtime runner: the execution providers a device profile asks for, where this
install has them, and the CPU provider always last."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import InputError, require
from edgekit.formats.runner import Runner


def looks_like(head: bytes) -> bool:
    """An ONNX ModelProto starts with its ir_version field (tag 0x08)."""
    return head[:1] == b"\x08"


class OnnxRunner(Runner):
    format = "onnx"

    def __init__(self, path: Path, threads: int | None = None, providers: list[str] | None = None, **_profile):
        ort = require("onnxruntime", "onnx")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        available = ort.get_available_providers()
        chosen = [p for p in providers or [] if p in available and p != "CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), options, providers=[*chosen, "CPUExecutionProvider"])
        self.execution = ", ".join(self.session.get_providers())
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        if len(first.shape) != 4 or not all(isinstance(d, int) and d > 0 for d in first.shape[1:]):
            raise InputError(f"{path}: input {first.name} has shape {first.shape}; edgekit runs image models "
                             "with a fixed (batch, height, width, channels) input")
        self.input_shape = tuple(first.shape[1:])
        self.fixed_batch = first.shape[0] if isinstance(first.shape[0], int) and first.shape[0] > 0 else None
        self.input_spec = {"dtype": "float32", "scale": None, "zero_point": None}

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch.astype(np.float32, copy=False)})[0]
