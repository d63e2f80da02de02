"""Accuracy-aware int8 for OpenVINO: NNCF's `quantize_with_accuracy_control`, the format's own
and better tool. It ranks by removing each quantizer in place (no re-quantization) and
measuring, and OpenVINO's int8 ops give float outputs, so removing the one FakeQuantize at a
reader's input is enough."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.formats.graph import Unit, match
from edgekit.formats.openvino.chains import file_chains
from edgekit.formats.selective import top1_of_file, units_from_json

METHOD = "NNCF quantize_with_accuracy_control (its own ranking, absolute drop)"
STEP_KIND = "openvino-quantize"


def search_inputs(request, ranking: list[str], log) -> dict:
    """NNCF re-quantizes the fp32 file with its own ranking."""
    return {"fp32": str(request.files("openvino", "fp32")[0]), "per_tensor": request.per_tensor,
            "ranges": request.ranges}


def search(fp32: str, calibration: str, val_x: str, val_y: str, reference_top1: float, max_drop: float,
           max_steps: int, units: list[dict], out: str, per_tensor: bool = False,
           ranges: str = "default") -> dict:
    """A step: NNCF's accuracy control with an absolute top-1 budget."""
    from edgekit.errors import require
    from edgekit.support.scores import top1
    from edgekit.formats.openvino.export import _nncf_params, _quiet_nncf

    ov, nncf = require("openvino", "openvino"), _quiet_nncf()
    x, y = np.load(val_x), np.load(val_y)
    calib = np.load(calibration)

    def validate(compiled, items):
        output = compiled.outputs[0]
        hits = [float(top1(compiled(batch)[output])[0] == label) for batch, label in items]
        return (float(np.mean(hits)) if hits else 0.0), hits  # per-sample values: NNCF ranks on them

    quantized = nncf.quantize_with_accuracy_control(
        ov.Core().read_model(fp32), nncf.Dataset([calib[i:i + 1] for i in range(len(calib))]),
        nncf.Dataset([(x[i:i + 1], int(y[i])) for i in range(len(x))]), validation_fn=validate,
        max_drop=max_drop / 100, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calib),
        advanced_quantization_parameters=_nncf_params(nncf, per_tensor, ranges),
        advanced_accuracy_restorer_parameters=nncf.AdvancedAccuracyRestorerParameters(max_num_iterations=max_steps))
    ov.save_model(quantized, out, compress_to_fp16=False)
    units_ = units_from_json(units)
    top = top1_of_file(Path(out), x, y)
    floated = float_layers_openvino(Path(out), units_)
    step = {"float_layers": floated, "top1": round(top, 6), "drop_points": round(100 * (reference_top1 - top), 3)}
    return {"steps": [step], "best": step, "stopped_at_limit": False}


OPENVINO_LAYOUT_OPS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "MaxPool", "Pad"}


def float_layers_openvino(path: Path, units: list[Unit]) -> list[str]:
    """Units whose conv/matmul input has no FakeQuantize before it (looking back through
    transposes, reshapes and pools): OpenVINO runs those in float."""
    paired = match(units, file_chains(path))
    return [u.name for u in units if u.name in paired and not _fake_quantized_input(paired[u.name].head)]


def _fake_quantized_input(op, depth: int = 0) -> bool:
    source = op.input(0).get_source_output().get_node()
    kind = source.get_type_name()
    if kind == "FakeQuantize":
        return True
    return kind in OPENVINO_LAYOUT_OPS and depth < 6 and _fake_quantized_input(source, depth + 1)
