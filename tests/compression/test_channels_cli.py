"""`compress --prune-channels` on the digits CNN: a smaller model in every format, verified against
the pruned float model, with its record in report.json; a target instead of a ratio; and every
bad input refused before anything is written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import refusal_line, snapshot
from tests.ssh_server import ssh_args


def _compress(cli, digits, out, *flags):
    result = cli("compress", digits["model"], "--data", digits["calib"], "--val", digits["val"], "-o", out, "-q",
                 *flags)
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text())


def _tflite_conv_widths(path) -> list[int]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    ops = [op for op in interp._get_ops_details() if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED")]
    return [int(interp._get_tensor_details(op["inputs"][1], 0)["shape"][0]) for op in ops]


@pytest.mark.heavy
def test_half_the_channels_gives_smaller_faster_files_that_keep_the_accuracy(cli, digits, tmp_path):
    out = tmp_path / "out"
    report = _compress(cli, digits, out, "--prune-channels", "0.5", "--int8", "--bench-here")
    channels = report["stages"]["channels"]
    assert channels["channels"] == {"conv1": [32, 16], "conv2": [64, 32], "fc": [64, 32]}
    assert channels["left_alone"] == {"probs": "its softmax activation mixes its channels"}
    assert channels["macs"]["after"] < 0.5 * channels["macs"]["before"]
    assert channels["params"]["after"] < 0.4 * channels["params"]["before"]
    assert channels["rebuild_max_abs_delta"] <= 1e-5
    latency = channels["host_latency_ms"]  # the original's and the pruned fp32 TFLite file, side by side
    assert latency["file"] == "TFLite fp32" and latency["after"] < latency["before"], latency
    original = report["reference"]["accuracy"]["top1"]
    assert original - channels["keras_accuracy"]["top1"] <= 0.015
    assert channels["agreement_with_original"] >= 0.95
    assert channels["finetune"]["distillation"] == 0.5 and len(channels["finetune"]["val_top1_per_epoch"]) == 3
    # every file is the smaller model, checked against the pruned float model
    assert _tflite_conv_widths(out / "digits.int8.tflite") == [16, 32, 32, 10]
    for artifact in report["artifacts"]:
        assert original - artifact["accuracy"]["top1"] <= 0.02, artifact
        if artifact["precision"] == "fp32":
            assert artifact["verification"]["max_abs_diff"] <= 1e-4
    assert {a["id"] for a in report["artifacts"]} == {f"{f}-{p}" for f in ("tflite", "onnx", "openvino")
                                                      for p in ("fp32", "int8")}
    text = (out / "report.md").read_text()
    assert "Channel-pruned model top-1" in text and "MACs" in text


@pytest.mark.heavy
def test_a_macs_target_is_met_and_a_latency_target_is_met_by_the_estimate(cli, digits, tmp_path):
    from edgekit.measure.devices import load_profile
    from edgekit.measure.layer_estimate import keras_estimate
    from edgekit.support.keras_compat import tf_keras

    (tmp_path / "hot.yaml").write_text("distillation_temperature: 4\n")  # softened distillation, on the way
    report = _compress(cli, digits, tmp_path / "macs", "--prune-channels-target-macs", "0.6", "--epochs", "1",
                       "--formats", "tflite", "--recipe", tmp_path / "hot.yaml")
    channels = report["stages"]["channels"]
    assert channels["finetune"]["temperature"] == 4 and not channels["finetune"]["backoffs"]
    assert report["reference"]["accuracy"]["top1"] - channels["keras_accuracy"]["top1"] <= 0.03
    assert channels["by"] == "target_macs" and channels["macs"]["after"] <= 0.6 * channels["macs"]["before"]
    assert channels["macs"]["after"] >= 0.3 * channels["macs"]["before"]  # the smallest removal, not the most
    assert set(channels["sensitivity_top1_drop"]) == {"conv1", "conv2", "fc"}

    unpruned = keras_estimate(load_profile("rpi4"), tf_keras().models.load_model(digits["model"]), "tflite", "int8")
    target = round(0.8 * unpruned["ms"], 5)
    report = _compress(cli, digits, tmp_path / "ms", "--prune-channels-target-latency", str(target), "--device", "rpi4",
                       "--int8", "--epochs", "1", "--formats", "tflite")
    channels = report["stages"]["channels"]
    assert channels["by"] == "target_latency" and channels["reached"] <= target
    low, high = channels["estimate_likely_ms"]
    assert low < channels["reached"] < high
    assert "rpi4" in channels["target"] and "int8" in channels["target"]


def _nothing_prunable(tmp_path):
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.save(tmp_path / "flat.h5")
    return tmp_path / "flat.h5"


BAD = {
    "--prune-channels 0": (["--prune-channels", "0"], ["--prune-channels 0", "between 0 and 1"]),
    "--prune-channels 1": (["--prune-channels", "1"], ["--prune-channels 1", "between 0 and 1"]),
    "--prune-channels 1.5": (["--prune-channels", "1.5"], ["--prune-channels 1.5", "between 0 and 1"]),
    "--prune-channels -0.2": (["--prune-channels", "-0.2"], ["--prune-channels -0.2", "between 0 and 1"]),
    "target MACs 2": (["--prune-channels-target-macs", "2"], ["--prune-channels-target-macs 2", "between 0 and 1"]),
    "ratio and target": (["--prune-channels", "0.5", "--prune-channels-target-macs", "0.5"], ["choose one"]),
    "latency without device": (["--prune-channels-target-latency", "1"], ["add --device NAME", "add --remote"]),
    "remote without a latency target": (["--prune-channels", "0.5", "--remote", "pi@raspberrypi"],
                                        ["--remote measures", "edgekit bench --remote"]),
    "remote that reads as an ssh option": (["--prune-channels-target-latency", "1", "--remote", "-oProxyCommand=x"],
                                           ["--remote", "expected USER@HOST"]),
    "device without latency": (["--prune-channels", "0.5", "--device", "rpi4"], ["--device NAME", "latency target"]),
    "unknown device": (["--prune-channels-target-latency", "1", "--device", "rpi9"], ["--device rpi9", "unknown device"]),
    "latency 0": (["--prune-channels-target-latency", "0", "--device", "rpi4"], ["--prune-channels-target-latency 0"]),
    "channels after qat in a recipe": (
        ["--recipe", "RECIPE"], ["order channels, prune, qat"]),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_options_exit_2_and_write_nothing(name, cli, digits, tmp_path):
    args, words = BAD[name]
    if "RECIPE" in args:
        (tmp_path / "r.yaml").write_text("stages:\n  - {type: qat}\n  - {type: channels, ratio: 0.5}\n")
        args = ["--recipe", tmp_path / "r.yaml"]
    before = snapshot(tmp_path)
    result = cli("compress", digits["model"], "--data", digits["calib"], "-o", tmp_path / "out", *args)
    refusal_line(result, words)
    assert snapshot(tmp_path) == before


def test_a_recipe_latency_target_with_neither_device_nor_remote_is_refused(cli, digits, tmp_path):
    (tmp_path / "r.yaml").write_text("stages:\n  - {type: channels, target_latency_ms: 2}\n")
    before = snapshot(tmp_path)
    result = cli("compress", digits["model"], "--recipe", tmp_path / "r.yaml", "--data", digits["calib"],
                 "-o", tmp_path / "out")
    refusal_line(result, ["estimated on a device: add --device NAME", "measured on one: add --remote USER@HOST"])
    assert snapshot(tmp_path) == before


def test_channel_pruning_needs_labelled_data(cli, digits, tmp_path):
    before = snapshot(tmp_path)
    result = cli("compress", digits["model"], "--prune-channels", "0.5", "-o", tmp_path / "out")
    refusal_line(result, ["--prune-channels", "pass --data"])
    assert snapshot(tmp_path) == before
    np.savez(tmp_path / "nolabels.npz", x=np.load(digits["calib"])["x"])
    before = snapshot(tmp_path)
    result = cli("compress", digits["model"], "--prune-channels", "0.5", "--data", tmp_path / "nolabels.npz",
                 "-o", tmp_path / "out")
    refusal_line(result, ["--prune-channels", "needs labels"])
    assert snapshot(tmp_path) == before


def test_a_model_with_nothing_prunable_is_refused_naming_why(cli, digits, tmp_path):
    model = _nothing_prunable(tmp_path)
    before = snapshot(tmp_path)
    result = cli("compress", model, "--prune-channels", "0.5", "--data", digits["calib"], "-o", tmp_path / "out")
    refusal_line(result, ["nothing in this model can lose channels", "dense", "softmax", "nothing was written"])
    assert snapshot(tmp_path) == before


def test_a_pruned_model_under_the_tolerance_stops_with_what_helps(cli, digits, tmp_path):
    """90% of the channels gone and one epoch, against a tolerance of 0 points: exit 1 before any
    export, naming the channel options, the softer teacher among them."""
    before = snapshot(tmp_path)
    result = cli("compress", digits["model"], "--prune-channels", "0.9", "--epochs", "1", "--accuracy-tolerance", "0",
                 "--data", digits["calib"], "--val", digits["val"], "--formats", "tflite", "-o", tmp_path / "out")
    assert result.exit_code == 1, result.output
    (line,) = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    for words in ("channel pruning kept top-1", "nothing was written", "removing fewer channels",
                  "recipe distillation_temperature: 2"):
        assert words in line, (words, line)
    assert snapshot(tmp_path) == before


def test_a_target_that_cannot_be_met_names_the_best_reachable(cli, digits, tmp_path):
    before = snapshot(tmp_path)
    result = cli("compress", digits["model"], "--prune-channels-target-macs", "0.001", "--data", digits["calib"],
                 "--val", digits["val"], "-o", tmp_path / "out")
    line = refusal_line(result, ["cannot be met", "reaches", "MACs", "nothing was written"])
    reached = float(line.split("reaches ")[1].split(" MACs")[0].replace(",", ""))
    assert reached > 0.001 * 371_456
    result = cli("compress", digits["model"], "--prune-channels-target-latency", "0.000001", "--device", "rpi4",
                 "--data", digits["calib"], "-o", tmp_path / "out")
    refusal_line(result, ["cannot be met", "reaches", "ms", "rpi4"])
    assert snapshot(tmp_path) == before


def test_an_unreachable_remote_for_a_latency_target_is_exit_2_and_writes_nothing(cli, digits, tmp_path):
    """The original is measured first, so a remote that cannot be reached fails before the
    sensitivity pass and the search (port 1 on loopback: connection refused)."""
    before = snapshot(tmp_path)
    result = cli("compress", digits["model"], "--prune-channels-target-latency", "1", "--remote",
                 "nobody@127.0.0.1:1", "--data", digits["calib"], "--formats", "tflite", "-o", tmp_path / "out")
    refusal_line(result, ["cannot reach nobody@127.0.0.1:1 over SSH", "without a password"])
    assert snapshot(tmp_path) == before


def _wide_digits_cnn(digits, path):
    """A digits CNN wide enough (~57 M MACs) that its latency is mostly compute, not per-call overhead."""
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    L = keras.layers
    block = [layer for width in (128, 256, 256) for layer in (
        L.Conv2D(width, 3, padding="same", use_bias=False), L.BatchNormalization(momentum=0.9), L.ReLU())]
    model = keras.Sequential([keras.Input((8, 8, 1)), *block, L.GlobalAveragePooling2D(),
                              L.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    data = np.load(digits["calib"])
    model.fit(data["x"], data["y"], epochs=3, batch_size=64, verbose=0)  # top-1 84% on val
    model.save(path)
    return model


def _fp32_tflite(model, path):
    from edgekit.support.keras_compat import tensorflow

    path.write_bytes(tensorflow().lite.TFLiteConverter.from_keras_model(model).convert())
    return path


@pytest.mark.heavy
def test_a_latency_target_measured_over_ssh_is_met_on_that_machine(cli, digits, sshd, tmp_path):
    """--remote: each candidate is exported and benchmarked on the SSH server (loopback: this
    machine), so the target is a fraction of the original's p50 measured here first. The pruned
    file then runs faster than the original, side by side."""
    import sys

    import edgekit

    model = _wide_digits_cnn(digits, tmp_path / "wide.h5")
    original = _fp32_tflite(model, tmp_path / "original.tflite")
    target = round(0.6 * edgekit.bench(original, runs=30, min_time=0.5).results[0]["p50"], 4)
    out = tmp_path / "out"
    result = cli("compress", tmp_path / "wide.h5", "--prune-channels-target-latency", str(target), "--remote",
                 sshd["destination"], "--remote-python", sys.executable, *ssh_args(sshd), "--data", digits["calib"], "--val",
                 digits["val"], "--formats", "tflite", "--epochs", "1", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    channels, original_top1 = report["stages"]["channels"], report["reference"]["accuracy"]["top1"]
    assert channels["keras_accuracy"]["top1"] >= original_top1 - 0.03
    measured = channels["measured"]
    assert channels["by"] == "target_latency" and channels["unit"] == "ms"
    assert channels["target"] == f"{target:g} ms measured on {measured['on']}"
    assert measured["on"] == f"{sshd['destination']} (TFLite fp32, p50)"
    assert channels["reached"] <= target < measured["original_ms"]
    assert 2 <= measured["candidates"] == len(measured["candidates_ms"]) <= 8  # the original, then ≤ 7 distinct plans
    assert "estimate_likely_ms" not in channels  # measured, not estimated
    assert channels["macs"]["after"] < 0.7 * channels["macs"]["before"]
    pruned, again = edgekit.bench([out / "wide.fp32.tflite", original], runs=30, min_time=0.5).results
    assert pruned["p50"] < again["p50"], (pruned, again)
    assert not list(tmp_path.glob("candidate*")) and not list(out.glob("candidate*"))


@pytest.mark.heavy
def test_a_keras3_residual_model_prunes_through_the_bridge_then_trains_with_qat(cli, digits, tmp_path):
    """A Keras 3 .keras file (rebuilt as tf_keras by the bridge), a residual add tying two convs:
    the group loses channels in both, then QAT trains the smaller model and its int8 file agrees."""
    from edgekit.support.keras_compat import tensorflow

    tensorflow()
    import keras

    L = keras.layers
    inputs = keras.Input((8, 8, 1))
    a = L.Conv2D(32, 3, padding="same", activation="relu", name="a")(inputs)
    b = L.Conv2D(32, 3, padding="same", name="b")(a)
    x = L.ReLU()(L.Add()([a, b]))
    x = L.Dense(10, activation="softmax", name="probs")(L.Flatten()(L.MaxPooling2D()(x)))
    model = keras.Model(inputs, x)
    model.compile("adam", "sparse_categorical_crossentropy")
    data = np.load(digits["calib"])
    model.fit(data["x"], data["y"], epochs=8, batch_size=32, verbose=0)
    model.save(tmp_path / "res.keras")
    out = tmp_path / "out"
    result = cli("compress", tmp_path / "res.keras", "--prune-channels", "0.5", "--qat", "--data", digits["calib"],
                 "--val", digits["val"], "--formats", "tflite", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["source"]["bridge"]["bridged"]
    assert report["stages"]["channels"]["channels"] == {"a": [32, 16], "b": [32, 16]}
    assert "qat" in report["stages"]
    (int8,) = [a for a in report["artifacts"] if a["precision"] == "int8"]
    assert int8["agreement"] >= 0.98
    assert _tflite_conv_widths(out / "res.int8.tflite") == [16, 16, 10]
