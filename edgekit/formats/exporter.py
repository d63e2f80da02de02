"""What every exporter takes and gives back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgekit.formats import get_format
from edgekit.support.progress import StepLog


def weight_scales(per_tensor: bool) -> str:
    """How an int8 file's weights are scaled, as report.json's artifact settings say it."""
    return "per-tensor" if per_tensor else "per-channel"


def ranges_setting(method: str, summary: dict | None = None) -> str:
    """How an int8 file's activation ranges were chosen, and how many of them the method narrowed."""
    from edgekit.formats.ranges import describe

    if not summary:
        return describe(method)
    return f"{describe(method)}: {summary['narrowed']} of {summary['tensors']} activation ranges narrowed"


@dataclass
class ExportRequest:
    """One run's export job. Converters reach the model only through `source` (a file, see
    edgekit.formats.source) and run each heavy step through `run`, in a child process when
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
    per_tensor: bool = False  # int8 weights: one scale per tensor instead of per output channel
    ranges: str = "default"  # int8 activation ranges: default, minmax, percentile or mse (edgekit.formats.ranges)
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
                                   "edgekit.formats.source:freeze_step",
                                   {"source": self.source, "out": str(self.scratch / "frozen.pb")}, log)
        return self._graph

    def run(self, kind: str, label: str, target: str, kwargs: dict, log: StepLog):
        """One heavy step: refused up front if it cannot fit, timed, its peak memory recorded."""
        from edgekit.support.memory import check_fits
        from edgekit.support.isolated_steps import StepKilled, run_step

        check_fits(kind, label, self.weight_bytes, self.way_out(kind))
        with log.step(label) as stats:
            try:
                done = run_step(target, kwargs, isolate=self.isolate, workdir=self.scratch, label=label)
            except StepKilled as exc:
                raise StepKilled(f"{exc}. Free memory, or leave it out: {self.way_out(kind)}") from None
            stats.peak_rss_mb = done.peak_rss_mb
        return done.result

    def step_kinds(self, fmt: str) -> list[str]:
        """The heavy steps exporting `fmt` runs (their memory is estimated by kind)."""
        kind = get_format(fmt)
        kinds = [kind.convert_step]
        if kind.from_frozen_graph and self.source["kind"] == "keras":
            kinds.append("freeze")
        if kind.quantize_step and set(self.precisions) & {"int8", "int8w"} and not self.from_qat:
            kinds.append(kind.quantize_step)
        return kinds

    def way_out(self, step_kind: str) -> str:
        """The rerun that skips a step: the formats that do not need it, or more memory."""
        others = [f for f in self.formats if step_kind not in self.step_kinds(f)]
        return f"--formats {','.join(others)}" if others else "a machine with more memory"

    def check_all_steps_fit(self) -> None:
        """Refuse up front, before the first conversion, any step of this export that cannot fit."""
        from edgekit.support.memory import STEP_TITLES, check_fits

        for fmt in self.formats:
            for kind in self.step_kinds(fmt):
                check_fits(kind, STEP_TITLES[kind], self.weight_bytes, self.way_out(kind))

    def precisions_for(self, fmt: str) -> list[str]:
        return [p for p in self.precisions if p in get_format(fmt).precisions]

    def files(self, fmt: str, precision: str) -> list[Path]:
        return [self.outdir / f"{self.stem}.{precision}{s}" for s in get_format(fmt).suffixes]


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
    every function call inlined (edgekit.formats.graph_fixes), so each converter sees plain ops."""

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
    from edgekit.formats.graph_fixes import portable_graph
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
    return [f"{stem}.{p}{s}" for f in map(get_format, formats) for p in precisions if p in f.precisions
            for s in f.suffixes]
