"""The Python API: every public function with paths and with in-memory models and arrays, and
the same report.json as the CLI for the same inputs."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import numpy as np
import pytest

import edgekit
from edgekit.errors import GateFailure, InputError


def _comparable(report: dict) -> dict:
    """What a run computes (not when, where or how long): equal for equal inputs."""
    keep = ("id", "format", "precision", "accuracy", "agreement", "quantization", "io_dtype")
    return {"recipe": report["recipe"], "reference": report["reference"],
            "source": {k: report["source"][k] for k in ("params", "macs", "input_shape", "num_classes", "keras")},
            "artifacts": [{k: a.get(k) for k in keep} for a in report["artifacts"]]}


def test_import_edgekit_and_the_api_names_load_no_tensorflow():
    code = ("import sys, edgekit; from edgekit import compress, evaluate, bench, gate, sweep, Report, Sweep; "
            "print(sorted(m for m in ('tensorflow', 'tf_keras', 'onnxruntime', 'openvino') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    assert set(edgekit.__all__) >= {"compress", "evaluate", "bench", "gate", "sweep"}
    # no submodule takes an API name: importing them all leaves the functions in place
    for module in ("edgekit.quality.evaluation", "edgekit.reports.gating", "edgekit.measure.latency", "edgekit.compression.stages", "edgekit.sweeps.run"):
        importlib.import_module(module)
    assert all(getattr(edgekit, name).__module__ == "edgekit.api"
               for name in ("compress", "evaluate", "bench", "gate", "sweep"))


@pytest.mark.heavy
def test_api_and_cli_write_the_same_report_for_the_same_inputs(digits, cli, tmp_path):
    args = dict(int8=True, data=digits["calib"], val=digits["val"], formats=["tflite", "onnx"], bench=False)
    report = edgekit.compress(digits["model"], output=tmp_path / "api", **args)
    result = cli("compress", digits["model"], "--int8", "--data", digits["calib"], "--val", digits["val"],
                 "--formats", "tflite,onnx", "-o", tmp_path / "cli", "-q")
    assert result.exit_code == 0, result.output
    from_cli = json.loads((tmp_path / "cli" / "report.json").read_text())
    from_api = json.loads((tmp_path / "api" / "report.json").read_text())
    assert _comparable(from_api) == _comparable(from_cli)
    # tf2onnx writes the working folder's name into the graph: ONNX sizes differ by a few bytes
    for a, b in zip(from_api["artifacts"], from_cli["artifacts"]):
        assert a["size_bytes"] == pytest.approx(b["size_bytes"], rel=1e-3)
    # the returned object is that report, typed
    assert isinstance(report, edgekit.Report) and report.artifacts[1].id == "tflite-int8"
    assert report.artifacts[1].accuracy.top1 == from_api["artifacts"][1]["accuracy"]["top1"]
    saved = json.loads(report.save(tmp_path / "again.json").read_text())
    assert _comparable(saved) == _comparable(from_api) and json.loads(report.to_json())["schema"] == "edgekit.reports.report/1"


def test_in_memory_tf_keras_model_and_arrays(digits, tmp_path):
    from edgekit.support.keras_compat import tf_keras

    model = tf_keras().models.load_model(digits["model"])
    calib = np.load(digits["calib"])
    report = edgekit.compress(model, int8=True, data=(calib["x"], calib["y"]), val=(digits["x_val"], digits["y_val"]),
                              formats="tflite", output=tmp_path / "out", bench=False)
    assert report.source["keras"] == "tf_keras" and report.source["path"].endswith("model.h5")
    top1 = {a.id: a.accuracy.top1 for a in report.artifacts}
    assert top1["tflite-fp32"] > 0.9 and abs(top1["tflite-int8"] - top1["tflite-fp32"]) < 0.02
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "model.fp32.tflite", "model.int8.tflite", "report.html", "report.json", "report.md"]


def test_in_memory_keras3_model(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    x = np.random.default_rng(0).uniform(0, 1, (32, 8, 8, 1)).astype(np.float32)
    report = edgekit.compress(model, int8=True, data=(x, None), formats=["tflite"], output=tmp_path / "out",
                              bench=False)
    assert report.source["keras"] == "keras3" and report.source["path"].endswith("model.keras")
    assert report.artifacts[0].verification["max_abs_diff"] <= 1e-4


@pytest.mark.heavy
def test_evaluate_bench_and_gate_with_paths_and_objects(validated_run, digits, tmp_path):
    files = [validated_run / "digits.fp32.tflite", validated_run / "digits.int8.tflite"]
    by_path = edgekit.evaluate(files, digits["val"])
    by_arrays = edgekit.evaluate(files, (digits["x_val"], digits["y_val"]))
    assert by_path.artifacts[1]["accuracy"] == by_arrays.artifacts[1]["accuracy"]
    assert by_arrays.data["samples"] == len(digits["y_val"])

    timings = edgekit.bench(files[1], runs=5, min_time=0.0, warmup_time=0.0)
    assert timings.results[0]["runs"] >= 5 and timings.results[0]["p50"] > 0
    assert not timings.estimated and timings.results[0]["device"] == "host"
    on_pi = edgekit.bench(files, device="rpi4")  # no remote: the profile's estimate, labelled as one
    assert on_pi.estimated and [r["device"] for r in on_pi.results] == ["rpi4", "rpi4"]
    assert on_pi.results[1]["latency_ms"]["estimate"] < on_pi.results[0]["latency_ms"]["estimate"]  # int8 < fp32

    report_path = validated_run / "report.json"
    same = edgekit.gate(report_path, report_path)
    assert same.passed and all(c["verdict"] != "fail" for c in same.checks)
    worse = json.loads(report_path.read_text())
    worse["artifacts"][1]["accuracy"]["top1"] -= 0.05
    regressed = edgekit.Report.model_validate(worse)
    assert edgekit.gate(regressed, report_path).passed is False  # a Report object as well as a path
    with pytest.raises(GateFailure, match="tflite-int8 accuracy"):
        edgekit.gate(regressed, report_path, raise_on_failure=True)


def test_api_errors_are_edgekit_errors(digits, tmp_path):
    with pytest.raises(InputError, match="model: expected a path or a Keras model"):
        edgekit.compress(42, int8=True)
    with pytest.raises(InputError, match=r"data: expected a path or an \(x, y\) tuple"):
        edgekit.compress(digits["model"], int8=True, data="x y".split()[0:1] * 3, output=tmp_path / "out")
    with pytest.raises(InputError, match="--prune 1.5"):
        edgekit.compress(digits["model"], prune=1.5, data=digits["calib"], output=tmp_path / "out")
    with pytest.raises(InputError, match="artifacts: give at least one"):
        edgekit.bench([])
    assert not (tmp_path / "out").exists()


class _Unsaveable:
    """A model-like object whose save fails, as a user's half-built model may."""
    layers: list = []

    def save(self, path):
        raise RuntimeError("disk on fire")


