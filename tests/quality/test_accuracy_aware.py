"""Accuracy-aware int8 and per-layer diagnostics on a model plain int8 really breaks: the
digits CNN with two activation outliers ~400× the rest in its hidden Dense layer `fc`
(the same function in float; see edgekit.demo.add_activation_outliers)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import refusal_line, snapshot

pytestmark = pytest.mark.heavy  # whole compress/sweep/demo runs: the full suite, not the quick loop

FORMATS = ("tflite", "onnx", "openvino")
EXT = {"tflite": "tflite", "onnx": "onnx", "openvino": "xml"}


def _compress_outliers(d: dict, out, *extra):
    """compress --int8 of the outlier model with its data, in-process; the result and its report."""
    from typer.testing import CliRunner

    from edgekit.cli import app

    result = CliRunner().invoke(app, ["compress", str(d["model"]), "--int8", "--data", str(d["calib"]),
                                      "--val", str(d["val"]), "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    return result, json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def plain_run(outlier_digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("plain") / "out"
    return out, _compress_outliers(outlier_digits, out, "-q", "--no-bench")[1]


@pytest.fixture(scope="module")
def aware_run(outlier_digits, tmp_path_factory):
    """With host latency: the report says what the mix cost against plain int8."""
    out = tmp_path_factory.mktemp("aware") / "out"
    result, report = _compress_outliers(outlier_digits, out, "--max-accuracy-drop", "0.5")
    return out, report, result


def _drop(report, entry) -> float:
    return 100 * (report["reference"]["accuracy"]["top1"] - entry["accuracy"]["top1"])


def test_plain_int8_loses_at_least_3_points_in_two_formats(plain_run):
    _, report = plain_run
    drops = {a["format"]: _drop(report, a) for a in report["artifacts"] if a["precision"] == "int8"}
    assert sum(d >= 3 for d in drops.values()) >= 2, drops
    for a in report["artifacts"]:  # the float function is intact: the outliers hurt int8 only
        if a["precision"] == "fp32":
            assert a["verification"]["max_abs_diff"] <= 1e-4


def test_report_diagnostics_name_the_outlier_layer_first_in_every_format(plain_run):
    out, report = plain_run
    diagnostics = {d["format"]: d for d in report["diagnostics"]}
    assert set(diagnostics) == set(FORMATS)
    for fmt, d in diagnostics.items():
        worst = d["layers"][0]
        assert worst["layer"] == "fc", (fmt, d["layers"])
        assert worst["outlier_ratio"] > 100 and worst["float_range"][1] > 1000, worst
        assert worst["sqnr_db"] < 10 and worst["added_db"] > 20, worst
        assert d["not_compared"] == [] and {l["layer"] for l in d["layers"]} == {"conv1", "conv2", "fc", "probs"}
        assert d["path"] == f"outliers.int8.{EXT[fmt]}"
    # the report pages show it: a bar chart per format in report.html, a table in report.md
    page = (out / "report.html").read_text()
    assert page.count('alt="per-layer int8 error"') == 3 and "Per-layer int8 error" in page
    markdown = (out / "report.md").read_text()
    assert "## Per-layer int8 error" in markdown and "| tflite-int8 | fc |" in markdown


def test_accuracy_aware_int8_is_within_half_a_point_with_most_macs_int8(aware_run):
    out, report, result = aware_run
    for a in report["artifacts"]:
        if a["precision"] != "int8":
            continue
        record = a["accuracy_aware"]
        assert record["needed"] and record["reached"], record
        assert _drop(report, a) <= 0.5, (a["id"], a["accuracy"])
        assert record["top1"] == pytest.approx(a["accuracy"]["top1"], abs=1e-6)  # the file written is the one found
        # read back from the file itself, not from what the search said it did
        assert a["quantization"]["int8_mac_share"] >= 0.75, (a["id"], a["quantization"])
        assert a["quantization"]["float_mac_ops"] >= 1
        assert record["plain_int8"]["drop_points"] >= 3 or a["format"] == "openvino"
        assert record["plain_int8"]["latency_p50_ms"] > 0 and record["cost"]["latency"] > 0
        assert record["cost"]["size"] == pytest.approx(a["size_bytes"] / record["plain_int8"]["size_bytes"], rel=1e-3)
        if a["format"] in ("tflite", "onnx"):  # the outlier layer and its reader, nothing more
            assert record["float_layers"] == ["fc", "probs"], record
            assert record["ranking"][0] == "fc"
        else:  # OpenVINO's int8 ops give float outputs: dropping the reader's input FakeQuantize is enough
            assert set(record["float_layers"]) <= {"fc", "probs"} and record["float_layers"], record
    # the plain int8 files were measured, not shipped
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["report.json", "report.md", "report.html", "outliers.fp32.tflite", "outliers.int8.tflite",
         "outliers.fp32.onnx", "outliers.int8.onnx", "outliers.fp32.xml", "outliers.fp32.bin", "outliers.int8.xml",
         "outliers.int8.bin"])
    assert "tflite-int8: plain int8 -" in result.stdout and "in float: fc, probs" in result.stdout
    assert "Accuracy-aware int8" in (out / "report.html").read_text()


def test_diagnose_command_names_the_outlier_layer_first_and_fp32_files_match_keras(plain_run, outlier_digits, cli):
    out, _ = plain_run
    int8 = [out / f"outliers.int8.{EXT[f]}" for f in FORMATS]
    fp32 = [out / f"outliers.fp32.{EXT[f]}" for f in FORMATS]
    result = cli("diagnose", outlier_digits["model"], *int8, *fp32, "--data", outlier_digits["val"], "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["data"]["samples"] == 64
    for entry in found["artifacts"][:3]:
        assert entry["layers"][0]["layer"] == "fc", entry
    for entry in found["artifacts"][3:]:  # every tap is the right tensor: fp32 reproduces Keras there
        assert entry["not_compared"] == [] and len(entry["layers"]) == 4
        assert min(l["sqnr_db"] for l in entry["layers"]) >= 60, entry
    table = cli("diagnose", outlier_digits["model"], int8[0], "--data", outlier_digits["val"], "--top", "1")
    assert table.exit_code == 0 and "fc" in table.stdout and "conv1" not in table.stdout, table.stdout


def test_budget_not_reached_is_exit_1_with_the_best_file_and_report_written(outlier_digits, cli, tmp_path):
    """Outliers in two layers (conv1 too) and one step allowed: the best file found is written,
    the report says why, exit 1. With the default step limit the same model gets there."""
    from edgekit.demo import add_activation_outliers

    model = tmp_path / "twice.h5"
    add_activation_outliers(outlier_digits["model"], model, layer="conv1", consumer="conv2")
    recipe = tmp_path / "tight.yaml"
    recipe.write_text("int8: true\nformats: [tflite]\naccuracy_aware: {max_drop: 0.5, max_steps: 1}\n")
    out = tmp_path / "out"
    result = cli("compress", model, "--recipe", recipe, "--data", outlier_digits["calib"],
                 "--val", outlier_digits["val"], "-o", out, "-q")
    assert result.exit_code == 1, result.output
    assert "no int8/float mix within 0.5 top-1 points: tflite-int8 best" in result.stderr
    assert "stopped at max_steps 1" in result.stderr
    record = {a["id"]: a for a in json.loads((out / "report.json").read_text())["artifacts"]}["tflite-int8"]
    assert record["accuracy_aware"]["reached"] is False and len(record["accuracy_aware"]["steps"]) == 1
    assert (out / "twice.int8.tflite").is_file()

    result = cli("compress", model, "--int8", "--formats", "tflite", "--max-accuracy-drop", "0.5", "--data",
                 outlier_digits["calib"], "--val", outlier_digits["val"], "-o", tmp_path / "again", "-q")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "again" / "report.json").read_text())["artifacts"][1]["accuracy_aware"]
    assert record["reached"] and len(record["steps"]) == 2 and {"conv1", "fc"} <= set(record["float_layers"])


BAD = [
    (["--max-accuracy-drop", "0.5"], ["--val"], ["--int8", "--data"]),
    (["--max-accuracy-drop", "0.5"], ["--data"], ["--int8", "--val"]),
    (["--max-accuracy-drop", "-1"], ["--max-accuracy-drop", "-1", "greater than or equal to 0"],
     ["--int8", "--data", "--val"]),
    (["--max-accuracy-drop", "101"], ["--max-accuracy-drop", "less than or equal to 100"], ["--int8", "--data", "--val"]),
    (["--max-accuracy-drop", "0.5", "--qat"], ["QAT"], ["--int8", "--data", "--val"]),
    (["--max-accuracy-drop", "0.5", "--io-dtype", "int8"], ["--io-dtype int8", "float32"],
     ["--int8", "--data", "--val"]),
    (["--max-accuracy-drop", "0.5"], ["needs int8"], ["--data", "--val"]),
]


@pytest.mark.parametrize("args,words,needs", BAD, ids=[" ".join(a + n) for a, _, n in BAD])
def test_bad_accuracy_aware_options_are_refused_before_any_work(args, words, needs, outlier_digits, cli, tmp_path):
    values = {"--data": outlier_digits["calib"], "--val": outlier_digits["val"]}
    given = [x for flag in needs for x in ([flag, values[flag]] if flag in values else [flag])]
    before = snapshot(tmp_path)
    result = cli("compress", outlier_digits["model"], *given, *args, "-o", tmp_path / "out")
    refusal_line(result, words)
    assert snapshot(tmp_path) == before


def test_unknown_accuracy_aware_key_in_a_recipe_is_named(outlier_digits, cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("int8: true\naccuracy_aware: {max_dorp: 1}\n")
    before = snapshot(tmp_path)
    result = cli("compress", outlier_digits["model"], "--recipe", recipe, "--data", outlier_digits["calib"],
                 "--val", outlier_digits["val"], "-o", tmp_path / "out")
    line = refusal_line(result, ["max_dorp", "max_drop"])
    assert "in accuracy_aware" in line
    assert snapshot(tmp_path) == before


def test_diagnose_refuses_files_that_are_not_exports_of_the_model(plain_run, outlier_digits, cli, tmp_path):
    out, _ = plain_run
    before = snapshot(tmp_path)
    # same input shape and classes, different layers: a Dense-only model on 8×8×1
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    other = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(32),
                              keras.layers.Dense(10, activation="softmax")])
    other_path = tmp_path / "other.h5"
    other.save(other_path)
    before = snapshot(tmp_path)
    result = cli("diagnose", other_path, out / "outliers.int8.tflite", "--data", outlier_digits["val"])
    refusal_line(result, ["outliers.int8.tflite", "none of the model's 2 conv/dense layers", "other.h5"])
    assert snapshot(tmp_path) == before


def test_diagnose_refuses_an_artifact_with_another_input_shape(plain_run, outlier_digits, cli, tmp_path):
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    other = keras.Sequential([keras.layers.Input((16, 16, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    other_path = tmp_path / "other.h5"
    other.save(other_path)
    before = snapshot(tmp_path)
    result = cli("diagnose", other_path, plain_run[0] / "outliers.int8.onnx", "--data", outlier_digits["val"])
    refusal_line(result, ["outliers.int8.onnx", "(8, 8, 1)", "(16, 16, 1)", "not an export of this model"])
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("args,words", [
    (["--samples", "0"], ["--samples 0"]),
    (["--top", "0"], ["--top 0"]),
    (["--timeout", "0"], ["--timeout"]),
], ids=["samples-0", "top-0", "timeout-0"])
def test_diagnose_refuses_bad_numbers(args, words, plain_run, outlier_digits, cli, tmp_path):
    before = snapshot(tmp_path)
    result = cli("diagnose", outlier_digits["model"], plain_run[0] / "outliers.int8.tflite", "--data",
                 outlier_digits["val"], *args)
    refusal_line(result, words)
    assert snapshot(tmp_path) == before


def test_diagnose_refuses_missing_and_wrong_files(outlier_digits, plain_run, cli, tmp_path):
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    before = snapshot(tmp_path)
    cases = [
        ((tmp_path / "nope.h5", plain_run[0] / "outliers.int8.tflite", "--data", outlier_digits["val"]),
         ["nope.h5", "no such model"]),
        ((outlier_digits["model"], tmp_path / "x.txt", "--data", outlier_digits["val"]), ["x.txt", "unknown artifact"]),
        ((outlier_digits["model"], text, "--data", outlier_digits["val"]), ["notes.onnx"]),
        ((outlier_digits["model"], plain_run[0] / "outliers.int8.tflite", "--data", tmp_path / "none.npz"),
         ["none.npz"]),
    ]
    for args, words in cases:
        refusal_line(cli("diagnose", *args), words)
    assert snapshot(tmp_path) == before


def test_a_model_without_layers_to_rank_is_refused_before_any_export(digits, cli, tmp_path):
    """A SavedModel has no Keras layers to rank or compare: said right after loading, nothing written."""
    from edgekit.support.keras_compat import tensorflow, tf_keras

    model = tf_keras().models.load_model(digits["model"], compile=False)
    tensorflow().saved_model.save(model, str(tmp_path / "sm"))
    before = snapshot(tmp_path)
    result = cli("compress", tmp_path / "sm", "--int8", "--data", digits["calib"], "--val", digits["val"],
                 "--max-accuracy-drop", "0.5", "-o", tmp_path / "out")
    refusal_line(result, ["sm", "--max-accuracy-drop ranks the layers of a tf_keras model"])
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("mode", ["inline", "child"])
def test_accuracy_aware_search_on_a_keras3_model_in_both_step_modes(mode, outlier_digits, cli, tmp_path, monkeypatch):
    """Issue 22: with a Keras 3 model and steps in-process, the TFLite search reopened working.h5,
    which only child mode writes (exit 3). The outlier CNN rebuilt in Keras 3 needs the search."""
    from edgekit.support.keras_compat import tensorflow, tf_keras

    tensorflow()
    import keras as keras3

    source = tf_keras().models.load_model(outlier_digits["model"])
    L = keras3.layers
    model = keras3.Sequential([L.Input((8, 8, 1)), L.Conv2D(32, 3, activation="relu", name="conv1"),
                               L.Conv2D(64, 3, activation="relu", name="conv2"), L.Flatten(name="flatten"),
                               L.Dense(64, activation="relu", name="fc"), L.Dense(10, activation="softmax", name="probs")])
    model.set_weights(source.get_weights())
    path = tmp_path / "outliers.keras"
    model.save(path)
    monkeypatch.setenv("EDGEKIT_STEP_PROCESSES", mode)
    out = tmp_path / "out"
    result = cli("compress", path, "--int8", "--data", outlier_digits["calib"], "--val", outlier_digits["val"],
                 "--max-accuracy-drop", "0.5", "--formats", "tflite", "-o", out, "-q")
    assert result.exit_code in (0, 1), result.output
    report = json.loads((out / "report.json").read_text())
    assert report["source"]["keras"] == "keras3"
    (aware,) = [a["accuracy_aware"] for a in report["artifacts"] if a["id"] == "tflite-int8"]
    assert aware["needed"] and aware["steps"], aware  # the search ran, re-converting the Keras 3 model
