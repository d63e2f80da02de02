"""`edgekit gate`: a pass, each kind of regression, thresholds, JUnit/summary files, bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.conftest import refusal_line


FIXTURE = Path(__file__).parent / "fixtures" / "report.json"


@pytest.fixture(scope="module")
def baseline():
    """A real compress report, checked in (tests/reports/fixtures/report.json: `edgekit compress
    digits.h5 --int8 --data calib.npz --val val.npz --formats tflite,onnx`), so the gate's tests
    read JSON and run no compress; test_the_checked_in_report_is_what_compress_writes_today keeps
    it honest. Its runs' spread is set tight (p90 = 1.05 × p50, as on a quiet machine): the
    synthetic changes below test the limits, and the noise rules have tests of their own."""
    report = json.loads(FIXTURE.read_text())
    for artifact in report["artifacts"]:
        latency = artifact["latency_ms"]
        latency.update(p90=latency["p50"] * 1.05, std=latency["p50"] * 0.03)
    return report


FREE_KEYS = {"timings_s", "peak_rss_mb"}  # keyed by step titles, which name the run's files


def _shape(value):
    """The keys of a report, all the way down (the first item of each list), without the values."""
    if isinstance(value, dict):
        return {k: None if k in FREE_KEYS else _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value and isinstance(value[0], (dict, list)) else []
    return None


def test_the_checked_in_report_is_what_compress_writes_today(validated_run):
    """The fixture has every field a fresh compress report has, no more, and passes the strict schema."""
    from edgekit.reports.gating import load_report

    fresh = json.loads((validated_run / "report.json").read_text())
    assert _shape(json.loads(FIXTURE.read_text())) == _shape(fresh)
    load_report(FIXTURE, "baseline")


def _write(tmp_path, name, report):
    path = tmp_path / name
    path.write_text(json.dumps(report))
    return path


def _changed(report, artifact_id, change):
    new = copy.deepcopy(report)
    change(next(a for a in new["artifacts"] if a["id"] == artifact_id))
    return new


def _gate(cli, tmp_path, baseline, new, *flags):
    return cli("gate", _write(tmp_path, "new.json", new), "--baseline", _write(tmp_path, "base.json", baseline),
               *flags, "--json")


def test_an_unchanged_report_passes_every_check(cli, tmp_path, baseline):
    result = _gate(cli, tmp_path, baseline, baseline)
    assert result.exit_code == 0, result.output
    checks = json.loads(result.stdout)["checks"]
    assert len(checks) == 3 * len(baseline["artifacts"])  # accuracy, latency, size for each
    assert {c["verdict"] for c in checks} == {"pass"}
    table = cli("gate", _write(tmp_path, "a.json", baseline), "--baseline", _write(tmp_path, "b.json", baseline))
    assert table.exit_code == 0 and "edgekit gate: PASSED" in table.stdout


def _drop_accuracy(points):
    return lambda a: a["accuracy"].update(top1=a["accuracy"]["top1"] - points / 100)


def _slower(factor):
    return lambda a: a["latency_ms"].update(p50=a["latency_ms"]["p50"] * factor)


def _bigger(factor):
    return lambda a: a.update(size_bytes=int(a["size_bytes"] * factor))


@pytest.mark.parametrize("check, change, within", [
    ("accuracy", _drop_accuracy(1.0), _drop_accuracy(0.4)),
    ("latency", _slower(1.25), _slower(1.08)),
    ("size", _bigger(1.10), _bigger(1.04)),
])
def test_each_regression_fails_with_exit_1_and_within_limits_passes(cli, tmp_path, baseline, check, change, within):
    regressed = _gate(cli, tmp_path, baseline, _changed(baseline, "tflite-int8", change))
    assert regressed.exit_code == 1, regressed.output
    failed = [c for c in json.loads(regressed.stdout)["checks"] if c["verdict"] == "fail"]
    assert [(c["artifact"], c["check"]) for c in failed] == [("tflite-int8", check)]
    assert f"tflite-int8 {check}" in regressed.stderr and "gate failed" in regressed.stderr
    ok = _gate(cli, tmp_path, baseline, _changed(baseline, "tflite-int8", within))
    assert ok.exit_code == 0, ok.output


def test_flags_move_the_limits(cli, tmp_path, baseline):
    slower = _changed(baseline, "onnx-int8", _slower(1.5))
    assert _gate(cli, tmp_path, baseline, slower).exit_code == 1
    assert _gate(cli, tmp_path, baseline, slower, "--max-latency-increase", "60").exit_code == 0
    floor = _gate(cli, tmp_path, baseline, baseline, "--min-accuracy", "99.9")
    assert floor.exit_code == 1
    assert {c["check"] for c in json.loads(floor.stdout)["checks"] if c["verdict"] == "fail"} == {"min-accuracy"}
    assert _gate(cli, tmp_path, baseline, baseline, "--min-accuracy", "90").exit_code == 0


@pytest.mark.parametrize("change, note", [
    (lambda a: a.update(device="rpi4"), "devices differ"),
    (lambda a: a.pop("latency_ms"), "no latency in the new report"),
])
def test_latency_that_cannot_be_compared_is_skipped_with_the_reason(cli, tmp_path, baseline, change, note):
    result = _gate(cli, tmp_path, baseline, _changed(baseline, "tflite-fp32", change))
    assert result.exit_code == 0, result.output
    (latency,) = [c for c in json.loads(result.stdout)["checks"]
                  if c["artifact"] == "tflite-fp32" and c["check"] == "latency"]
    assert latency["verdict"] == "skipped" and note in latency["note"]


def test_another_cpu_makes_host_latency_incomparable(cli, tmp_path, baseline):
    other = copy.deepcopy(baseline)
    other["host"]["cpu"] = "Some Other CPU"
    result = _gate(cli, tmp_path, baseline, other)
    assert result.exit_code == 0
    latency = [c for c in json.loads(result.stdout)["checks"] if c["check"] == "latency"]
    assert all(c["verdict"] == "skipped" and "different CPUs" in c["note"] for c in latency)


def test_junit_and_summary_are_written_even_when_the_gate_fails(cli, tmp_path, baseline):
    new = _changed(_changed(baseline, "tflite-int8", _drop_accuracy(2)), "onnx-fp32", _bigger(1.5))
    new = _changed(new, "onnx-int8", lambda a: a.update(device="rpi4"))
    junit, summary = tmp_path / "gate.xml", tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    result = _gate(cli, tmp_path, baseline, new, "--junit", junit, "--summary", summary)
    assert result.exit_code == 1
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert int(suite.get("tests")) == len(cases) == 3 * len(baseline["artifacts"])
    assert int(suite.get("failures")) == 2 == sum(case.find("failure") is not None for case in cases)
    assert int(suite.get("skipped")) == 1 == sum(case.find("skipped") is not None for case in cases)
    failed = {(c.get("classname"), c.get("name")) for c in cases if c.find("failure") is not None}
    assert failed == {("edgekit.gate.tflite-int8", "accuracy"), ("edgekit.gate.onnx-fp32", "size")}
    text = summary.read_text()
    assert text.startswith("# earlier step\n")  # appended, as $GITHUB_STEP_SUMMARY expects
    assert "edgekit gate: FAILED (2 regressions)" in text and "| tflite-int8 | accuracy |" in text


def test_thresholds_from_gate_yaml_and_flags_win(cli, tmp_path, baseline):
    config = tmp_path / "gate.yaml"
    config.write_text("max_latency_increase: 60\nmax_size_increase: 1\n")
    slower = _changed(baseline, "onnx-int8", _slower(1.5))
    assert _gate(cli, tmp_path, baseline, slower, "--config", config).exit_code == 0
    assert _gate(cli, tmp_path, baseline, slower, "--config", config, "--max-latency-increase", "10").exit_code == 1


@pytest.mark.parametrize("text, words", [
    ("max_latency_increse: 60\n", ["gate.yaml", "max_latency_increse", "allowed: max_accuracy_drop"]),
    ("max_size_increase: -3\n", ["gate.yaml", "max_size_increase", "greater than or equal to 0"]),
    ("- 1\n- 2\n", ["gate.yaml", "mapping"]),
    ("max_accuracy_drop: 0.5\nmax_accuracy_drop: 50\n", ["gate.yaml", "'max_accuracy_drop' appears twice"]),
    ("max_accuracy_drop: 1e9\n", ["gate.yaml", "max_accuracy_drop", "less than or equal to 100"]),
])
def test_a_bad_gate_yaml_is_exit_2_naming_the_field(cli, tmp_path, baseline, text, words):
    config = tmp_path / "gate.yaml"
    config.write_text(text)
    refusal_line(_gate(cli, tmp_path, baseline, baseline, "--config", config), words)


def _not_a_report(tmp_path, baseline):
    return _write(tmp_path, "new.json", {"hello": 1})


def _not_json(tmp_path, baseline):
    path = tmp_path / "new.json"
    path.write_text("{oops")
    return path


BAD_INPUT = {
    "missing report": (lambda tmp, base: tmp / "nope.json", ["report", "nope.json", "does not exist"]),
    "not JSON": (_not_json, ["is not JSON"]),
    "not a report": (_not_a_report, ["is not an edgekit report.json"]),
    "unknown schema": (lambda tmp, base: _write(tmp, "new.json", {**base, "schema": "edgekit.reports.report/2"}),
                       ["edgekit.reports.report/2", "reads 'edgekit.reports.report/1'"]),
    "artifact missing": (lambda tmp, base: _write(tmp, "new.json", {**base, "artifacts": base["artifacts"][1:]}),
                         ["has no tflite-fp32", "--allow-missing"]),
}


@pytest.mark.parametrize("name", BAD_INPUT)
def test_bad_input_is_exit_2_and_writes_nothing(cli, tmp_path, baseline, name):
    make, words = BAD_INPUT[name]
    new = make(tmp_path, baseline)
    junit, summary = tmp_path / "gate.xml", tmp_path / "summary.md"
    result = cli("gate", new, "--baseline", _write(tmp_path, "base.json", baseline), "--junit", junit,
                 "--summary", summary)
    refusal_line(result, words)
    assert not junit.exists() and not summary.exists()


def test_missing_baseline_is_exit_2(cli, tmp_path, baseline):
    refusal_line(cli("gate", _write(tmp_path, "new.json", baseline), "--baseline", tmp_path / "main.json"),
                 ["baseline", "main.json", "does not exist"])


def test_allow_missing_skips_a_dropped_artifact(cli, tmp_path, baseline):
    fewer = {**baseline, "artifacts": baseline["artifacts"][1:]}
    result = _gate(cli, tmp_path, baseline, fewer, "--allow-missing")
    assert result.exit_code == 0, result.output
    (presence,) = [c for c in json.loads(result.stdout)["checks"] if c["check"] == "presence"]
    assert presence["artifact"] == "tflite-fp32" and presence["verdict"] == "skipped"


def test_junit_is_not_written_through_a_planted_temporary_link(cli, tmp_path, baseline):
    """A symlink waiting at the old predictable temporary name is left alone: the file is
    written under a fresh exclusive name and moved into place."""
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (out / ".gate.xml.tmp").symlink_to(victim)
    result = _gate(cli, tmp_path, baseline, baseline, "--junit", out / "gate.xml")
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious\n"
    assert ElementTree.parse(out / "gate.xml").getroot().find("testsuite") is not None
    assert sorted(p.name for p in out.iterdir()) == [".gate.xml.tmp", "gate.xml"]  # no temporary left


def _set(field, value):
    def change(report):
        report = copy.deepcopy(report)
        target = report["artifacts"][0]
        *path, last = field.split(".")
        for key in path:
            target = target[key]
        target[last] = value
        return report
    return change


HOSTILE = {  # the gate must fail closed: each of these passed before, or crashed (exit 3)
    "NaN accuracy": (_set("accuracy.top1", float("nan")), ["NaN is not a JSON number"]),
    "infinite latency": (_set("latency_ms.p50", float("inf")), ["Infinity is not a JSON number"]),
    "size 0": (_set("size_bytes", 0), ["artifacts[0].size_bytes", "greater than 0"]),
    "negative size": (_set("size_bytes", -5), ["artifacts[0].size_bytes"]),
    "size as a string": (_set("size_bytes", "123"), ["artifacts[0].size_bytes", "integer"]),
    "top1 true": (_set("accuracy.top1", True), ["artifacts[0].accuracy.top1"]),
    "top1 above 1": (_set("accuracy.top1", 97.0), ["artifacts[0].accuracy.top1", "less than or equal to 1"]),
    "duplicate id, bad copy first": (
        lambda r: {**r, "artifacts": [_set("size_bytes", 1)(r)["artifacts"][0], *r["artifacts"]]},
        ["artifacts", "appears more than once"]),
    "empty id": (_set("id", ""), ["artifacts[0].id"]),
    # issue 22: the recipe and source a report records are typed too
    "calib_samples as a word": (lambda r: {**r, "recipe": {**r["recipe"], "calib_samples": "lots"}},
                                ["recipe.calib_samples", "integer"]),
    "tolerance negative": (lambda r: {**r, "recipe": {**r["recipe"], "accuracy_tolerance": -1.0}},
                           ["recipe.accuracy_tolerance"]),
    "params as a string": (lambda r: {**r, "source": {**r["source"], "params": "85k"}}, ["source.params"]),
    # issue 23: nothing to compare, and numbers whose ratios are not finite (exit 3 before)
    "no artifacts": (lambda r: {**r, "artifacts": []}, ["artifacts", "at least 1"]),
    "size 10**400": (_set("size_bytes", 10**400), ["artifacts[0].size_bytes", "less than or equal"]),
    "p50 1e308": (_set("latency_ms.p50", 1e308), ["artifacts[0].latency_ms.p50", "less than or equal"]),
    "p50 5e-324": (_set("latency_ms.p50", 5e-324), ["artifacts[0].latency_ms.p50", "greater than or equal"]),
    "format evil": (_set("format", "evil"), ["artifacts[0].format", "'tflite', 'onnx' or 'openvino'"]),
    "precision int4": (_set("precision", "int4"), ["artifacts[0].precision"]),
    "reference top1 high": (lambda r: {**r, "reference": {**r["reference"], "accuracy": {"top1": "high"}}},
                            ["reference.accuracy.top1"]),
    "reference a list": (lambda r: {**r, "reference": [1, 2]}, ["reference", "dictionary"]),
    # found by tests/reports/test_fuzz_files.py: the gate's noise rule reads benchmark.runs (exit 3 before)
    "benchmark true": (_set("benchmark", True), ["artifacts[0].benchmark"]),
    "benchmark runs as a word": (_set("benchmark", {"runs": "many"}), ["artifacts[0].benchmark.runs"]),
}


@pytest.mark.parametrize("side", ["report", "baseline"])
@pytest.mark.parametrize("name", HOSTILE)
def test_a_report_that_breaks_the_schema_is_exit_2_naming_the_field(cli, tmp_path, baseline, name, side):
    make, words = HOSTILE[name]
    bad = make(baseline)
    new, base = (bad, baseline) if side == "report" else (baseline, bad)
    junit = tmp_path / "gate.xml"
    result = _gate(cli, tmp_path, base, new, "--min-accuracy", "99.9", "--junit", junit)
    refusal_line(result, [side, *words])
    assert not junit.exists()


def test_reports_compress_writes_satisfy_the_strict_schema(validated_run):
    from edgekit.reports.report_schema import parse_strict_json, validate_report

    validate_report(parse_strict_json((validated_run / "report.json").read_text()))


@pytest.mark.heavy
def test_same_model_twice_passes_while_the_machine_is_busy(cli, digits, tmp_path):
    """Issue 22: two compress runs of one model, the second while a CPU-heavy job runs, then the
    gate: exit 0. Both folders are there, so the gate measures both files side by side."""
    import subprocess
    import sys

    def compress(out):
        result = cli("compress", digits["model"], "--int8", "--data", digits["calib"], "--val", digits["val"],
                     "--formats", "tflite,onnx", "-o", out, "-q", "--bench-here")
        assert result.exit_code == 0, result.output
        return out / "report.json"

    first = compress(tmp_path / "a")
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 600\nwhile time.time() < end: pass"])
    try:
        second = compress(tmp_path / "b")
        result = cli("gate", second, "--baseline", first, "--json")
    finally:
        busy.kill()
        busy.wait()
    assert result.exit_code == 0, result.output
    latency = [c for c in json.loads(result.stdout)["checks"] if c["check"] == "latency"]
    assert latency and all(c["method"] == "remeasured" and c["verdict"] in ("pass", "skipped") for c in latency)
    assert all("too noisy to judge" in c["note"] for c in latency if c["verdict"] == "skipped")


def test_recorded_latency_within_its_own_noise_is_not_a_failure(cli, tmp_path, baseline):
    """Without the files, the recorded spread decides: a +30% p50 from runs whose p90 is 3× their
    p50 is too noisy to judge (skipped, said so); the same +30% from tight runs fails."""
    def noisy(a):
        a["latency_ms"].update(p90=a["latency_ms"]["p50"] * 4.0)
        a["latency_ms"]["p50"] *= 1.3

    result = _gate(cli, tmp_path, baseline, _changed(baseline, "tflite-int8", noisy))
    assert result.exit_code == 0, result.output
    (latency,) = [c for c in json.loads(result.stdout)["checks"]
                  if c["artifact"] == "tflite-int8" and c["check"] == "latency"]
    assert latency["verdict"] == "skipped" and "too noisy to judge" in latency["note"] and latency["method"] == "recorded"

    def tight(a):
        a["latency_ms"].update(p90=a["latency_ms"]["p50"] * 1.3 * 1.02)
        a["latency_ms"]["p50"] *= 1.3

    tight_base = _changed(baseline, "tflite-int8", lambda a: a["latency_ms"].update(p90=a["latency_ms"]["p50"] * 1.02))
    assert _gate(cli, tmp_path, tight_base, _changed(tight_base, "tflite-int8", tight)).exit_code == 1


@pytest.mark.parametrize("key", ["size_bytes", "top1", "id", "schema"])
@pytest.mark.parametrize("side", ["report", "baseline"])
def test_a_key_twice_in_one_object_is_exit_2(cli, tmp_path, baseline, key, side):
    """json.loads keeps the last of two equal keys: a huge size_bytes shown first to a reviewer,
    the real one last to the gate, passed. Refused on either side, nothing written."""
    text = json.dumps(baseline)
    twice = {"size_bytes": '"size_bytes": 999999999999, ', "top1": '"top1": 0.01, ', "id": '"id": "decoy", ',
             "schema": '"schema": "edgekit.reports.report/0", '}[key]
    at = text.index(f'"{key}": ')
    bad = tmp_path / "bad.json"
    bad.write_text(text[:at] + twice + text[at:])
    good = _write(tmp_path, "good.json", baseline)
    new, base = (bad, good) if side == "report" else (good, bad)
    junit = tmp_path / "gate.xml"
    result = cli("gate", new, "--baseline", base, "--junit", junit)
    refusal_line(result, [side, "bad.json", f"'{key}' appears twice"])
    assert not junit.exists()


def test_a_new_report_without_accuracy_fails_the_accuracy_checks(cli, tmp_path, baseline):
    """Fail closed: a new report whose every accuracy is null shows no drop, and passed with the
    checks skipped. Each accuracy check now fails, naming the way out."""
    blind = copy.deepcopy(baseline)
    for artifact in blind["artifacts"]:
        artifact["accuracy"] = None
    result = _gate(cli, tmp_path, baseline, blind)
    assert result.exit_code == 1, result.output
    accuracy = [c for c in json.loads(result.stdout)["checks"] if c["check"] == "accuracy"]
    assert len(accuracy) == len(baseline["artifacts"])
    assert all(c["verdict"] == "fail" and "--val" in c["note"] for c in accuracy)
    # the other way round (no accuracy in the baseline) there is nothing to hold the new one to
    result = _gate(cli, tmp_path, blind, baseline)
    assert result.exit_code == 0, result.output


def test_max_accuracy_drop_over_100_points_is_refused(cli, tmp_path, baseline):
    refusal_line(_gate(cli, tmp_path, baseline, baseline, "--max-accuracy-drop", "1e9"),
                 ["--max-accuracy-drop", "less than or equal to 100"])
