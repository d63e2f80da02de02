"""Accuracy-aware int8 for integer-only files: a search over the repairs, not over float layers.

Elsewhere `--max-accuracy-drop D` puts the layers that cost most back into float. An integer-only
file (`--integer-only`, or a `--target` whose profile says so) cannot have a float layer, so there
the search tries the repairs instead, cheapest first, and keeps the first attempt whose every int8
file is within D top-1 points of the original float model on the validation data:

  1. the recipe as given (with --integer-only: BatchNorm rewrite and equalization),
  2. + bias correction (a few seconds),
  3. + percentile, then MSE activation ranges (seconds more),
  4. learned rounding instead of bias correction (tens of seconds), then with MSE ranges.

A repair or range the recipe sets itself is kept in every attempt and not varied. When no attempt
is within D, the one with the smallest worst drop is written, and the run exits 1 like a float
fallback that missed its budget. `report.json` `repair_search` lists every attempt.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.compression.config import Recipe


@dataclass(frozen=True)
class Attempt:
    label: str
    recipe: Recipe


def attempts(recipe: Recipe) -> list[Attempt]:
    """The recipe as given, then each addition it leaves open, cheapest first."""
    rounding_open = not (recipe.repairs.bias_correction or recipe.repairs.adaround)
    ranges_open = recipe.ranges == "default"
    steps: list[tuple[str, dict, str | None]] = []
    if rounding_open:
        steps.append(("+ bias correction", {"bias_correction": True}, None))
    if ranges_open:
        extra = {"bias_correction": True} if rounding_open else {}
        prefix = "+ bias correction " if rounding_open else ""
        steps += [(f"{prefix}+ percentile ranges", extra, "percentile"), (f"{prefix}+ MSE ranges", extra, "mse")]
    if rounding_open:
        steps.append(("+ learned rounding", {"adaround": True}, None))
        if ranges_open:
            steps.append(("+ learned rounding + MSE ranges", {"adaround": True}, "mse"))
    found = [Attempt("as given", recipe)]
    for label, repairs, ranges in steps:
        update: dict = {"repairs": recipe.repairs.model_copy(update=repairs)}
        if ranges:
            update["ranges"] = ranges
        found.append(Attempt(label, recipe.model_copy(update=update)))
    return found


def worst_drop(verdicts, reference_top1: float) -> float:
    """The largest top-1 drop, in points, of the int8 files against the original float model."""
    drops = [100 * (reference_top1 - v.accuracy["top1"]) for v in verdicts
             if v.artifact.precision == "int8" and v.accuracy]
    return max(drops, default=0.0)


def attempt_record(attempt: Attempt, verdicts, drop: float, max_drop: float) -> dict:
    recipe = attempt.recipe
    return {"attempt": attempt.label, "repairs": [k for k, on in recipe.repairs.model_dump().items() if on],
            "ranges": recipe.ranges, "worst_drop_points": round(drop, 3), "within": drop <= max_drop,
            "top1": {v.artifact.path.name: v.accuracy["top1"] for v in verdicts
                     if v.artifact.precision == "int8" and v.accuracy}}
