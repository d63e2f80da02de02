"""ONNX export: tf2onnx (from the shared frozen graph) for fp32, then onnxruntime.quantization from that fp32 file.

Static int8 is QDQ with per-channel signed weights and unsigned activations (U8S8): on x86
ORT's signed-activation kernels ran slower than fp32 (DESIGN.md, pitfalls), U8S8 faster.
"""

from __future__ import annotations

import numpy as np

from edgekit.errors import require
from edgekit.export.base import Artifact, ExportRequest
from edgekit.progress import StepLog

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
        with log.step("ONNX: convert fp32 (tf2onnx)"):
            self._convert(request, fp32_path)
        artifacts = [Artifact(self.format, "fp32", [fp32_path], settings={"opset": OPSET})]
        if "int8" in request.precisions and request.from_qat:
            artifacts.append(self._from_qat(request, log))
            return artifacts
        if "int8" in request.precisions or "int8w" in request.precisions:
            with log.step("ONNX: prepare for quantization (quant_pre_process)"):
                prepared = self._prepare(request, fp32_path)
        if "int8" in request.precisions:
            artifacts.append(self._quantize_static(request, prepared, log))
        if "int8w" in request.precisions:
            artifacts.append(self._quantize_dynamic(request, prepared, log))
        return artifacts

    @staticmethod
    def _prepare(request: ExportRequest, fp32_path):
        """onnxruntime's recommended pre-pass (shape inference, graph optimization), once."""
        require("onnxruntime.quantization", "onnx")
        from onnxruntime.quantization.shape_inference import quant_pre_process

        prepared = request.scratch / "onnx-prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        return prepared

    def _from_qat(self, request: ExportRequest, log: StepLog) -> Artifact:
        """The QAT graph's fake-quant ops become QDQ with the learned ranges; weights int8."""
        import onnx

        from edgekit.export.onnx_qdq import store_weights_int8

        (path,) = request.files(self.format, "int8")
        with log.step("ONNX: convert int8 from the QAT model (tf2onnx)"):
            self._convert(request, path, request.frozen_qat())
            model = onnx.load(str(path))
            store_weights_int8(model)
            onnx.save(model, str(path))
        return Artifact(self.format, "int8", [path],
                        settings={"method": "QAT (learned ranges)", "weights": "int8 per-channel",
                                  "activations": "QDQ from tfmot ranges"})

    @staticmethod
    def _convert(request: ExportRequest, path, frozen=None) -> None:
        tf2onnx = require("tf2onnx", "compress")
        frozen = frozen or request.frozen()
        tf2onnx.convert.from_graph_def(frozen.graph_def, input_names=[frozen.input_name],
                                       output_names=[frozen.output_name], opset=OPSET, output_path=str(path))

    def _quantize_static(self, request: ExportRequest, prepared, log: StepLog) -> Artifact:
        quant = require("onnxruntime.quantization", "onnx")
        (path,) = request.files(self.format, "int8")
        with log.step(f"ONNX: calibrate and quantize int8 ({len(request.calibration)} samples)"):
            quant.quantize_static(
                str(prepared), str(path), _CalibrationReader(request.calibration, request.frozen().input_name),
                quant_format=quant.QuantFormat.QDQ, per_channel=True,
                activation_type=quant.QuantType.QUInt8, weight_type=quant.QuantType.QInt8,
                calibrate_method=quant.CalibrationMethod.MinMax,
            )
        settings = {"method": "static QDQ", "weights": "int8 per-channel", "activations": "uint8",
                    "calibration": "MinMax"}
        return Artifact(self.format, "int8", [path], settings=settings)

    def _quantize_dynamic(self, request: ExportRequest, prepared, log: StepLog) -> Artifact:
        quant = require("onnxruntime.quantization", "onnx")
        (path,) = request.files(self.format, "int8w")
        with log.step("ONNX: quantize weights to int8 (dynamic)"):
            quant.quantize_dynamic(str(prepared), str(path), weight_type=quant.QuantType.QInt8,
                                   per_channel=True)
        return Artifact(self.format, "int8w", [path],
                        settings={"method": "dynamic", "weights": "int8 per-channel"})


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
