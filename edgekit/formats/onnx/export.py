"""ONNX export: tf2onnx (from the shared frozen graph) for fp32, then onnxruntime.quantization from that fp32 file.

Each conversion and quantization is a step (edgekit.support.isolated_steps): paths in, files out.

Static int8 is QDQ with per-channel signed weights and unsigned activations (U8S8): on x86
ORT's signed-activation kernels ran slower than fp32 (docs/architecture.md, pitfalls), U8S8 faster.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import ConversionError, require
from edgekit.formats.exporter import Artifact, ExportRequest, ranges_setting, weight_scales
from edgekit.support.progress import StepLog

OPSET = 17
# ONNX Runtime calibrates by running a copy of the model that outputs every tensor's min and
# max, and its memory arena grows with the batch: MobileNetV2 224² in batches of 32 peaked at
# 5.4 GB, one sample at a time at 3.0 GB, and ran faster. Batches stay this small in input
# elements (a batch of 1 for 224² images, up to 32 for tiny inputs).
CALIBRATION_BATCH_ELEMENTS = 65_536
MAX_CALIBRATION_BATCH = 32


def calibration_batch(sample_shape) -> int:
    return int(max(1, min(MAX_CALIBRATION_BATCH, CALIBRATION_BATCH_ELEMENTS // int(np.prod(sample_shape)))))


class OnnxExporter:
    format = "onnx"

    def export(self, request: ExportRequest, log: StepLog) -> list[Artifact]:
        (fp32_path,) = request.files(self.format, "fp32")
        graph = request.graph_source(log)
        request.run("onnx-convert", "ONNX: convert fp32 (tf2onnx)", "edgekit.formats.onnx.export:convert",
                    {"source": graph, "out": str(fp32_path)}, log)
        artifacts = [Artifact(self.format, "fp32", [fp32_path], settings={"opset": OPSET})]
        if "int8" in request.precisions:
            artifacts.append(self._int8(request, fp32_path, graph["input_name"], log))
        if "int8w" in request.precisions:
            artifacts.append(self._int8w(request, fp32_path, log))
        return artifacts

    def _int8(self, request: ExportRequest, fp32_path, input_name: str, log: StepLog) -> Artifact:
        (path,) = request.files(self.format, "int8")
        if request.from_qat:
            request.run("onnx-convert", "ONNX: convert int8 from the QAT model (tf2onnx)",
                        "edgekit.formats.onnx.export:convert_qat", {"source": request.qat_source, "out": str(path)}, log)
            return Artifact(self.format, "int8", [path], settings={
                "method": "QAT (learned ranges)", "weights": "int8 per-channel", "activations": "QDQ from tfmot ranges"})
        label = f"ONNX: calibrate and quantize int8 ({request.calibration_samples} samples)"
        ranges = request.run("onnx-quantize", label, "edgekit.formats.onnx.export:quantize_static",
                             {"fp32": str(fp32_path), "out": str(path), "calibration": request.calibration,
                              "input_name": input_name, "per_tensor": request.per_tensor, "ranges": request.ranges}, log)
        return Artifact(self.format, "int8", [path], settings={
            "method": "static QDQ", "weights": f"int8 {weight_scales(request.per_tensor)}", "activations": "uint8",
            "calibration": "MinMax", "ranges": ranges_setting(request.ranges, ranges)})

    def _int8w(self, request: ExportRequest, fp32_path, log: StepLog) -> Artifact:
        (path,) = request.files(self.format, "int8w")
        request.run("onnx-quantize", "ONNX: quantize weights to int8 (dynamic)",
                    "edgekit.formats.onnx.export:quantize_dynamic", {"fp32": str(fp32_path), "out": str(path)}, log)
        return Artifact(self.format, "int8w", [path], settings={"method": "dynamic", "weights": "int8 per-channel"})


# --- steps (each may run in a child process: paths in, files out) -------------------------

def convert(source: dict, out: str) -> None:
    """tf2onnx from a frozen graph, with the large weights kept out of the converter
    (edgekit.formats.onnx.weights); a graph with ops ONNX cannot express fails this format."""
    tf2onnx = require("tf2onnx", "compress")
    import onnx

    from edgekit.formats.onnx.weights import attach_weights, lift_large_constants
    from edgekit.formats.source import frozen_graph

    from edgekit.formats.graph_fixes import FAKE_QUANT_OPS, fold_constant_fake_quant

    frozen = frozen_graph(source)
    graph_def = frozen.graph_def
    if any(n.op in FAKE_QUANT_OPS for n in graph_def.node):  # QAT kernels: before large constants leave
        graph_def = type(graph_def)()                          # the graph; on a copy, the next converter
        graph_def.CopyFrom(frozen.graph_def)                   # reads the fake-quant ops themselves
        fold_constant_fake_quant(graph_def)
    graph_def, weights = lift_large_constants(graph_def)
    model, _ = tf2onnx.convert.from_graph_def(
        graph_def, input_names=[frozen.input_name, *weights], output_names=[frozen.output_name], opset=OPSET)
    del graph_def
    attach_weights(model, weights)
    onnx.save(model, out)
    check_standard_ops(out)


def check_standard_ops(path: str) -> None:
    """tf2onnx logs ops it cannot convert and copies them into the graph as they were:
    such a file loads nowhere. Every node must be an op the ONNX standard defines."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    unknown = sorted({f"{n.domain + '.' if n.domain else ''}{n.op_type}" for n in model.graph.node
                      if not onnx.defs.has(n.op_type, n.domain or "")})
    if unknown:
        raise ConversionError(f"onnx: tf2onnx cannot convert the ops {', '.join(unknown)}")


