"""What every exporter takes and gives back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgekit.support.progress import StepLog

# File suffixes per format; the first one is the artifact's main file.
SUFFIXES = {"tflite": (".tflite",), "onnx": (".onnx",), "openvino": (".xml", ".bin")}
# Precisions each format writes (ONNX fp16 would need another converter: not offered).
PRECISIONS = {"tflite": {"fp32", "fp16", "int8", "int8w"}, "onnx": {"fp32", "int8", "int8w"},
              "openvino": {"fp32", "fp16", "int8", "int8w"}}


@dataclass
class ExportRequest:
    """One run's export job. Converters reach the model only through `source` (a file, see
    edgekit.export.source) and run each heavy step through `run`, in a child process when
    `isolate` is set, so memory never adds up across steps."""

    source: dict  # the model to export: a "keras" or "graph" source
    image_shape: tuple[int, int, int]
    stem: str
    outdir: Path  # the staging folder: artifacts only
    scratch: Path  # intermediates that are not artifacts; the children's working folder
    precisions: list[str]  # e.g. ["fp32", "int8"] or ["fp32", "int8w"]
    calibration: str | None = None  # .npy of preprocessed float32 NHWC samples, for "int8"
    calibration_samples: int = 0
    io_dtype: str = "float32"  # TFLite integer I/O for accelerators
    qat_source: dict | None = None  # the QAT model's frozen graph: int8 from its learned ranges
    weight_bytes: int = 0  # for the memory estimates
    formats: list[str] = field(default_factory=list)
    isolate: bool = False

    _graph: dict | None = field(default=None, init=False, repr=False)

    @property
    def from_qat(self) -> bool:
        return self.qat_source is not None

    def graph_source(self, log: StepLog) -> dict:
        """The frozen, inlined graph that tf2onnx and OpenVINO convert: made once per run."""
        if self.source["kind"] == "graph":
            return self.source
        if self._graph is None:
            self._graph = self.run("freeze", "Trace and freeze the model's forward pass",
                                   "edgekit.export.source:freeze_step",
                                   {"source": self.source, "out": str(self.scratch / "frozen.pb")}, log)
        return self._graph

    def run(self, kind: str, label: str, target: str, kwargs: dict, log: StepLog):
        """One heavy step: refused up front if it cannot fit, timed, its peak memory recorded."""
        from edgekit.support.memory import check_fits, way_out
        from edgekit.support.steps import StepKilled, run_step

        check_fits(kind, label, self.weight_bytes, self.formats)
        with log.step(label) as stats:
            try:
                done = run_step(target, kwargs, isolate=self.isolate, workdir=self.scratch, label=label)
            except StepKilled as exc:
                raise StepKilled(f"{exc}. Free memory, or leave it out: {way_out(kind, self.formats)}") from None
            stats.peak_rss_mb = done.peak_rss_mb
        return done.result

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
    """The forward pass as one self-contained GraphDef: variables folded into constants and
    every function call inlined (edgekit.export.graph_fixes), so each converter sees plain ops."""

    graph_def: Any
    input_name: str  # tensor names, e.g. "input:0"
    output_name: str

    @property
    def function(self):
        """The graph as a ConcreteFunction (what TFLiteConverter.from_concrete_functions takes)."""
        from edgekit.support.keras_compat import tensorflow

        tf = tensorflow()
        wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(self.graph_def, name=""), [])
        graph = wrapped.graph
        return wrapped.prune(graph.as_graph_element(self.input_name), graph.as_graph_element(self.output_name))


def freeze(forward, image_shape) -> FrozenGraph:
    from edgekit.export.graph_fixes import portable_graph
    from edgekit.support.keras_compat import tensorflow

    tf = tensorflow()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec((None, *image_shape), tf.float32, name="input")
    concrete = tf.function(forward).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(concrete)
    return FrozenGraph(portable_graph(frozen.graph.as_graph_def()), frozen.inputs[0].name, frozen.outputs[0].name)


class Exporter(Protocol):
    format: str

    def export(self, request: ExportRequest, log: StepLog) -> list[Artifact]: ...


def artifact_names(stem: str, formats: list[str], precisions: list[str]) -> list[str]:
    """Every file name a run will write, to check the output folder before any work."""
    return [f"{stem}.{p}{s}" for f in formats for p in precisions if p in PRECISIONS[f] for s in SUFFIXES[f]]
