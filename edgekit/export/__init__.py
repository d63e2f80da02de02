"""Exporters, one per format. Each converts the Keras model once and derives every
precision from that one conversion (or its intermediate)."""

from __future__ import annotations

FORMATS = ("tflite", "onnx", "openvino")


def exporter_for(fmt: str):
    if fmt == "tflite":
        from edgekit.export.tflite import TFLiteExporter

        return TFLiteExporter()
    if fmt == "onnx":
        from edgekit.export.onnx import OnnxExporter

        return OnnxExporter()
    if fmt == "openvino":
        from edgekit.export.openvino import OpenVINOExporter

        return OpenVINOExporter()
    raise ValueError(fmt)  # formats are validated in the pipeline before we get here
