"""What edgekit prints: results alone on stdout, no library noise, whole tables in a pipe,
honest help and messages. Real runs, stdout and stderr captured apart."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

EDGEKIT = [sys.executable, "-m", "edgekit"]


def _run(*args, timeout=600):
    return subprocess.run([*EDGEKIT, *map(str, args)], capture_output=True, text=True, timeout=timeout)


# --- streams and noise ----------------------------------------------------------------------

@pytest.mark.parametrize("quiet", [False, True])
def test_stdout_holds_only_the_table_and_q_silences_the_libraries_too(quiet, cli, digits, tmp_path):
    """NNCF's "Statistics collection" bars went to stdout, in the middle of the table, even
    with -q. Now: progress on stderr, and with -q nothing at all."""
    result = cli("compress", digits["model"], "--int8", "--data", digits["calib"], "--formats", "openvino,onnx",
                 "-o", tmp_path / "out", *(["-q"] if quiet else []))
    assert result.exit_code == 0, result.output
    assert "Statistics collection" not in result.stdout and "Fast Bias" not in result.stdout
    assert result.stdout.lstrip().startswith("edgekit:") and "openvino-int8" in result.stdout
    if quiet:
        assert result.stderr == ""
    else:
        assert "Statistics collection" in result.stderr  # library progress is progress: stderr
    assert "Warning" not in result.stderr and "WARNING" not in result.stderr


@pytest.mark.heavy
def test_mobilenetv3_through_tf2onnx_prints_no_traceback_or_warning(tmp_path):
    subprocess.run([sys.executable, "-m", "tests.zoo_build", "tf_keras", "MobileNetV3Small", "32", str(tmp_path)],
                   check=True, capture_output=True, timeout=600)
    done = _run("compress", tmp_path / "MobileNetV3Small.h5", "--int8", "--data", tmp_path / "data.npz",
                "--formats", "onnx", "-o", tmp_path / "out", "--no-bench")
    assert done.returncode == 0, done.stderr[-3000:]
    for noise in ("Traceback", "optimize_transpose", "WARNING", "Warning", "out-of-range"):
        assert noise not in done.stderr, (noise, done.stderr[-2000:])


def test_debug_works_after_the_subcommand(tmp_path):
    done = _run("inspect", tmp_path / "nope.h5", "--debug")
    assert done.returncode == 2, done.stderr
    assert "No such option" not in done.stderr
    assert "ModelError" in done.stderr  # --debug shows the traceback


def test_json_output_is_valid_for_json_tool(validated_run, digits):
    done = subprocess.run(f"{sys.executable} -m edgekit eval {validated_run / 'digits.int8.tflite'} "
                          f"--data {digits['val']} --json | {sys.executable} -m json.tool",
                          shell=True, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["artifacts"][0]["accuracy"]["top1"] > 0.9


# --- tables that survive a pipe ------------------------------------------------------------

@pytest.mark.heavy
def test_tables_in_a_pipe_are_never_cut(digits, tmp_path):
    """Rich cuts tables to 80 columns when stdout is not a terminal: `97.2…`, `openvino-fp…`."""
    done = _run("compress", digits["model"], "--prune", "0.5", "--int8", "--data", digits["calib"], "--val",
                digits["val"], "--epochs", "1", "-o", tmp_path / "out", "--no-bench", "-q")
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout
    for artifact in ("openvino-fp32", "openvino-int8", "tflite-int8"):
        assert artifact in done.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    top1 = f"{100 * report['artifacts'][0]['accuracy']['top1']:.2f}%"
    assert top1 in done.stdout


# --- help and messages ---------------------------------------------------------------------

def test_help_shows_no_bool_placeholder_and_the_gate_defaults():
    compress, gate = _run("compress", "--help"), _run("gate", "--help")
    assert "<bool>" not in compress.stdout and "--int8" in compress.stdout
    for default in ("[default: 0.5]", "[default: 10]", "[default: 5]"):
        assert default in gate.stdout


@pytest.mark.heavy
def test_unquoted_two_four_in_a_recipe_is_the_structure(cli, digits, tmp_path):
    """YAML 1.1 reads `2:4` as the base-60 number 124; the README writes it unquoted."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages:\n  - {type: prune, sparsity: 0.5, epochs: 1, structure: 2:4}\nformats: [tflite]\n")
    result = cli("compress", digits["model"], "--recipe", recipe, "--data", digits["calib"], "-o", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["stages"]["prune"]["schedule"]["structure"] == "2:4"


@pytest.mark.parametrize("case", ["fp16 and int8", "misspelled key"])
def test_validation_messages_read_like_ours(case, cli, digits, tmp_path):
    from tests.conftest import refusal_line

    if case == "fp16 and int8":
        result = cli("compress", digits["model"], "--fp16", "--int8", "-o", tmp_path / "out")
        line = refusal_line(result, ["fp16"])
    else:
        recipe = tmp_path / "r.yaml"
        recipe.write_text("stages:\n  - {type: prune, sparsty: 0.5}\n")
        result = cli("compress", digits["model"], "--recipe", recipe, "--data", digits["calib"], "-o", tmp_path / "out")
        line = refusal_line(result, ["unknown field", "sparsty", "allowed:", "sparsity"])
        assert "Field required" not in line
    assert "Value error" not in line and "value error" not in line


def test_facts_are_shown_as_they_are(cli, digits, validated_run, tmp_path):
    from edgekit.support.keras_compat import tensorflow, tf_keras

    tensorflow().saved_model.save(tf_keras().models.load_model(digits["model"], compile=False), str(tmp_path / "sm"))
    shown = cli("inspect", tmp_path / "sm").stdout
    assert "TensorFlow SavedModel" in shown and "savedmodel · none" not in shown
    h5 = cli("inspect", digits["model"]).stdout
    assert "tf_keras or standalone Keras 2" in h5
    one = cli("eval", validated_run / "digits.fp32.tflite", "--data", digits["val"])
    assert one.exit_code == 0 and "one artifact" not in one.stdout and "agreement" not in one.stdout
    evaluation = json.loads(cli("eval", validated_run / "digits.fp32.tflite", "--data", digits["val"], "--json").stdout)
    assert evaluation["artifacts"][0]["input"] == {"dtype": "float32", "scale": None, "zero_point": None}


def test_eval_names_artifacts_of_the_same_name_apart(cli, validated_run, digits, tmp_path):
    import shutil

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(validated_run / "digits.int8.tflite", tmp_path / folder)
    result = cli("eval", tmp_path / "a" / "digits.int8.tflite", tmp_path / "b" / "digits.int8.tflite",
                 validated_run / "digits.int8.tflite", "--data", digits["val"], "--json")
    evaluation = json.loads(result.stdout)
    names = [a["name"] for a in evaluation["artifacts"]]
    assert len(set(names)) == 3 and names[0] == "a/digits.int8.tflite"
    assert len(evaluation["agreement"]) == 3 and set(evaluation["agreement"].values()) == {1.0}


def test_notes_say_what_was_done_to_the_data(cli, digits, tmp_path):
    from PIL import Image

    x = np.load(digits["calib"])["x"]
    for i in range(20):
        folder = tmp_path / "imgs" / str(i % 2)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((x[i, ..., 0] * 255).astype(np.uint8), mode="L").resize((32, 32)).save(folder / f"{i}.png")
    result = cli("compress", digits["model"], "--int8", "--data", tmp_path / "imgs", "--calib-samples", "5000",
                 "--formats", "tflite", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "images of 32×32 were resized to the model's 8×8" in result.stderr
    assert "--calib-samples 5000: --data holds 20 samples; calibrating on all 20" in result.stderr


def test_accuracy_and_agreement_break_ties_the_same_way():
    from edgekit.quality.evaluation import accuracy, agreement, confusion

    tied = np.array([[0.5, 0.5, 0.0], [0.2, 0.4, 0.4]], np.float32)
    labels = np.array([0, 1])
    assert accuracy(tied, labels)["top1"] == 1.0  # ties go to the lower class, as argmax picks
    assert agreement(tied, np.eye(3, dtype=np.float32)[labels]) == 1.0
    assert confusion(tied, labels, 3) == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
