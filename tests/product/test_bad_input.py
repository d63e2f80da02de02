"""Every bad input the compress issue names: exit 2, one line naming the file or option and
the fix, no traceback, and nothing new (or changed) in the output folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import refusal_line, snapshot


def _make_two_output_model(path):
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    inp = keras.layers.Input((8, 8, 1))
    x = keras.layers.Flatten()(inp)
    model = keras.Model(inp, [keras.layers.Dense(10)(x), keras.layers.Dense(3)(x)])
    model.save(path)


def _write_png(path, mode, size=(8, 8)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"L": (), "RGB": (3,)}[mode]
    Image.fromarray(np.zeros((*size, *channels), np.uint8), mode=mode).save(path)


def _case(name, tmp, digits):
    """Build one bad input under tmp; return (compress args, words the message must hold)."""
    model = str(digits["model"])
    if name == "missing model":
        return [tmp / "nope.h5", "--int8"], ["nope.h5", "does not exist"]
    if name == "text file named .h5":
        (tmp / "notes.h5").write_text("this is not a model\n")
        return [tmp / "notes.h5", "--int8"], ["notes.h5", "not a Keras model file"]
    if name == "truncated .h5":
        data = digits["model"].read_bytes()
        (tmp / "cut.h5").write_bytes(data[: len(data) // 3])
        return [tmp / "cut.h5", "--int8"], ["cut.h5", "truncated or corrupted"]
    if name == "two outputs":
        _make_two_output_model(tmp / "two.h5")
        return [tmp / "two.h5", "--int8"], ["one output", "(None, 10), (None, 3)"]
    if name == "empty calibration folder":
        (tmp / "calib").mkdir()
        return [model, "--int8", "--data", tmp / "calib"], ["--data", "no class sub-folders"]
    if name == "calibration folder without class sub-folders":
        _write_png(tmp / "flat" / "a.png", "L")
        return [model, "--int8", "--data", tmp / "flat"], ["--data", "no class sub-folders", "one folder per class"]
    if name == "class folders without images":
        (tmp / "calib" / "cat").mkdir(parents=True)
        return [model, "--int8", "--data", tmp / "calib"], ["--data", "no images"]
    if name == "colour images for a greyscale model":
        _write_png(tmp / "calib" / "zero" / "a.png", "RGB")
        return [model, "--int8", "--data", tmp / "calib"], ["a.png", "colour image", "1-channel", "greyscale"]
    if name == "npz without x":
        np.savez(tmp / "bad.npz", images=np.zeros((4, 8, 8, 1), np.float32))
        return [model, "--int8", "--data", tmp / "bad.npz"], ["bad.npz", "no array `x`", "images", "np.savez"]
    if name == "npz x of the wrong shape":
        np.savez(tmp / "big.npz", x=np.zeros((4, 28, 28, 1), np.float32), y=np.zeros(4, np.int64))
        return [model, "--int8", "--data", tmp / "big.npz"], ["big.npz", "(4, 28, 28, 1)", "(N, 8, 8, 1)"]
    if name == "npz x of the wrong shape in --val":
        np.savez(tmp / "val.npz", x=np.zeros((4, 8, 8, 3), np.float32), y=np.zeros(4, np.int64))
        return [model, "--val", tmp / "val.npz"], ["--val", "(4, 8, 8, 3)"]
    if name == "unknown format":
        return [model, "--int8", "--formats", "tflite,coreml"], ["--formats", "coreml", "tflite,onnx,openvino"]
    if name == "unknown preprocess":
        return [model, "--int8", "--data", digits["calib"], "--preprocess", "imagenet"], ["--preprocess", "unit"]
    if name == "integer I/O without calibration":
        return [model, "--int8", "--io-dtype", "int8"], ["--io-dtype", "--data"]
    if name in ("NaN in calibration data", "Inf in validation data"):
        x = np.load(digits["calib"])["x"][:20].copy()
        x[3, 0, 0, 0], x[7, 2, 2, 0] = (np.nan, np.nan) if name.startswith("NaN") else (np.inf, -np.inf)
        np.savez(tmp / "poisoned.npz", x=x, y=np.zeros(20, np.int64))
        option = "--data" if name.startswith("NaN") else "--val"
        return [model, "--int8", option, tmp / "poisoned.npz"], [option, "2 of 20 samples hold NaN or Inf"]
    if name == "label -1 in validation data":
        np.savez(tmp / "neg.npz", x=np.zeros((4, 8, 8, 1), np.float32), y=np.array([0, 1, -1, 2]))
        return [model, "--val", tmp / "neg.npz"], ["--val", "labels run from -1", "0 … 9"]
    if name == "uint64 labels past int64":
        np.savez(tmp / "huge.npz", x=np.zeros((2, 8, 8, 1), np.float32), y=np.array([1, 2 ** 63], np.uint64))
        return [model, "--val", tmp / "huge.npz"], ["--val", "huge.npz", "class indices up to 9223372036854775808"]
    if name == "constant calibration data":
        np.savez(tmp / "flat.npz", x=np.full((30, 8, 8, 1), 0.5, np.float32), y=np.zeros(30, np.int64))
        return [model, "--int8", "--data", tmp / "flat.npz"], ["--data", "all 30 calibration samples are the same image"]
    raise AssertionError(name)


CASES = [
    "missing model", "text file named .h5", "truncated .h5", "two outputs",
    "empty calibration folder", "calibration folder without class sub-folders", "class folders without images",
    "colour images for a greyscale model", "npz without x", "npz x of the wrong shape",
    "npz x of the wrong shape in --val", "unknown format", "unknown preprocess",
    "integer I/O without calibration", "NaN in calibration data", "Inf in validation data",
    "label -1 in validation data", "uint64 labels past int64", "constant calibration data",
]


@pytest.mark.parametrize("name", CASES)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(name, cli, digits, tmp_path):
    args, words = _case(name, tmp_path, digits)
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    result = cli("compress", *args, "-o", out)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    assert not out.exists()
    assert snapshot(tmp_path) == before  # no staging folder or partial file left anywhere


def test_existing_artifacts_without_force_are_left_untouched(cli, digits, tmp_path):
    out = tmp_path / "out"
    assert cli("compress", digits["model"], "--int8", "--formats", "tflite", "-o", out).exit_code == 0
    before = snapshot(tmp_path)
    contents = {p.name: p.read_bytes() for p in out.iterdir()}
    result = cli("compress", digits["model"], "--int8", "--formats", "tflite", "-o", out)
    assert result.exit_code == 2
    assert "already holds digits.fp32.tflite" in result.stderr and "--force" in result.stderr
    assert snapshot(tmp_path) == before
    assert {p.name: p.read_bytes() for p in out.iterdir()} == contents


def test_failed_verification_is_an_error_and_leaves_nothing(cli, digits, tmp_path, monkeypatch):
    """A float export that does not match Keras fails the run (exit 2) after the artifacts
    were written to staging: none of them may reach the output folder."""
    import edgekit.quality.verify

    monkeypatch.setattr(edgekit.quality.verify, "FLOAT_TOLERANCE", 0.0)
    monkeypatch.setattr(edgekit.quality.verify, "FLOAT_RELATIVE_TOLERANCE", 0.0)
    before = snapshot(tmp_path)
    result = cli("compress", digits["model"], "--int8", "--data", digits["calib"], "--formats", "onnx",
                 "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "digits.fp32.onnx does not match the Keras model: max |Δ| =" in result.stderr
    assert "the onnx export is wrong" in result.stderr
    assert snapshot(tmp_path) == before


def test_internal_error_exits_3_and_leaves_nothing(cli, digits, tmp_path, monkeypatch):
    from edgekit.formats.openvino.export import OpenVINOExporter

    def explode(self, request, log):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(OpenVINOExporter, "export", explode)
    before = snapshot(tmp_path)
    result = cli("compress", digits["model"], "--int8", "-o", tmp_path / "out")
    assert result.exit_code == 3
    assert "internal error: RuntimeError: converter crashed" in result.stderr and "--debug" in result.stderr
    assert snapshot(tmp_path) == before


def test_existing_output_elsewhere_is_kept_on_failure(cli, digits, tmp_path):
    """A failed run into a folder with the user's own files leaves those files as they were."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    shutil.copy(digits["model"], out / "model.h5")
    before = snapshot(tmp_path)
    result = cli("compress", out / "model.h5", "--int8", "--data", tmp_path / "missing.npz", "-o", out)
    assert result.exit_code == 2 and "missing.npz does not exist" in result.stderr
    assert snapshot(tmp_path) == before