def _nan_report(validated_run):
    report = edgekit.Report.model_validate(json.loads((validated_run / "report.json").read_text()))
    report.artifacts[0].accuracy.top1 = float("nan")
    return report


BAD_CALLS = {  # issue 23: each leaked a RuntimeError, ValueError or TypeError
    "model.save raises": (lambda d, v, out: edgekit.compress(_Unsaveable(), int8=True, output=out),
                          ["saving the in-memory _Unsaveable failed", "RuntimeError: disk on fire"]),
    "ragged list as data": (lambda d, v, out: edgekit.compress(d["model"], int8=True, data=([[1, 2], [3]], None),
                                                               output=out), ["data x: not an array of numbers"]),
    "generator as data": (lambda d, v, out: edgekit.compress(d["model"], int8=True, data=((i for i in range(3)),),
                                                             output=out), ["data x", "got generator"]),
    "formats of numbers": (lambda d, v, out: edgekit.compress(d["model"], formats=[1, 2], output=out),
                           ["compress(): formats must be"]),
    "output a number": (lambda d, v, out: edgekit.compress(d["model"], int8=True, output=123),
                        ["compress(): output must be", "got int"]),
    "seed 1.5": (lambda d, v, out: edgekit.compress(d["model"], int8=True, seed=1.5, output=out),
                 ["compress(): seed must be int", "got float"]),
    "bench(5)": (lambda d, v, out: edgekit.bench(5), ["bench(): artifacts must be", "got int"]),
    "calibrate(threads=1.5)": (lambda d, v, out: edgekit.calibrate(out / "me.yaml", threads=1.5),
                               ["calibrate(): threads must be", "got float"]),
    "calibrate a runtime it cannot": (lambda d, v, out: edgekit.calibrate(out.parent / "me.yaml", runtimes=["tensorrt"]),
                                      ["--runtime tensorrt", "calibrate measures litert"]),
    "sweep(recipes=None)": (lambda d, v, out: edgekit.sweep(d["model"], recipes=None, output=out),
                            ["sweep(): recipes must be", "NoneType"]),
    "a Report holding NaN": (lambda d, v, out: edgekit.gate(_nan_report(v), v / "report.json"),
                             ["report: the Report cannot be written as JSON"]),
}


