"""What every exporter takes and gives back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgekit.progress import StepLog

# File suffixes per format; the first one is the artifact's main file.
SUFFIXES = {"tflite": (".tflite",), "onnx": (".onnx",), "openvino": (".xml", ".bin")}


@dataclass
class ExportRequest:
    keras_model: Any
    image_shape: tuple[int, int, int]
    stem: str
    outdir: Path  # the staging folder: artifacts only
    scratch: Path  # intermediates that are not artifacts
    precisions: list[str]  # e.g. ["fp32", "int8"] or ["fp32", "int8w"]
    calibration: np.ndarray | None  # preprocessed float32 NHWC, for "int8"
    io_dtype: str = "float32"  # TFLite integer I/O for accelerators

    def files(self, fmt: str, precision: str) -> list[Path]:
        return [self.outdir / f"{self.stem}.{precision}{s}" for s in SUFFIXES[fmt]]


@dataclass
class Artifact:
    format: str
    precision: str
    files: list[Path]
    io_dtype: str = "float32"
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.format}-{self.precision}"

    @property
    def path(self) -> Path:
        return self.files[0]

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)


class Exporter(Protocol):
    format: str

    def export(self, request: ExportRequest, log: StepLog) -> list[Artifact]: ...


def artifact_names(stem: str, formats: list[str], precisions: list[str]) -> list[str]:
    """Every file name a run will write, to check the output folder before any work."""
    return [f"{stem}.{p}{s}" for f in formats for p in precisions for s in SUFFIXES[f]]