def test_failed_run_creates_no_parent_folders(cli, tmp_path):
    before = snapshot(tmp_path)
    result = cli("compress", tmp_path / "none.h5", "-o", tmp_path / "a" / "b" / "out")
    assert result.exit_code == 2
    assert snapshot(tmp_path) == before


def test_nested_output_folder_is_created_on_success(cli, digits, tmp_path):
    out = tmp_path / "a" / "b" / "out"
    assert cli("compress", digits["model"], "--formats", "tflite", "-o", out).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["digits.fp32.tflite", "report.html", "report.json", "report.md"]
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["out"]  # no staging left


@pytest.mark.parametrize("name", ["[/x].h5", "[bold]x[/bold].h5", "a[red]b.h5"])
def test_text_from_outside_prints_as_it_is_not_as_markup(name, cli, digits, tmp_path):
    """A path with Rich markup in it: the error line shows it literally, exit 2 (not a crash)."""
    result = cli("compress", tmp_path / name, "-o", tmp_path / "out")
    line = refusal_line(result, [name, "does not exist"])
    assert str(tmp_path / name) in line
    model = tmp_path / f"ok-{name}"
    model.parent.mkdir(parents=True, exist_ok=True)  # "[bold]x[/bold].h5" is a file in a folder "[bold]x["
    model.write_bytes(digits["model"].read_bytes())
    result = cli("compress", model, "--formats", "tflite", "-o", tmp_path / "out2")
    assert result.exit_code == 0, result.output
    assert f"Load {model}" in result.stderr  # progress lines print the name as it is


