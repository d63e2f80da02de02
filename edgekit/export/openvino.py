"""OpenVINO IR export: openvino.convert_model once (from the shared frozen graph), NNCF for int8 on that converted model.

NNCF 3 has no TensorFlow backend, so quantization runs on the OpenVINO model.
fp32 IR is saved with compress_to_fp16=False (save_model's default would halve it to fp16).
"""

from __future__ import annotations

from edgekit.errors import require
from edgekit.export.base import Artifact, ExportRequest
from edgekit.progress import StepLog


class OpenVINOExporter:
    format = "openvino"

    def export(self, request: ExportRequest, log: StepLog) -> list[Artifact]:
        ov = require("openvino", "openvino")
        with log.step("OpenVINO: convert fp32"):
            model = ov.convert_model(request.frozen().graph_def, input=[(-1, *request.image_shape)])
            fp32_files = request.files(self.format, "fp32")
            ov.save_model(model, str(fp32_files[0]), compress_to_fp16=False)
        artifacts = [Artifact(self.format, "fp32", fp32_files)]
        if "fp16" in request.precisions:
            files = request.files(self.format, "fp16")
            with log.step("OpenVINO: save FP16"):
                ov.save_model(model, str(files[0]), compress_to_fp16=True)
            artifacts.append(Artifact(self.format, "fp16", files, settings={"method": "FP16 weights"}))
        if "int8" in request.precisions and request.from_qat:
            files = request.files(self.format, "int8")
            with log.step("OpenVINO: convert int8 from the QAT model"):
                quantized = ov.convert_model(request.frozen_qat().graph_def, input=[(-1, *request.image_shape)])
                ov.save_model(quantized, str(files[0]), compress_to_fp16=False)
            artifacts.append(Artifact(self.format, "int8", files,
                                      settings={"method": "QAT (learned ranges): FakeQuantize"}))
        elif "int8" in request.precisions:
            artifacts.append(self._quantize(model, request, log))
        if "int8w" in request.precisions:
            artifacts.append(self._compress_weights(model, request, log))
        return artifacts

    def _quantize(self, model, request: ExportRequest, log: StepLog) -> Artifact:
        ov = require("openvino", "openvino")
        with log.step(f"OpenVINO: calibrate and quantize int8 with NNCF ({len(request.calibration)} samples)"):
            nncf = _quiet_nncf()
            x = request.calibration
            dataset = nncf.Dataset([x[i:i + 1] for i in range(len(x))])
            quantized = nncf.quantize(model, dataset, subset_size=len(x))
            files = request.files(self.format, "int8")
            ov.save_model(quantized, str(files[0]), compress_to_fp16=False)
        return Artifact(self.format, "int8", files,
                        settings={"method": "NNCF post-training quantization", "preset": "performance",
                                  "subset_size": len(x)})

    def _compress_weights(self, model, request: ExportRequest, log: StepLog) -> Artifact:
        ov = require("openvino", "openvino")
        with log.step("OpenVINO: compress weights to int8 (NNCF)"):
            nncf = _quiet_nncf()
            compressed = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
            files = request.files(self.format, "int8w")
            ov.save_model(compressed, str(files[0]), compress_to_fp16=False)
        return Artifact(self.format, "int8w", files,
                        settings={"method": "NNCF weight compression", "mode": "INT8_ASYM"})


def _quiet_nncf():
    import logging

    nncf = require("nncf", "openvino")
    nncf.set_log_level(logging.ERROR)
    return nncf
