"""Pruning and QAT that tell the truth: the common Conv(activation)→BatchNormalization block
works in both Keras flavours, stage accuracies are of the models really exported, and every
QAT int8 file computes what the QAT model computes."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.heavy  # whole compress/sweep/demo runs: the full suite, not the quick loop

ALL_FORMATS = "tflite,onnx,openvino"


def _conv_act_bn(keras, head: str):
    """Conv2D(activation="relu") → BatchNormalization twice, then a logits or softmax head."""
    L = keras.layers
    return keras.Sequential([
        L.Input((8, 8, 1)),
        L.Conv2D(16, 3, padding="same", activation="relu", name="conv1"), L.BatchNormalization(name="bn1"),
        L.Conv2D(32, 3, padding="same", activation="relu", name="conv2"), L.BatchNormalization(name="bn2"),
        L.MaxPooling2D(name="pool"), L.Flatten(name="flat"),
        L.Dense(10, activation=None if head == "logits" else "softmax", name="head"),
    ])


def _trained(keras, digits, head: str, path):
    keras.utils.set_random_seed(0)
    model = _conv_act_bn(keras, head)
    calib = np.load(digits["calib"])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=head == "logits")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss)
    model.fit(calib["x"], calib["y"], epochs=8, batch_size=32, verbose=0)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def conv_bn_models(digits, tmp_path_factory):
    from edgekit.support.keras_compat import tensorflow, tf_keras

    tensorflow()
    import keras as keras3

    root = tmp_path_factory.mktemp("convbn")
    return {("tf_keras", "softmax"): _trained(tf_keras(), digits, "softmax", root / "tfk_softmax.h5"),
            ("tf_keras", "logits"): _trained(tf_keras(), digits, "logits", root / "tfk_logits.h5"),
            ("keras3", "softmax"): _trained(keras3, digits, "softmax", root / "k3_softmax.keras")}


def _compress(cli, model, digits, out, *flags, formats=ALL_FORMATS):
    result = cli("compress", model, "--data", digits["calib"], "--val", digits["val"], "--formats", formats,
                 "-o", out, "-q", "--epochs", "1", *flags)
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text()), result


def _int8(report):
    return [a for a in report["artifacts"] if a["precision"] == "int8"]


@pytest.mark.parametrize("key", [("tf_keras", "softmax"), ("keras3", "softmax"), ("tf_keras", "logits")])
def test_qat_on_conv_activation_bn_exports_what_the_qat_model_computes(key, cli, conv_bn_models, digits, tmp_path):
    report, result = _compress(cli, conv_bn_models[key], digits, tmp_path / "out", "--qat")
    qat = report["stages"]["qat"]
    # tfmot folds BN only after a linear conv: these two stay float, and are named
    assert qat["unquantized"] == ["bn1 (BatchNormalization)", "bn2 (BatchNormalization)"]
    inspected = json.loads(cli("inspect", conv_bn_models[key], "--json").stdout)
    assert inspected["qat_unsupported"] == qat["unquantized"]  # one function decides both
    assert len(_int8(report)) == 3
    for artifact in _int8(report):
        check = artifact["verification"]
        assert check["against"] == "qat_model" and check["agreement"] >= 0.98, artifact
        # the int8 files score what the QAT model scores (same weights, same ranges)
        assert abs(artifact["accuracy"]["top1"] - qat["keras_accuracy"]["top1"]) <= 0.02
    assert qat["keras_accuracy"]["top1"] > 0.85


@pytest.mark.parametrize("flavour", ["tf_keras", "keras3"])
def test_prune_then_qat_on_conv_activation_bn(flavour, cli, conv_bn_models, digits, tmp_path):
    report, _ = _compress(cli, conv_bn_models[(flavour, "softmax")], digits, tmp_path / "out",
                          "--prune", "0.5", "--qat", formats="tflite")
    assert report["stages"]["prune"]["sparsity"] >= 0.45
    assert all(a["verification"]["agreement"] >= 0.98 for a in _int8(report))


def test_stage_accuracies_are_of_the_models_exported(cli, conv_bn_models, digits, tmp_path):
    """The fp32 files of a pruned run are the pruned model: evaluated on their own, they score
    exactly the pruned-stage accuracy; the QAT stage's accuracy is the QAT model's, not the
    model before QAT."""
    out = tmp_path / "out"
    report, _ = _compress(cli, conv_bn_models[("tf_keras", "softmax")], digits, out, "--prune", "0.5", "--qat",
                          formats="tflite")
    stages = report["stages"]
    fp32 = json.loads(cli("eval", out / "tfk_softmax.fp32.tflite", "--data", digits["val"], "--json").stdout)
    int8 = json.loads(cli("eval", out / "tfk_softmax.int8.tflite", "--data", digits["val"], "--json").stdout)
    assert stages["qat"]["fp32_artifacts"] == "the QAT-trained weights without fake quantization"
    assert fp32["artifacts"][0]["accuracy"]["top1"] == pytest.approx(
        _artifact(report, "tflite-fp32")["accuracy"]["top1"], abs=1e-9)
    assert int8["artifacts"][0]["accuracy"]["top1"] == pytest.approx(stages["qat"]["keras_accuracy"]["top1"], abs=0.02)
    assert stages["keras_accuracy_after"] == stages["qat"]["keras_accuracy"]


def test_pruned_fp32_file_scores_the_pruned_stage_accuracy(cli, conv_bn_models, digits, tmp_path):
    out = tmp_path / "out"
    report, _ = _compress(cli, conv_bn_models[("tf_keras", "softmax")], digits, out, "--prune", "0.5",
                          formats="tflite")
    fp32 = json.loads(cli("eval", out / "tfk_softmax.fp32.tflite", "--data", digits["val"], "--json").stdout)
    assert fp32["artifacts"][0]["accuracy"]["top1"] == pytest.approx(
        report["stages"]["prune"]["keras_accuracy"]["top1"], abs=1e-9)


def test_a_qat_int8_file_that_disagrees_with_the_qat_model_fails_the_run(cli, conv_bn_models, digits, tmp_path,
                                                                         monkeypatch):
    from edgekit.quality import verify

    real = verify.agreement_up_to_ties
    monkeypatch.setattr(verify, "agreement_up_to_ties",
                        lambda scores, reference: (real(scores, reference)[0] * 0.5, real(scores, reference)[1]))
    out = tmp_path / "out"
    result = cli("compress", conv_bn_models[("tf_keras", "softmax")], "--qat", "--data", digits["calib"],
                 "--formats", "tflite", "-o", out, "--epochs", "1")
    # issue 22: a result asked for and not reached is exit 1, with the numbers; the file is left
    # out, and what passed (the fp32 file) and the report are written with the failure recorded
    assert result.exit_code == 1, result.output
    assert "agrees with the QAT model it was exported from on only" in result.stderr
    assert "tfk_softmax.int8.tflite" in result.stderr and "left out" in result.stderr
    assert sorted(p.name for p in out.glob("*.tflite")) == ["tfk_softmax.fp32.tflite"]
    report = json.loads((out / "report.json").read_text())
    (failed,) = report["failed_checks"]
    assert failed["path"] == "tfk_softmax.int8.tflite" and failed["agreement"] < 0.98 and not failed["passed"]
    assert [a["id"] for a in report["artifacts"]] == ["tflite-fp32"]


def _artifact(report, artifact_id):
    (entry,) = [a for a in report["artifacts"] if a["id"] == artifact_id]
    return entry


def test_pruning_fine_tunes_a_softmax_model_with_the_probability_loss(cli, digits, tmp_path, monkeypatch):
    """The pruning wrapper hides the softmax of the last Dense: the loss must still be the one
    for probabilities (it was from_logits=True, with tf_keras' warning on every --prune run)."""
    from edgekit.compression.stages import finetune, prune

    seen = []
    real = finetune.finetune
    monkeypatch.setattr(prune, "finetune", lambda *a, **k: (seen.append(k.get("from_logits")), real(*a, **k))[1])
    result = cli("compress", digits["model"], "--prune", "0.5", "--data", digits["calib"], "--formats", "tflite",
                 "-o", tmp_path / "out", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert seen == [False]
    assert "Measure the compressed (gzip) size" in result.stderr


# --- QAT int8 runs on integer kernels, like PTQ int8 -------------------------------------------

FLOAT_KERNELS = {"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul"}


def _ort_float_kernels(path, tmp_path) -> list[str]:
    """The float Conv/Gemm/MatMul kernels left after ONNX Runtime's own graph optimization:
    what really runs, not what the file suggests."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / f"{path.stem}.optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node if n.op_type in FLOAT_KERNELS]


def test_qat_int8_has_no_more_float_compute_than_ptq_int8(cli, digits, tmp_path):
    qat, _ = _compress(cli, digits["model"], digits, tmp_path / "qat", "--qat")
    ptq, _ = _compress(cli, digits["model"], digits, tmp_path / "ptq", "--int8")
    for fmt in ("tflite", "onnx", "openvino"):
        q, p = _artifact(qat, f"{fmt}-int8")["quantization"], _artifact(ptq, f"{fmt}-int8")["quantization"]
        assert q["float_mac_ops"] <= p["float_mac_ops"] == 0, (fmt, q, p)
    assert _ort_float_kernels(tmp_path / "qat" / "digits.int8.onnx", tmp_path) == []  # QLinearConv, QGemm
    assert _ort_float_kernels(tmp_path / "ptq" / "digits.int8.onnx", tmp_path) == []


def _float_weight_ops(path) -> tuple[int, int]:
    """(ops whose weights are stored as float, all conv/depthwise/fully-connected ops) of a .tflite."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    details = {t["index"]: t for t in interp.get_tensor_details()}
    ops = [op for op in interp._get_ops_details() if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    return sum(details[op["inputs"][1]]["dtype"] == np.float32 for op in ops), len(ops)


@pytest.mark.slow  # QAT of a whole EfficientNetB0: ~75 s
def test_qat_on_efficientnet_is_int8_where_the_report_says(cli, tmp_path):
    """Where tfmot put no fake-quant (after the float Multiply of squeeze-excite blocks), the
    converter's calibration fills in the ranges: all 82 conv ops int8, read from the file."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "tests.zoo_build", "tf_keras", "EfficientNetB0", "64", str(tmp_path)],
                   check=True, capture_output=True, timeout=600)
    result = cli("compress", tmp_path / "EfficientNetB0.h5", "--qat", "--data", tmp_path / "data.npz",
                 "--formats", "tflite", "--epochs", "1", "-o", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    facts = _artifact(report, "tflite-int8")["quantization"]
    float_ops, ops = _float_weight_ops(tmp_path / "out" / "EfficientNetB0.int8.tflite")
    assert (facts["float_mac_ops"], facts["mac_ops"]) == (float_ops, ops) == (0, 82)
    assert _artifact(report, "tflite-int8")["size_vs_fp32"] < 0.35