def convert_qat(source: dict, out: str) -> None:
    """The QAT graph's fake-quant ops become QDQ with the learned ranges; weights int8, biases
    int32, Dense as Gemm (edgekit.formats.onnx.qdq)."""
    import onnx

    from edgekit.formats.onnx.qdq import make_integer_ready

    convert(source, out)
    model = onnx.load(out)
    make_integer_ready(model)
    onnx.save(model, out)


def prepare(fp32: str) -> str:
    """onnxruntime's recommended pre-pass (shape inference, graph optimization), into the
    current folder: the step's scratch folder."""
    require("onnxruntime.quantization", "onnx")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = str(Path.cwd() / f"{Path(fp32).stem}-prepared.onnx")
    quant_pre_process(fp32, prepared)
    return prepared


def quantize_static(fp32: str, out: str, calibration: str, input_name: str, exclude: list[str] | None = None,
                    prepared: bool = False, per_tensor: bool = False, ranges: str = "default",
                    overrides: dict | None = None) -> dict:
    """`exclude`: node names of the prepared model left in float (accuracy-aware int8). Returns what
    percentile/MSE `ranges` changed (onnx/ranges.py; `overrides`: those ranges, already chosen);
    min/max is ONNX Runtime's own calibration."""
    quant = require("onnxruntime.quantization", "onnx")
    model = fp32 if prepared else prepare(fp32)
    summary = {}
    if overrides is None:
        overrides, summary = chosen_ranges(model, calibration, input_name, ranges)
    quant.quantize_static(
        model, out, _CalibrationReader(np.load(calibration), input_name),
        quant_format=quant.QuantFormat.QDQ, per_channel=not per_tensor,
        activation_type=quant.QuantType.QUInt8, weight_type=quant.QuantType.QInt8,
        calibrate_method=quant.CalibrationMethod.MinMax, nodes_to_exclude=exclude or [],
        extra_options={"TensorQuantOverrides": overrides} if overrides else None,
    )
    return summary


def chosen_ranges(prepared: str, calibration: str, input_name: str, ranges: str) -> tuple[dict, dict]:
    """ONNX Runtime's TensorQuantOverrides for percentile/MSE ranges; none for its own min/max."""
    from edgekit.formats.onnx.ranges import activation_overrides
    from edgekit.formats.ranges import FROM_HISTOGRAMS

    if ranges not in FROM_HISTOGRAMS:
        return {}, {}
    return activation_overrides(prepared, calibration, input_name, ranges)


def quantize_dynamic(fp32: str, out: str) -> None:
    quant = require("onnxruntime.quantization", "onnx")
    quant.quantize_dynamic(prepare(fp32), out, weight_type=quant.QuantType.QInt8, per_channel=True)


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol over an in-memory array, in batches."""

    def __init__(self, x: np.ndarray, input_name: str):
        size = calibration_batch(x.shape[1:])
        self._batches = iter([x[i:i + size] for i in range(0, len(x), size)])
        self._input_name = input_name

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {self._input_name: batch}

    def rewind(self):  # not needed for MinMax, but part of the protocol
        pass
