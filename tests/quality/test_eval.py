"""`edgekit eval`: accuracy, confusion and agreement of artifacts, with only their runtimes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import refusal_line, snapshot


@pytest.fixture(scope="module")
def artifacts(digits, tmp_path_factory):
    from typer.testing import CliRunner

    from edgekit.cli import app

    out = tmp_path_factory.mktemp("eval") / "out"
    result = CliRunner().invoke(app, ["compress", str(digits["model"]), "--int8", "--data", str(digits["calib"]),
                                      "--val", str(digits["val"]), "-o", str(out), "-q", "--no-bench"])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "report.json").read_text())


@pytest.mark.heavy
def test_eval_matches_compress_and_the_labels(cli, artifacts, digits):
    out, report = artifacts
    files = [out / "digits.int8.tflite", out / "digits.int8.onnx", out / "digits.int8.xml"]
    result = cli("eval", *files, "--data", digits["val"], "--json")
    assert result.exit_code == 0, result.output
    evaluation = json.loads(result.stdout)
    n = len(digits["y_val"])
    assert evaluation["data"]["samples"] == n
    expected = {a["path"]: a["accuracy"] for a in report["artifacts"]}
    for entry in evaluation["artifacts"]:
        name = entry["path"].rsplit("/", 1)[-1]
        assert entry["accuracy"] == expected[name]
        matrix = np.array(entry["confusion"])
        assert matrix.shape == (10, 10) and matrix.sum() == n
        assert np.trace(matrix) / n == pytest.approx(entry["accuracy"]["top1"])
        assert matrix.sum(axis=1).tolist() == np.bincount(digits["y_val"], minlength=10).tolist()
    pairs = evaluation["agreement"]
    assert set(pairs) == {"digits.int8.tflite vs digits.int8.onnx", "digits.int8.tflite vs digits.int8.xml",
                          "digits.int8.onnx vs digits.int8.xml"}
    assert all(0.95 <= v <= 1.0 for v in pairs.values())
    table = cli("eval", *files, "--data", digits["val"]).stdout
    assert "digits.int8.onnx" in table and "top-1 agreement" in table


def test_eval_integer_io_artifact(cli, digits, tmp_path):
    out = tmp_path / "out"
    assert cli("compress", digits["model"], "--int8", "--data", digits["calib"], "--formats", "tflite",
               "--io-dtype", "uint8", "-o", out, "-q").exit_code == 0
    evaluation = json.loads(cli("eval", out / "digits.int8.tflite", "--data", digits["val"], "--json").stdout)
    (entry,) = evaluation["artifacts"]
    assert entry["input"]["dtype"] == "uint8" and entry["input"]["scale"] > 0
    assert entry["accuracy"]["top1"] > 0.9  # inputs were quantized with the file's own scale/zero-point


def test_eval_needs_no_tensorflow(artifacts, digits):
    out, _ = artifacts
    code = ("import sys; from edgekit.quality.evaluation import evaluate_here; "
            f"r = evaluate_here([r'{out / 'digits.int8.tflite'}', r'{out / 'digits.fp32.onnx'}'], r'{digits['val']}'); "
            "heavy = [m for m in ('tensorflow', 'tf_keras', 'tf2onnx', 'nncf') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy or r['artifacts'][0]['accuracy']['top1'] < 0.9 else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def _bad(name, tmp, out, digits):
    if name == "missing artifact":
        return [tmp / "none.tflite"], ["none.tflite", "does not exist"]
    if name == "unknown extension":
        (tmp / "model.pt").write_bytes(b"x")
        return [tmp / "model.pt"], ["model.pt", "unknown artifact type", ".tflite"]
    if name in ("corrupt .tflite", "corrupt .onnx", "corrupt .xml"):
        suffix = name.split()[-1]
        (tmp / f"bad{suffix}").write_bytes(b"\x00garbage" * 100)
        (tmp / "bad.bin").write_bytes(b"\x00" * 16)  # an .xml comes with its weights
        return [tmp / f"bad{suffix}"], [f"bad{suffix}", "cannot be loaded by", "corrupt"]
    if name == "extension does not match content":
        (tmp / "really_onnx.tflite").write_bytes((out / "digits.fp32.onnx").read_bytes())
        return [tmp / "really_onnx.tflite"], ["really_onnx.tflite", "the content is an onnx model"]
    if name == "data of another shape":
        np.savez(tmp / "big.npz", x=np.zeros((3, 16, 16, 1), np.float32), y=np.zeros(3, np.int64))
        return [out / "digits.int8.tflite", "--data", tmp / "big.npz"], ["big.npz", "(N, 8, 8, 1)"]
    if name == "data without labels":
        np.savez(tmp / "nolabels.npz", x=np.zeros((3, 8, 8, 1), np.float32))
        return [out / "digits.int8.tflite", "--data", tmp / "nolabels.npz"], ["nolabels.npz", "no labels"]
    if name == "label -1":  # was counted as class 9 in the confusion matrix
        np.savez(tmp / "neg.npz", x=np.zeros((3, 8, 8, 1), np.float32), y=np.array([0, -1, 2]))
        return [out / "digits.int8.tflite", "--data", tmp / "neg.npz"], ["neg.npz", "labels run from -1"]
    if name == "NaN in the data":
        np.savez(tmp / "nan.npz", x=np.full((3, 8, 8, 1), np.nan, np.float32), y=np.zeros(3, np.int64))
        return [out / "digits.int8.tflite", "--data", tmp / "nan.npz"], ["nan.npz", "3 of 3 samples hold NaN or Inf"]
    if name.startswith("external data"):  # weights read from another file: ONNX Runtime must refuse
        where = name.split(": ")[1]
        if where == "a link out of the folder":
            (tmp / "w.bin").symlink_to("/etc/passwd")
        elif where == "a FIFO":
            os.mkfifo(tmp / "w.bin")
        location = {"absolute": "/etc/passwd", "climbing": "../../etc/passwd"}.get(where, "w.bin")
        return [_onnx_with_external_weights(tmp / "ext.onnx", location)], ["ext.onnx", "cannot be loaded by onnx"]
    raise AssertionError(name)


def _onnx_with_external_weights(path, location: str):
    """A valid (1, 8, 8, 1) → (1, 10) ONNX classifier whose weights are said to live in `location`."""
    import onnx
    from onnx import TensorProto, helper

    weights = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[64, 10], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", str(64 * 10 * 4))):
        weights.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["m"]),
         helper.make_node("Softmax", ["m"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], initializer=[weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, str(path))
    return path


BAD = ["missing artifact", "unknown extension", "corrupt .tflite", "corrupt .onnx", "corrupt .xml",
       "extension does not match content", "data of another shape", "data without labels", "label -1",
       "NaN in the data", "external data: absolute", "external data: climbing",
       "external data: a link out of the folder", "external data: a FIFO"]


@pytest.mark.parametrize("name", BAD)
def test_eval_bad_input_exits_2(name, cli, artifacts, digits, tmp_path):
    out, _ = artifacts
    args, words = _bad(name, tmp_path, out, digits)
    if "--data" not in args:
        args = [*args, "--data", digits["val"]]
    before = snapshot(tmp_path)
    refusal_line(cli("eval", *args), words)
    assert snapshot(tmp_path) == before
