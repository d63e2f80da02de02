"""TFLite export with tf.lite.TFLiteConverter: fp32, full-integer int8, weight-only int8.

Every precision converts from the one frozen graph (ExportRequest.frozen) that the other
formats share.
Full-integer int8 uses per-channel weights (the converter's default) and calibrates the
activations on the representative dataset.
"""

from __future__ import annotations

from edgekit.export.base import Artifact, ExportRequest
from edgekit.keras_compat import tensorflow
from edgekit.progress import StepLog


class TFLiteExporter:
    format = "tflite"

    def export(self, request: ExportRequest, log: StepLog) -> list[Artifact]:
        tf = tensorflow()
        with log.step("Trace and freeze the model's forward pass"):
            frozen = request.frozen()
        artifacts = []
        for precision in request.precisions_for(self.format):
            qat = precision == "int8" and request.from_qat
            with log.step(f"TFLite: convert {precision}{' from the QAT model' if qat else ''}"):
                graph = request.frozen_qat() if qat else frozen
                converter = tf.lite.TFLiteConverter.from_concrete_functions(
                    [graph.function], tf.Module())  # frozen: no variables to track
                io_dtype = self._configure(converter, precision, request)
                (path,) = request.files(self.format, precision)
                path.write_bytes(converter.convert())
            artifacts.append(Artifact(self.format, precision, [path], io_dtype=io_dtype,
                                      settings=self._settings(precision, qat)))
        return artifacts

    @staticmethod
    def _configure(converter, precision: str, request: ExportRequest) -> str:
        tf = tensorflow()
        if precision == "fp32":
            return "float32"
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if precision == "fp16":
            converter.target_spec.supported_types = [tf.float16]
            return "float32"
        if precision == "int8w":  # dynamic-range quantization: int8 weights, float activations
            return "float32"
        if request.from_qat:  # the fake-quant ranges learned in training; nothing to calibrate
            return _integer_io(converter, request.io_dtype)
        calibration = request.calibration

        def representative_dataset():
            for i in range(len(calibration)):
                yield [calibration[i:i + 1]]

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return _integer_io(converter, request.io_dtype)

    @staticmethod
    def _settings(precision: str, qat: bool = False) -> dict:
        if precision == "int8" and qat:
            return {"method": "QAT (learned ranges)", "weights": "int8 per-channel", "activations": "int8"}
        if precision == "int8":
            return {"method": "full-integer PTQ", "weights": "int8 per-channel", "activations": "int8"}
        if precision == "fp16":
            return {"method": "float16 weights", "weights": "float16"}
        if precision == "int8w":
            return {"method": "dynamic-range", "weights": "int8 per-channel", "activations": "float32"}
        return {}


def _integer_io(converter, io_dtype: str) -> str:
    if io_dtype != "float32":
        tf = tensorflow()
        io_type = {"int8": tf.int8, "uint8": tf.uint8}[io_dtype]
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
    return io_dtype
