"""Accuracy-aware int8 for TFLite: the converter's selective quantization (`denylisted_nodes`)
on a model calibrated once, layers floated in the shared ranking (edgekit.formats.selective)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.formats.selective import greedy, top1_of_file, units_from_json
from edgekit.formats.tflite.chains import file_chains
from edgekit.formats.graph import match

METHOD = "ranked by added SQNR loss; TFLite selective quantization (denylisted_nodes)"
STEP_KIND = "tflite-convert"


def search_inputs(request, ranking: list[str], log) -> dict:
    """TFLite re-converts from the model itself."""
    return {"source": request.source, "ranking": ranking, "per_tensor": request.per_tensor, "ranges": request.ranges}


def search(source: dict, calibration: str, val_x: str, val_y: str, reference_top1: float, max_drop: float,
           max_steps: int, units: list[dict], ranking: list[str], out: str, per_tensor: bool = False,
           ranges: str = "default") -> dict:
    """A step: calibrate once, then quantize with more layers denylisted until within max_drop."""
    from tensorflow.lite.python import convert as tflite_convert

    from edgekit.formats.tflite.export import configure, converter_for
    from edgekit.formats.tflite.ranges import activation_ranges

    with converter_for(source) as converter, activation_ranges(ranges, calibration):
        configure(converter, "int8", calibration, "float32", qat=False, per_tensor=per_tensor)
        converter._experimental_calibrate_only = True  # noqa: SLF001 - what QuantizationDebugger does
        calibrated = converter.convert()
    calibrated_path = Path.cwd() / "calibrated.tflite"
    calibrated_path.write_bytes(calibrated)
    units_ = units_from_json(units)
    paired = match(units_, file_chains(calibrated_path))
    x, y = np.load(val_x), np.load(val_y)

    def quantize(names: list[str], step: int) -> Path:
        path = Path.cwd() / f"search-{step}.tflite"
        path.write_bytes(tflite_convert.mlir_quantize(calibrated, denylisted_nodes=names))
        return path

    return greedy(units_, ranking, paired, quantize, lambda p: top1_of_file(p, x, y), reference_top1, max_drop,
                  max_steps, Path(out))