def _special_paths(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    return {"a FIFO": fifo, "a device": Path("/dev/zero"), "a folder": folder}


@pytest.mark.parametrize("kind", ["a FIFO", "a device", "a folder"])
@pytest.mark.parametrize("command", ["compress", "bench", "eval", "gate"])
def test_non_regular_files_are_named_as_such_and_never_read(kind, command, cli, digits, tmp_path):
    """A FIFO named model.tflite hangs a reader and /dev/zero never ends: refused by kind, exit 2."""
    special = _special_paths(tmp_path)[kind]
    suffix = {"compress": ".h5", "bench": ".tflite", "eval": ".onnx", "gate": ".json"}[command]
    target = tmp_path / f"thing{suffix}"
    target.symlink_to(special)  # the right extension, the wrong kind of file
    args = {"compress": ["compress", target, "-o", tmp_path / "out"], "bench": ["bench", target],
            "eval": ["eval", target, "--data", digits["val"]], "gate": ["gate", target, "--baseline", target]}
    if kind == "a folder" and command == "compress":
        words = ["folder without saved_model.pb"]  # a folder is how a SavedModel comes
    else:
        words = [f"thing{suffix}", "is not a regular file", kind.split(" (")[0]]
    refusal_line(cli(*args[command]), words)
    assert not (tmp_path / "out").exists()


def test_a_fifo_in_an_image_folder_is_refused_not_waited_on(cli, digits, tmp_path):
    _write_png(tmp_path / "calib" / "zero" / "a.png", "L")
    os.mkfifo(tmp_path / "calib" / "zero" / "b.png")
    refusal_line(cli("compress", digits["model"], "--int8", "--data", tmp_path / "calib", "-o", tmp_path / "out"),
                 ["b.png", "is not a regular file", "FIFO"])
