"""What every exporter takes and gives back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgekit.progress import StepLog

# File suffixes per format; the first one is the artifact's main file.
SUFFIXES = {"tflite": (".tflite",), "onnx": (".onnx",), "openvino": (".xml", ".bin")}
# Precisions each format writes (ONNX fp16 would need another converter: not offered).
PRECISIONS = {"tflite": {"fp32", "fp16", "int8", "int8w"}, "onnx": {"fp32", "int8", "int8w"},
              "openvino": {"fp32", "fp16", "int8", "int8w"}}


@dataclass
class ExportRequest:
    model: Any  # edgekit.model.LoadedModel
    stem: str
    outdir: Path  # the staging folder: artifacts only
    scratch: Path  # intermediates that are not artifacts
    precisions: list[str]  # e.g. ["fp32", "int8"] or ["fp32", "int8w"]
    calibration: np.ndarray | None  # preprocessed float32 NHWC, for "int8"
    io_dtype: str = "float32"  # TFLite integer I/O for accelerators
    qat_forward: Any = None  # the QAT model's forward pass: int8 from its learned ranges

    _frozen: "FrozenGraph | None" = field(default=None, init=False, repr=False)
    _frozen_qat: "FrozenGraph | None" = field(default=None, init=False, repr=False)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.model.image_shape

    def frozen(self) -> "FrozenGraph":
        """The forward pass traced once and its variables folded into constants: the one
        graph every converter starts from. Freezing makes tf_keras, Keras 3 and SavedModel
        inputs look alike (Keras 3 variables are otherwise left as READ_VARIABLE ops in
        TFLite, and tf2onnx misses some captured tf_keras variables), and it makes the
        TFLite conversion of large models much faster."""
        if self._frozen is None:
            self._frozen = freeze(self.model.forward, self.image_shape)
        return self._frozen

    @property
    def from_qat(self) -> bool:
        return self.qat_forward is not None

    def frozen_qat(self) -> "FrozenGraph":
        """The QAT model's graph (fake-quant ops with learned ranges), frozen once."""
        if self._frozen_qat is None:
            self._frozen_qat = freeze(self.qat_forward, self.image_shape)
        return self._frozen_qat

    def precisions_for(self, fmt: str) -> list[str]:
        return [p for p in self.precisions if p in PRECISIONS[fmt]]

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


@dataclass(frozen=True)
class FrozenGraph:
    function: Any  # a ConcreteFunction with constants in place of variables
    input_name: str  # tensor names, e.g. "input:0"
    output_name: str

    @property
    def graph_def(self):
        return self.function.graph.as_graph_def()


def freeze(forward, image_shape) -> FrozenGraph:
    from edgekit.keras_compat import tensorflow

    tf = tensorflow()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec((None, *image_shape), tf.float32, name="input")
    concrete = tf.function(forward).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(concrete)
    return FrozenGraph(frozen, frozen.inputs[0].name, frozen.outputs[0].name)


class Exporter(Protocol):
    format: str

    def export(self, request: ExportRequest, log: StepLog) -> list[Artifact]: ...


def artifact_names(stem: str, formats: list[str], precisions: list[str]) -> list[str]:
    """Every file name a run will write, to check the output folder before any work."""
    return [f"{stem}.{p}{s}" for f in formats for p in precisions if p in PRECISIONS[f] for s in SUFFIXES[f]]
