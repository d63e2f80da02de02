"""Accuracy-aware int8 for ONNX: ONNX Runtime's `quantize_static(nodes_to_exclude=…)`, layers
floated in the shared ranking (edgekit.formats.selective)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.formats.graph import match
from edgekit.formats.onnx.chains import file_chains
from edgekit.formats.selective import greedy, top1_of_file, units_from_json

METHOD = "ranked by added SQNR loss; ONNX Runtime quantize_static(nodes_to_exclude)"
STEP_KIND = "onnx-quantize"


def search_inputs(request, ranking: list[str], log) -> dict:
    """ONNX re-quantizes its fp32 file."""
    return {"fp32": str(request.files("onnx", "fp32")[0]), "input_name": request.graph_source(log)["input_name"],
            "ranking": ranking, "per_tensor": request.per_tensor, "ranges": request.ranges}


def search(fp32: str, calibration: str, input_name: str, val_x: str, val_y: str, reference_top1: float,
           max_drop: float, max_steps: int, units: list[dict], ranking: list[str], out: str,
           per_tensor: bool = False, ranges: str = "default") -> dict:
    """A step: quantize_static with more nodes excluded until within max_drop."""
    import onnx

    from edgekit.formats.onnx.export import chosen_ranges, prepare, quantize_static

    prepared = prepare(fp32)
    overrides, _ = chosen_ranges(prepared, calibration, input_name, ranges)  # once, for every step
    units_ = units_from_json(units)
    paired = match(units_, file_chains(onnx.load(prepared)))
    x, y = np.load(val_x), np.load(val_y)

    def quantize(names: list[str], step: int) -> Path:
        path = Path.cwd() / f"search-{step}.onnx"
        quantize_static(prepared, str(path), calibration, input_name, exclude=names, prepared=True,
                        per_tensor=per_tensor, overrides=overrides)
        return path

    return greedy(units_, ranking, paired, quantize, lambda p: top1_of_file(p, x, y), reference_top1, max_drop,
                  max_steps, Path(out))
