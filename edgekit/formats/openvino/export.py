"""OpenVINO IR export: openvino.convert_model once (from the shared frozen graph), NNCF for int8 on that converted model.

Each conversion and quantization is a step (edgekit.support.isolated_steps): paths in, files out; the
quantizers read the fp32 IR back. NNCF 3 has no TensorFlow backend, so quantization runs
on the OpenVINO model. fp32 IR is saved with compress_to_fp16=False (save_model's default
would halve it to fp16).
"""

from __future__ import annotations

from edgekit.errors import ConversionError, first_line, require
from edgekit.formats.exporter import Artifact, ExportRequest, weight_scales
from edgekit.support.progress import StepLog


class OpenVINOExporter:
    format = "openvino"

    def export(self, request: ExportRequest, log: StepLog) -> list[Artifact]:
        fp32_files = request.files(self.format, "fp32")
        fp16_files = request.files(self.format, "fp16") if "fp16" in request.precisions else None
        request.run("openvino-convert", "OpenVINO: convert fp32" + (" and save FP16" if fp16_files else ""),
                    "edgekit.formats.openvino.export:convert",
                    {"source": request.graph_source(log), "out": str(fp32_files[0]),
                     "fp16_out": str(fp16_files[0]) if fp16_files else None}, log)
        artifacts = [Artifact(self.format, "fp32", fp32_files)]
        if fp16_files:
            artifacts.append(Artifact(self.format, "fp16", fp16_files, settings={"method": "FP16 weights"}))
        if "int8" in request.precisions:
            artifacts.append(self._int8(request, fp32_files[0], log))
        if "int8w" in request.precisions:
            artifacts.append(self._int8w(request, fp32_files[0], log))
        return artifacts

    def _int8(self, request: ExportRequest, fp32, log: StepLog) -> Artifact:
        files = request.files(self.format, "int8")
        if request.from_qat:
            request.run("openvino-convert", "OpenVINO: convert int8 from the QAT model",
                        "edgekit.formats.openvino.export:convert", {"source": request.qat_source, "out": str(files[0])}, log)
            return Artifact(self.format, "int8", files, settings={"method": "QAT (learned ranges): FakeQuantize"})
        n = request.calibration_samples
        request.run("openvino-quantize", f"OpenVINO: calibrate and quantize int8 with NNCF ({n} samples)",
                    "edgekit.formats.openvino.export:quantize",
                    {"fp32": str(fp32), "out": str(files[0]), "calibration": request.calibration,
                     "per_tensor": request.per_tensor, "ranges": request.ranges}, log)
        return Artifact(self.format, "int8", files, settings={
            "method": "NNCF post-training quantization", "preset": "performance", "subset_size": n,
            "weights": f"int8 {weight_scales(request.per_tensor)}", "ranges": nncf_ranges_setting(request.ranges)})

    def _int8w(self, request: ExportRequest, fp32, log: StepLog) -> Artifact:
        files = request.files(self.format, "int8w")
        request.run("openvino-quantize", "OpenVINO: compress weights to int8 (NNCF)",
                    "edgekit.formats.openvino.export:compress_weights", {"fp32": str(fp32), "out": str(files[0])}, log)
        return Artifact(self.format, "int8w", files, settings={"method": "NNCF weight compression",
                                                               "mode": "INT8_ASYM"})


# --- steps (each may run in a child process: paths in, files out) -------------------------

def convert(source: dict, out: str, fp16_out: str | None = None) -> None:
    ov = require("openvino", "openvino")
    from edgekit.formats.source import frozen_graph

    try:
        model = ov.convert_model(frozen_graph(source).graph_def, input=[(-1, *source["image_shape"])])
    except Exception as exc:  # noqa: BLE001 - OpConversionFailure and friends share no public base
        if "Conversion" not in type(exc).__name__ and "conversion" not in str(exc).lower():
            raise
        raise ConversionError(f"openvino: convert_model cannot convert this model ({first_line(exc)})") from None
    ov.save_model(model, out, compress_to_fp16=False)
    if fp16_out:
        ov.save_model(model, fp16_out, compress_to_fp16=True)


def quantize(fp32: str, out: str, calibration: str, per_tensor: bool = False, ranges: str = "default") -> None:
    import numpy as np

    ov, nncf = require("openvino", "openvino"), _quiet_nncf()
    x = np.load(calibration)
    dataset = nncf.Dataset([x[i:i + 1] for i in range(len(x))])
    quantized = nncf.quantize(ov.Core().read_model(fp32), dataset, subset_size=len(x),
                              advanced_parameters=_nncf_params(nncf, per_tensor, ranges))
    ov.save_model(quantized, out, compress_to_fp16=False)


# NNCF's own activation range estimators. Its default for per-tensor activations is MEAN_MINMAX
# (the mean over samples of each sample's min and max), not min/max; MEAN_QUANTILE averages each
# sample's quantiles (outlier probability 1e-4); HISTOGRAM minimizes the quantization error.
NNCF_RANGES = {"minmax": "MINMAX", "percentile": "MEAN_QUANTILE", "mse": "HISTOGRAM"}


def nncf_ranges_setting(ranges: str) -> str:
    return f"NNCF {NNCF_RANGES[ranges]}" if ranges in NNCF_RANGES else "NNCF default (MEAN_MINMAX)"


def _nncf_params(nncf, per_tensor: bool, ranges: str = "default"):
    """NNCF's defaults are per-channel weights and its own ranges; the others through its advanced parameters."""
    if not per_tensor and ranges not in NNCF_RANGES:
        return None
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    params = {}
    if per_tensor:
        params["weights_quantization_params"] = QuantizationParameters(per_channel=False)
    if ranges in NNCF_RANGES:
        params["activations_range_estimator_params"] = getattr(RangeEstimatorParametersSet, NNCF_RANGES[ranges])
    return AdvancedQuantizationParameters(**params)


def compress_weights(fp32: str, out: str) -> None:
    ov, nncf = require("openvino", "openvino"), _quiet_nncf()
    compressed = nncf.compress_weights(ov.Core().read_model(fp32), mode=nncf.CompressWeightsMode.INT8_ASYM)
    ov.save_model(compressed, out, compress_to_fp16=False)


def _quiet_nncf():
    import logging

    nncf = require("nncf", "openvino")
    nncf.set_log_level(logging.ERROR)
    return nncf