@pytest.mark.parametrize("name", BAD_CALLS)
def test_bad_arguments_and_failing_objects_raise_edgekit_errors(name, digits, validated_run, tmp_path):
    call, words = BAD_CALLS[name]
    with pytest.raises(InputError) as caught:
        call(digits, validated_run, tmp_path / "out")
    assert all(w in str(caught.value) for w in words), str(caught.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.heavy
def test_sweep_with_an_in_memory_model_and_arrays(digits, tmp_path):
    """A model object and (x, y) arrays: one cell, measured, picked, typed."""
    from edgekit.support.keras_compat import tf_keras

    model = tf_keras().models.load_model(digits["model"])
    with np.load(digits["calib"]) as calib:
        data = (calib["x"], calib["y"])
    result = edgekit.sweep(model, data=data, val=(digits["x_val"], digits["y_val"]), recipes=["int8"],
                           formats=["tflite"], devices=["host", "rpi4"], runs=5, min_time=0.05, output=tmp_path / "sw")
    assert isinstance(result, edgekit.Sweep) and [c["status"] for c in result.cells] == ["ok"]
    assert result.reference_top1 > 0.9 and len(result.points) == 2
    assert result.pick("rpi4")["precision"] == "int8" and result.pick("host") is not None
    saved = json.loads(result.save(tmp_path / "again.json").read_text())
    assert saved == json.loads((tmp_path / "sw" / "sweep.json").read_text())


def test_sweep_failures_are_returned_or_raised(digits, tmp_path):
    from edgekit.sweeps.run import CellsFailed

    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [{type: prune}]\n")  # no sparsity
    common = dict(data=digits["calib"], val=digits["val"], recipes=[str(bad)], runs=5, min_time=0.05)
    result = edgekit.sweep(digits["model"], output=tmp_path / "a", **common)
    assert [c["name"] for c in result.failed] == ["bad"] and "sparsity" in result.failed[0]["error"]
    assert result.pick("host") is None
    with pytest.raises(CellsFailed, match="1 of 1 cells failed") as caught:
        edgekit.sweep(digits["model"], output=tmp_path / "b", raise_on_failure=True, **common)
    assert caught.value.exit_code == 1 and caught.value.result["cells"][0]["status"] == "failed"
    with pytest.raises(InputError, match="--grid sparsty"):
        edgekit.sweep(digits["model"], val=digits["val"], grid={"sparsty": [0.5]}, output=tmp_path / "c")
