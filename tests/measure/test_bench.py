"""`edgekit bench` and the latency that `compress` records: real timings, in a child process."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from edgekit.measure.latency import BenchSettings, bench_local
from edgekit.support.children import run_child
from edgekit.errors import InputError
from tests.conftest import refusal_line, snapshot


@pytest.fixture(scope="module")
def artifacts(digits, tmp_path_factory):
    from typer.testing import CliRunner

    from edgekit.cli import app

    out = tmp_path_factory.mktemp("bench") / "out"
    result = CliRunner().invoke(app, ["compress", str(digits["model"]), "--int8", "--data", str(digits["calib"]),
                                      "-o", str(out), "-q", "--no-bench"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def conv_tflite(tmp_path_factory):
    """A model that takes about a millisecond, so that per-call overhead would show."""
    from edgekit.support.keras_compat import tensorflow, tf_keras

    tf, keras = tensorflow(), tf_keras()
    L = keras.layers
    model = keras.Sequential([L.Input((96, 96, 3)), L.Conv2D(32, 3, strides=2, activation="relu"),
                              L.Conv2D(64, 3, activation="relu"), L.Conv2D(64, 3, activation="relu"),
                              L.GlobalAveragePooling2D(), L.Dense(10)])
    path = tmp_path_factory.mktemp("conv") / "conv.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


@pytest.mark.heavy
def test_bench_reports_the_full_record(cli, artifacts):
    files = [artifacts / "digits.int8.tflite", artifacts / "digits.fp32.onnx", artifacts / "digits.int8.xml"]
    result = cli("bench", *files, "--threads", "1", "--json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [r["format"] for r in records] == ["tflite", "onnx", "openvino"]
    for r in records:
        assert r["runs"] >= 50 and r["runs"] * r["mean"] >= 900  # ≥ 50 runs and ≥ ~1 s measured
        assert 0 < r["min"] <= r["p50"] <= r["p90"] <= r["p99"] <= r["max"]
        assert r["init_ms"] > 0 and r["first_inference_ms"] > 0 and r["peak_rss_mb"] > 10
        assert r["throughput_per_s"] == pytest.approx(1000 / r["mean"], rel=0.01)
        assert r["batch"] == 1 and r["threads"] == 1 and r["measured"] is True
        assert r["machine"]["cpu"] and r["machine"]["runtimes"]["onnxruntime"]
    table = cli("bench", files[0], "--runs", "5", "--min-time", "0").stdout
    assert "digits.int8.tflite" in table and "p50 ms" in table


def test_runs_and_time_flags(artifacts):
    (quick,) = bench_local([artifacts / "digits.int8.tflite"],
                           BenchSettings(runs=7, min_time_s=0, warmup_runs=0, warmup_time_s=0))
    assert quick["runs"] == 7


def test_harness_p50_agrees_with_a_bare_loop(conv_tflite):
    """The harness adds nothing measurable: its p50 is within ±10% of a bare LiteRT loop
    on the same file in the same run (repeated up to 3 times, since this machine is shared)."""
    from ai_edge_litert.interpreter import Interpreter

    ratios = []
    for _ in range(3):
        (harness,) = bench_local([conv_tflite], BenchSettings(threads=1))
        interp = Interpreter(model_path=str(conv_tflite), num_threads=1)
        interp.allocate_tensors()
        inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
        x = np.random.default_rng(0).uniform(0, 1, (1, 96, 96, 3)).astype(np.float32)
        times = []
        for i in range(harness["runs"] + 20):
            start = __import__("time").perf_counter()
            interp.set_tensor(inp, x)
            interp.invoke()
            interp.get_tensor(out)
            if i >= 20:
                times.append((__import__("time").perf_counter() - start) * 1e3)
        ratios.append(harness["p50"] / float(np.median(times)))
        if abs(ratios[-1] - 1) <= 0.10:
            break
    assert abs(ratios[-1] - 1) <= 0.10, ratios


def test_a_crashing_runtime_is_exit_2_not_a_crash():
    crash = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
    with pytest.raises(InputError, match="the runtime crashed during the benchmark \\(signal 11"):
        run_child(crash, 30, "model.tflite")
    hang = [sys.executable, "-c", "import time; time.sleep(30)"]
    with pytest.raises(InputError, match="did not finish within 1 s"):
        run_child(hang, 1, "model.tflite")


@pytest.mark.parametrize("name", ["--runs 0", "missing", "corrupt", "extension mismatch", "timeout", "external data"])
def test_bench_bad_input_exits_2(name, cli, artifacts, tmp_path):
    args = {"--runs 0": [artifacts / "digits.int8.tflite", "--runs", "0"],
            "missing": [tmp_path / "none.onnx"],
            "timeout": [artifacts / "digits.int8.tflite", "--timeout", "0.01"]}.get(name)
    words = {"--runs 0": ["--runs 0", "at least 1"], "missing": ["none.onnx", "does not exist"],
             "corrupt": ["bad.tflite", "cannot be loaded by tflite"],
             "extension mismatch": ["onnx_inside.xml", "the extension says openvino but the content is an onnx model",
                                   "rename it to onnx_inside.onnx"],
             "timeout": ["did not finish within 0.01 s", "--timeout"],
             "external data": ["ext.onnx", "cannot be loaded by onnx"]}[name]
    if name == "external data":  # weights said to be in a link to /etc/passwd beside the file
        from tests.quality.test_eval import _onnx_with_external_weights

        (tmp_path / "w.bin").symlink_to("/etc/passwd")
        args = [_onnx_with_external_weights(tmp_path / "ext.onnx", "w.bin")]
    if name == "corrupt":
        (tmp_path / "bad.tflite").write_bytes(b"\x00" * 64)
        args = [tmp_path / "bad.tflite"]
    if name == "extension mismatch":
        (tmp_path / "onnx_inside.xml").write_bytes((artifacts / "digits.fp32.onnx").read_bytes())
        args = [tmp_path / "onnx_inside.xml"]
    before = snapshot(tmp_path)
    refusal_line(cli("bench", *args), words)
    assert snapshot(tmp_path) == before


def test_the_benchmark_child_imports_nothing_from_the_current_folder(cli, artifacts, tmp_path, monkeypatch):
    """A numpy.py (or edgekit/) lying where the user runs `edgekit bench` is not executed."""
    marker = tmp_path / "ran"
    (tmp_path / "numpy.py").write_text(f"open({str(marker)!r}, 'w').write('numpy.py ran')\nraise SystemExit(9)\n")
    monkeypatch.chdir(tmp_path)
    result = cli("bench", artifacts / "digits.int8.tflite", "--runs", "50", "--json")
    assert result.exit_code == 0, result.output
    assert not marker.exists()


@pytest.mark.parametrize("flags,words", [
    (["--timeout", "nan"], ["--timeout nan", "number of seconds"]),
    (["--timeout", "inf"], ["--timeout inf"]),
    (["--timeout", "1e308"], ["--timeout 1e+308"]),
    (["--min-time", "nan"], ["--min-time nan"]),
    (["--min-time", "-1"], ["--min-time -1"]),
    (["--threads", "0"], ["--threads 0", "1 to 1024"]),
    (["--threads", "-2"], ["--threads -2"]),
    (["--threads", "99999"], ["--threads 99999"]),
])
def test_out_of_range_numbers_are_exit_2_naming_the_option(flags, words, cli, artifacts):
    refusal_line(cli("bench", artifacts / "digits.int8.tflite", *flags), words)


def test_eval_threads_out_of_range_is_exit_2_before_any_runtime_starts(cli, artifacts, digits):
    refusal_line(cli("eval", artifacts / "digits.int8.tflite", "--data", digits["val"], "--threads", "99999"),
                 ["--threads 99999"])


def test_compress_seed_out_of_range_is_exit_2(cli, digits, tmp_path):
    refusal_line(cli("compress", digits["model"], "--seed", "-1", "-o", tmp_path / "out"), ["--seed -1"])
    assert not (tmp_path / "out").exists()
