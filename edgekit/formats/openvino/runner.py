"""OpenVINO runner on the CPU plugin.

INFERENCE_PRECISION_HINT=f32: on CPUs with AMX/AVX512-BF16 OpenVINO otherwise runs fp32
models in bf16, which would make fp32 verification fail for the wrong reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import InputError, require
from edgekit.formats.runner import Runner


def looks_like(head: bytes) -> bool:
    """An OpenVINO IR is XML."""
    return head.lstrip().startswith(b"<")


class OpenVINORunner(Runner):
    format = "openvino"

    def __init__(self, path: Path, threads: int | None = None, device: str = "CPU", **_profile):
        ov = require("openvino", "openvino")
        core = ov.Core()
        missing = device not in core.available_devices  # a profile's NPU/GPU this machine lacks
        self.execution = f"OpenVINO CPU ({device} not present)" if missing else f"OpenVINO {device}"
        device = "CPU" if missing else device
        config = {}
        if device == "CPU":  # the NPU and GPU plugins choose their own precision and threads
            config["INFERENCE_PRECISION_HINT"] = "f32"
            if threads:
                config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(str(path), device, config)
        shape = self.compiled.inputs[0].get_partial_shape()
        if shape.rank.is_dynamic or shape.rank.get_length() != 4 or any(shape[i].is_dynamic for i in (1, 2, 3)):
            raise InputError(f"{path}: input shape {shape}; edgekit runs image models with a fixed "
                             "(batch, height, width, channels) input")
        self.input_shape = tuple(int(shape[i].get_length()) for i in range(1, 4))
        self.fixed_batch = int(shape[0].get_length()) if shape[0].is_static else None
        self.input_spec = {"dtype": "float32", "scale": None, "zero_point": None}

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.compiled(batch.astype(np.float32, copy=False))[0]
