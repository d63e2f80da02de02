"""Accuracy-aware int8 for integer-only files (issue 26): `--max-accuracy-drop` with
`--integer-only` searches over the repairs and activation ranges, cheapest first, instead of
putting layers back into float, and stops at the first attempt within the budget."""

from __future__ import annotations

import json

from edgekit.compression.config import Recipe
from edgekit.compression.repair_search import attempts
from tests.conftest import snapshot


def test_attempts_go_cheapest_first_and_keep_what_the_recipe_sets():
    labels = [a.label for a in attempts(Recipe(int8=True, integer_only=True))]
    assert labels == ["as given", "+ bias correction", "+ bias correction + percentile ranges",
                      "+ bias correction + MSE ranges", "+ learned rounding", "+ learned rounding + MSE ranges"]
    last = attempts(Recipe(int8=True, integer_only=True))[-1].recipe
    assert last.repairs.adaround and not last.repairs.bias_correction and last.ranges == "mse"
    fixed_ranges = attempts(Recipe(int8=True, integer_only=True, ranges="percentile"))
    assert [a.label for a in fixed_ranges] == ["as given", "+ bias correction", "+ learned rounding"]
    assert all(a.recipe.ranges == "percentile" for a in fixed_ranges)
    fixed_rounding = attempts(Recipe(int8=True, integer_only=True, repairs={"adaround": True}))
    assert [a.label for a in fixed_rounding] == ["as given", "+ percentile ranges", "+ MSE ranges"]
    assert all(a.recipe.repairs.adaround and not a.recipe.repairs.bias_correction for a in fixed_rounding)


def test_the_search_stops_at_the_first_attempt_within_the_budget(digits, hot_pixel_calibration, cli, tmp_path):
    """A hot pixel in the calibration data ruins min/max ranges (TFLite int8 ~53%); bias
    correction cannot help, percentile ranges can: the third attempt is kept, and it is integer."""
    out = tmp_path / "out"
    result = cli("compress", digits["model"], "--int8", "--integer-only", "--max-accuracy-drop", "10",
                 "--formats", "tflite", "--data", hot_pixel_calibration, "--val", digits["val"], "-o", out,
                 "--no-bench")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    search = report["repair_search"]
    assert [a["attempt"] for a in search["attempts"]] == [
        "as given", "+ bias correction", "+ bias correction + percentile ranges"]
    assert [a["within"] for a in search["attempts"]] == [False, False, True] and search["reached"]
    assert search["attempts"][0]["worst_drop_points"] > 30  # what the budget caught
    assert search["chosen"] == 2
    (int8,) = [a for a in report["artifacts"] if a["precision"] == "int8"]
    assert "percentile 99.99" in int8["settings"]["ranges"]
    assert report["repairs"]["bias_correction"]["corrected"]  # the written file is the chosen attempt's
    assert 100 * (search["reference_top1"] - int8["accuracy"]["top1"]) <= 10
    assert report["target"]["checked"][0]["problems"] == []  # still integer-only, read back
    assert "accuracy_aware" not in int8  # no float fallback ran
    assert "attempt 3 (+ bias correction + percentile ranges)" in (out / "report.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["digits.fp32.tflite", "digits.int8.tflite", "report.html",
                                                     "report.json", "report.md"]


def test_a_budget_no_attempt_meets_writes_the_best_and_exits_1(digits, hot_pixel_calibration, cli, tmp_path):
    """A recipe that fixes both the rounding repair and the ranges leaves one attempt; it misses."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("int8: true\ninteger_only: true\nformats: [tflite]\nranges: minmax\n"
                      "repairs: {bias_correction: true}\naccuracy_aware: {max_drop: 1}\n")
    out = tmp_path / "out"
    result = cli("compress", digits["model"], "--recipe", recipe, "--data", hot_pixel_calibration,
                 "--val", digits["val"], "-o", out, "--no-bench")
    assert result.exit_code == 1, result.output
    assert "no repair attempt brought every int8 file within 1 top-1 points" in result.stderr
    search = json.loads((out / "report.json").read_text())["repair_search"]
    assert [a["attempt"] for a in search["attempts"]] == ["as given"] and not search["reached"]
    assert (out / "digits.int8.tflite").exists()


def test_no_validation_data_is_refused(digits, cli, tmp_path):
    before = snapshot(tmp_path)
    result = cli("compress", digits["model"], "--int8", "--integer-only", "--max-accuracy-drop", "1",
                 "--data", digits["calib"], "-o", tmp_path / "out")
    assert result.exit_code == 2 and "--max-accuracy-drop" in result.stderr and "--val" in result.stderr
    assert snapshot(tmp_path) == before
