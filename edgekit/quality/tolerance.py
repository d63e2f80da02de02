"""The accuracy tolerance: how many top-1 points a result may lose against the original model.

One rule for every place that judges accuracy (a fine-tuning stage, an artifact, a sweep
cell, the API): the recipe's `accuracy_tolerance` (or --accuracy-tolerance) when set. A
fine-tuning stage is always judged, against STAGE_TOLERANCE when none is set, since it is
where a trained model can be destroyed while its training accuracy looks fine.
"""

from __future__ import annotations

STAGE_TOLERANCE = 3.0  # points


def stage_tolerance(recipe) -> float:
    return recipe.accuracy_tolerance if recipe.accuracy_tolerance is not None else STAGE_TOLERANCE


def signed_points(change: float) -> str:
    """A top-1 change in points with its sign: "+0.56 points" is a gain, "-1.67 points" a loss."""
    return f"{change:+.2f} points"


def over_tolerance(report: dict, tolerance: float | None) -> list[str]:
    """Every quantized artifact that lost more than `tolerance` points, as "id -1.67 points"."""
    ref = (report.get("reference") or {}).get("accuracy")
    if tolerance is None or not ref:
        return []
    return [f"{a['id']} {signed_points(100 * (a['accuracy']['top1'] - ref['top1']))}"
            for a in report["artifacts"]
            if a["precision"] != "fp32" and a.get("accuracy")
            and 100 * (ref["top1"] - a["accuracy"]["top1"]) > tolerance]


def tolerance_message(over: list[str], tolerance: float) -> str:
    return (f"top-1 dropped more than the accuracy tolerance of {tolerance:g} points: {', '.join(over)} "
            "(the artifacts and report were written)")
