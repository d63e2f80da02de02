"""Activation ranges other than min/max (issue 26): percentile drops rare extremes, MSE picks the
range of least quantization error, the range chosen is the one the written file holds, and
`--ranges` reaches all three formats."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.formats.ranges import BINS, Histograms, choose_range
from tests.conftest import HOT_PIXEL, refusal_line, snapshot



def _quantization_mse(values: np.ndarray, low: float, high: float) -> float:
    """Quantize to the 8-bit grid on [low, high] as the converters do, and measure the error."""
    scale = (high - low) / 255
    zero = np.round(-low / scale)
    q = np.clip(np.round(values / scale) + zero, 0, 255)
    return float(np.mean(((q - zero) * scale - values) ** 2))


def _range_of(values: np.ndarray, method: str) -> tuple[float, float]:
    histograms = Histograms({"t": (values.min(), values.max())})
    for chunk in np.array_split(values, 7):  # streamed, as the exporters feed it
        histograms.add("t", chunk)
    return histograms.ranges(method)["t"]


def test_mse_range_has_less_quantization_error_than_min_max_on_a_heavy_tail():
    values = np.random.default_rng(0).laplace(0, 1, 200_000).astype(np.float32)
    errors = {m: _quantization_mse(values, *_range_of(values, m)) for m in ("minmax", "percentile", "mse")}
    assert errors["mse"] < 0.8 * errors["minmax"], errors  # about 1.2 dB of SQNR on a Laplace tail
    assert errors["mse"] < errors["percentile"], errors


def test_percentile_drops_one_extreme_value_and_keeps_zero_inside():
    values = np.random.default_rng(1).uniform(0, 1, 50_000).astype(np.float32)
    values[123] = HOT_PIXEL
    low, high = _range_of(values, "percentile")
    assert low == 0 and 0.99 <= high <= 1.02  # one bin: 500 / 32768
    positive = np.random.default_rng(2).uniform(2, 3, 1000)  # a range away from 0 still contains 0
    assert _range_of(positive, "mse")[0] == 0 and _range_of(positive, "percentile")[0] == 0


def test_constant_and_empty_tensors_keep_their_range():
    assert choose_range(np.zeros(BINS, np.int64), 0.0, 0.0, "mse") == (0.0, 0.0)
    assert choose_range(np.zeros(BINS, np.int64), -1.0, 2.0, "percentile") == (-1.0, 2.0)
    assert _range_of(np.zeros(100, np.float32), "mse") == (0.0, 0.0)


def _tflite_input_scale(path) -> float:
    """The scale of the int8 tensor the float input is quantized to, read from the file."""
    from edgekit.support.keras_compat import tensorflow

    interpreter = tensorflow().lite.Interpreter(model_path=str(path))
    shape = list(interpreter.get_input_details()[0]["shape"])
    (scale,) = {d["quantization"][0] for d in interpreter.get_tensor_details()
                if d["dtype"] == np.int8 and list(d["shape"]) == shape}
    return float(scale)


def _onnx_input_scale(path) -> float:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    first = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    return float(values[first.input[1]])


def test_percentile_ranges_survive_a_hot_pixel_in_every_format(digits, hot_pixel_calibration, cli, tmp_path):
    """min/max lets the hot pixel set the input's int8 step (500/255) and top-1 falls near 50%;
    percentile ranges, written into both files, bring it back; TFLite and ONNX get the same ranges."""
    top1, scales = {}, {}
    for ranges in ("default", "percentile"):
        out = tmp_path / ranges
        result = cli("compress", digits["model"], "--int8", "--data", hot_pixel_calibration, "--val", digits["val"],
                     "--ranges", ranges, "-o", out, "-q")
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
        int8 = {a["format"]: a for a in report["artifacts"] if a["precision"] == "int8"}
        top1[ranges] = {f: a["accuracy"]["top1"] for f, a in int8.items()}
        scales[ranges] = (_tflite_input_scale(out / int8["tflite"]["files"][0]),
                          _onnx_input_scale(out / int8["onnx"]["files"][0]))
        if ranges == "percentile":
            assert "percentile 99.99" in int8["tflite"]["settings"]["ranges"]
            assert "activation ranges narrowed" in int8["onnx"]["settings"]["ranges"]
            assert int8["openvino"]["settings"]["ranges"] == "NNCF MEAN_QUANTILE"
    assert all(s > 1.5 for s in scales["default"]), scales  # 500 / 255
    assert all(s < 0.01 for s in scales["percentile"]), scales  # about 1 / 255
    for fmt in ("tflite", "onnx"):
        assert top1["percentile"][fmt] >= top1["default"][fmt] + 0.2, top1
    assert top1["percentile"]["tflite"] == top1["percentile"]["onnx"], top1
    assert top1["percentile"]["openvino"] >= digits_float_top1(digits) - 0.01, top1


def digits_float_top1(digits) -> float:
    from edgekit.support.keras_compat import tf_keras

    model = tf_keras().models.load_model(digits["model"], compile=False)
    return float(np.mean(model.predict(digits["x_val"], verbose=0).argmax(1) == digits["y_val"]))


def test_mse_ranges_in_a_recipe_reach_the_accuracy_aware_search(outlier_digits, cli, tmp_path):
    """A recipe key, through the accuracy-aware searches too: they re-quantize with the same ranges
    (ONNX computes them once for every step) and still reach the budget."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("int8: true\nranges: mse\nformats: [tflite, onnx]\n")
    out = tmp_path / "out"
    result = cli("compress", outlier_digits["model"], "--recipe", recipe, "--data", outlier_digits["calib"],
                 "--val", outlier_digits["val"], "--max-accuracy-drop", "1", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    int8 = [a for a in report["artifacts"] if a["precision"] == "int8"]
    assert len(int8) == 2
    for artifact in int8:
        assert artifact["settings"]["ranges"].startswith("MSE"), artifact["settings"]
        assert artifact["accuracy_aware"]["needed"] and artifact["accuracy_aware"]["reached"], artifact["accuracy_aware"]


@pytest.mark.parametrize("args, words", [
    (["--int8", "--ranges", "widest"], ["--ranges", "percentile", "mse"]),
    (["--ranges", "mse"], ["--ranges", "int8"]),
    (["--qat", "--ranges", "percentile"], ["--ranges", "QAT"]),
    (["--int8", "--ranges", "mse", "NO-DATA"], ["--ranges mse", "--data CALIB"]),
])
def test_bad_ranges_are_refused_before_any_work(args, words, digits, cli, tmp_path):
    data = [] if "NO-DATA" in args else ["--data", digits["calib"]]
    args = [a for a in args if a != "NO-DATA"]
    before = snapshot(tmp_path)
    result = cli("compress", digits["model"], *args, *data, "-o", tmp_path / "out")
    refusal_line(result, words)
    assert snapshot(tmp_path) == before


def test_int16x8_writes_a_tflite_file_with_int16_activations_that_absorbs_the_hot_pixel(
        digits, hot_pixel_calibration, cli, tmp_path):
    """TFLite's 16x8 mode beside the int8 files: read back, its activations are int16 and its
    weights int8; 256× finer activation steps leave the hot pixel's range harmless; formats
    without the mode write none."""
    from edgekit.formats.tflite.facts import read_facts

    out = tmp_path / "out"
    result = cli("compress", digits["model"], "--int8", "--int16x8", "--data", hot_pixel_calibration,
                 "--val", digits["val"], "--formats", "tflite,onnx", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    by_id = {a["id"]: a for a in report["artifacts"]}
    assert set(by_id) == {"tflite-fp32", "tflite-int8", "tflite-int16x8", "onnx-fp32", "onnx-int8"}
    wide = by_id["tflite-int16x8"]
    facts = read_facts(out / wide["files"][0])
    assert facts.precision == "int16x8"
    assert {op.kind for op in facts.mac_ops} and all(op.weight_scales for op in facts.mac_ops)
    assert wide["settings"]["activations"] == "int16"
    reference = report["reference"]["accuracy"]["top1"]
    assert wide["accuracy"]["top1"] >= reference - 0.01
    assert wide["accuracy"]["top1"] >= by_id["tflite-int8"]["accuracy"]["top1"] + 0.2


def test_int16x8_alone_writes_fp32_and_int16x8(digits, cli, tmp_path):
    out = tmp_path / "out"
    result = cli("compress", digits["model"], "--int16x8", "--data", digits["calib"], "--formats", "tflite",
                 "-o", out, "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [a["id"] for a in report["artifacts"]] == ["tflite-fp32", "tflite-int16x8"]


@pytest.mark.parametrize("args, words", [
    (["--int16x8", "--formats", "onnx", "--data", "CALIB"], ["int16x8", "TFLite", "tflite"]),
    (["--int16x8"], ["--int16x8", "--data"]),
    (["--int16x8", "--fp16", "--data", "CALIB"], ["int16x8", "fp16"]),
    (["--int16x8", "--target", "coral-edgetpu", "--data", "CALIB"], ["--int16x8", "coral-edgetpu", "int16x8"]),
])
def test_bad_int16x8_options_are_refused_before_any_work(args, words, digits, cli, tmp_path):
    args = [str(digits["calib"]) if a == "CALIB" else a for a in args]
    before = snapshot(tmp_path)
    result = cli("compress", digits["model"], *args, "-o", tmp_path / "out")
    refusal_line(result, words)
    assert snapshot(tmp_path) == before
