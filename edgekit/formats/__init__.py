"""The formats edgekit writes and runs, one package each (tflite/, onnx/, openvino/), and the
registry that format-agnostic code asks instead of branching on a format's name.

A format package holds everything edgekit knows about that format: its exporter (`export.py`),
its runner (`runner.py`), the facts read from a file (`facts.py`), how its files show a Keras
layer (`chains.py`: which ops are one conv and what is fused after it), where a diagnosis reads
a layer's values (`taps.py`), and how accuracy-aware int8 re-quantizes it (`search.py`). The
registry (PARTS) names those parts by "module:attribute", imported only when asked for, so
`import edgekit` loads no runtime. A fourth format is one more package and one more record
(docs/architecture.md, "Adding a format").
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    name: str  # as the user writes it (--formats) and report.json records it
    label: str  # as people write it
    suffixes: tuple[str, ...]  # the artifact's files; the first is its main file
    precisions: frozenset[str]  # what the exporter writes
    runtime: str  # the distribution that runs its files
    convert_step: str  # the heavy steps its exporter runs, by kind (memory estimates: edgekit.support.memory)
    quantize_step: str | None  # a separate int8 step, or None where conversion quantizes too
    from_frozen_graph: bool  # converts the traced, frozen graph (the "freeze" step), not the Keras model
    colour: str  # in plots (report.html, sweep.html)
    # where a diagnosis reads a layer: every fused op of its chain, or only the chain's end (OpenVINO's
    # CPU plugin moves an int8 conv's dequantizing multiply past the ops after it)
    taps_inside_chains: bool = True

    exporter: str = ""  # "module:Class" in the package: the two parts whose names differ by format
    runner: str = ""
    # How its files run on a CPU, for `edgekit devices calibrate`: the runtime's name in the latency
    # models (edgekit/measure/latency_fit.py FAMILIES), the module that runs it, the pip extra that
    # installs it, and the profile fields that pin it to the CPU
    cpu_runtime: str = ""
    runtime_module: str = ""
    extra: str = ""
    cpu_profile: tuple[tuple[str, object], ...] = ()

    def part(self, name: str):
        """The format's `name` part (see PARTS), e.g. part("runner") → its Runner class, imported now."""
        module, _, attribute = self.step(name).partition(":")
        return getattr(importlib.import_module(module), attribute)

    def step(self, name: str) -> str:
        """A part as "module:attribute", a step target (edgekit.support.isolated_steps may run it in a child)."""
        where = {"exporter": self.exporter, "runner": self.runner}.get(name) or PARTS[name][0]
        return f"{__name__}.{self.name}.{where}"

    @property
    def suffix(self) -> str:
        return self.suffixes[0]


# What every format package provides, under the same module and attribute names (exporter and
# runner classes are named by the record): "module:attribute" in the package, and what it is.
PARTS = {
    "exporter": ("", "converts a model and writes each precision (formats.exporter.Exporter)"),
    "runner": ("", "runs a file on batches (formats.runner.Runner)"),
    "sniff": ("runner:looks_like", "the first 64 bytes of a file → whether they are this format's"),
    "facts": ("facts:read_facts", "path → ArtifactFacts (formats.facts)"),
    "int8_weights": ("facts:int8_weights", "path → the int8 weight arrays the file stores (formats.held)"),
    "graph": ("chains:load_graph", "path → the loaded graph that chains and taps both read (loaded once)"),
    "chains": ("chains:file_chains", "path or loaded graph → [Chain]: each conv/fc op and what is fused after it"),
    "taps": ("taps:Taps", "(graph, taps) → .run(batch): the values at those taps"),
    "search": ("search:search", "a step: accuracy-aware int8, re-quantizing with layers kept in float"),
    "search_inputs": ("search:search_inputs", "(request, ranking, log) → what that step takes besides the shared inputs"),
    "search_method": ("search:METHOD", "one line for report.json"),
    "search_step": ("search:STEP_KIND", "the step kind whose memory edgekit.support.memory estimates"),
}

# Precisions: ONNX fp16 would need another converter, so it is not offered; int16x8 (int16
# activations, int8 weights) is TFLite's 16x8 mode.
_ALL = (
    Format("tflite", "TFLite", (".tflite",), frozenset({"fp32", "fp16", "int8", "int8w", "int16x8"}), "ai-edge-litert",
           convert_step="tflite-convert", quantize_step=None, from_frozen_graph=False, colour="#1f77b4",
           exporter="export:TFLiteExporter", runner="runner:TFLiteRunner", cpu_runtime="litert",
           runtime_module="ai_edge_litert", extra="tflite"),
    Format("onnx", "ONNX", (".onnx",), frozenset({"fp32", "int8", "int8w"}), "onnxruntime",
           convert_step="onnx-convert", quantize_step="onnx-quantize", from_frozen_graph=True, colour="#ff7f0e",
           exporter="export:OnnxExporter", runner="runner:OnnxRunner", cpu_runtime="onnxruntime",
           runtime_module="onnxruntime", extra="onnx", cpu_profile=(("onnx_providers", ("CPUExecutionProvider",)),)),
    Format("openvino", "OpenVINO", (".xml", ".bin"), frozenset({"fp32", "fp16", "int8", "int8w"}), "openvino",
           convert_step="openvino-convert", quantize_step="openvino-quantize", from_frozen_graph=True,
           colour="#2ca02c", taps_inside_chains=False, exporter="export:OpenVINOExporter",
           runner="runner:OpenVINORunner", cpu_runtime="openvino-cpu", runtime_module="openvino", extra="openvino",
           cpu_profile=(("openvino_device", "CPU"),)),
)
REGISTRY: dict[str, Format] = {f.name: f for f in _ALL}
FORMATS = tuple(REGISTRY)  # the order artifacts are written and shown in


def get_format(name: str) -> Format:
    return REGISTRY[name]  # names are checked where the user gives them (recipe_flags, config)


def format_of_suffix(suffix: str) -> Format | None:
    """The format whose main file has this suffix (".xml": OpenVINO), or None."""
    return next((f for f in _ALL if f.suffix == suffix.lower()), None)


def exporter_for(name: str):
    return get_format(name).part("exporter")()
