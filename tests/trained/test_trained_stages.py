"""Pruning, QAT and accuracy-aware int8 on real keras.applications architectures trained for
real (tests/trained_build.py), not on random weights (issue 22).

Marked slow: each architecture is trained once per run in a child process (30–100 s each on
2 cores), then compressed the ways a user would. The quick tier is `pytest -m "not slow"`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Training and compressing ResNet50 takes minutes on 2 cores: past the suite's 600 s default per test.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
# name → (flavour, architecture, input size, training epochs). MobileNetV2 trains 12 epochs: at 6 the
# Keras 3 one reached 86% (many inputs with a top-1 margin of a few hundredths, which any runtime's own
# rounding flips: OpenVINO's int8 kernels alone disagreed with the QAT model on 11 of 539), at 12 93.7%.
MODELS = {
    "mobilenetv2-keras3": ("keras3", "MobileNetV2", 48, 12),
    "mobilenetv2-tf_keras": ("tf_keras", "MobileNetV2", 48, 12),
    "efficientnetb0": ("tf_keras", "EfficientNetB0", 32, 4),
    "resnet50": ("keras3", "ResNet50", 32, 4),
}
# Fine-tuning epochs for 50% pruning: MobileNetV2 at width 0.35 has ~0.4 M weights, and half of
# them go; 2 epochs (the default) kept 81.5% of 92.6% on one of the two trained here, 4 recover it.
# ResNet50 at 2 epochs landed 2.8 and 3.2 points under the original in two runs (int8 file; the
# training differs run to run), at 3 epochs 2.0. The bar is close for ResNet50 and EfficientNetB0,
# and more epochs are not always better (issue 22's closing note: models trained with op
# determinism lost 3.3-18 points).
# Trained with MobileNetV2's own SGD recipe (tests/trained_build.py): it leaves the dead channels
# ImageNet-trained MobileNets have, on which per-tensor int8 collapses (issue 26); repairs only.
DEAD_CHANNEL_MODELS = {"mobilenetv2-sgd": ("tf_keras", "MobileNetV2", 48, 30, "sgd")}
PRUNE_EPOCHS = {"mobilenetv2-keras3": 4, "mobilenetv2-tf_keras": 4, "efficientnetb0": 2, "resnet50": 3}
MIN_TRAINED_TOP1 = 0.85  # the models must really be trained, or the bars below prove nothing


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """Train each architecture on first use; {name: {"model", "train", "val", "top1"}}."""
    made: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in made:
            flavour, arch, size, epochs, *recipe = {**MODELS, **DEAD_CHANNEL_MODELS}[name]
            folder = tmp_path_factory.mktemp(name)
            out = subprocess.run([sys.executable, "-m", "tests.trained_build", flavour, arch, str(size), str(folder),
                                  str(epochs), *recipe], cwd=ROOT, capture_output=True, text=True, timeout=900,
                                 env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
            assert out.returncode == 0, out.stderr[-3000:]
            built = json.loads(out.stdout.strip().splitlines()[-1])
            assert built["top1"] >= MIN_TRAINED_TOP1, built
            made[name] = {"model": Path(built["model"]), "train": folder / "train.npz", "val": folder / "val.npz",
                          "top1": built["top1"]}
        return made[name]

    return get


def _compress(cli, model: dict, out: Path, *flags):
    result = cli("compress", model["model"], "--data", model["train"], "--val", model["val"], "-o", out, "-q", *flags)
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else None
    return result, report


def _int8(report: dict) -> list[dict]:
    return [a for a in report["artifacts"] if a["precision"] == "int8"]


@pytest.mark.parametrize("name", list(MODELS))
def test_prune_half_keeps_a_trained_network(name, trained, cli, tmp_path):
    model = trained(name)
    result, report = _compress(cli, model, tmp_path / "out", "--prune", "0.5", "--int8", "--formats", "tflite",
                               "--epochs", str(PRUNE_EPOCHS[name]))
    assert result.exit_code == 0, result.output
    original = report["reference"]["accuracy"]["top1"]
    prune = report["stages"]["prune"]
    assert prune["sparsity"] >= 0.45
    assert original - prune["keras_accuracy"]["top1"] <= 0.03, prune
    for artifact in report["artifacts"]:
        assert original - artifact["accuracy"]["top1"] <= 0.03, artifact
    settings = prune["finetune"]
    assert settings["batchnorm"].startswith("frozen") and len(settings["val_top1_per_epoch"]) == settings["epochs"]
    assert settings["learning_rate"] > 0 and settings["warmup_steps"] > 0


# A limit measured, not hidden (issue 22): EfficientNetB0's QAT model changes its own top-1 on 2-3% of
# the validation inputs when they move by a millionth of their range (verify.rounding_sensitivity;
# MobileNetV2: see benchmarks/results.md), so a file whose runtime breaks rounding ties its own way
# (OpenVINO's int8 kernels requantize in float) can land under 98% with no export bug; TFLite and ONNX
# usually clear it. Every tensor the files quantize is quantized in the QAT model too, biases sit on
# the files' int32 grid, the logits on a grid fine enough to tell the top two classes apart. For it
# the test holds the exit-1 contract instead: every file short of 98% is named, left out and
# recorded with the QAT model's own sensitivity, the rest written.
QAT_KNOWN_GAPS = {"efficientnetb0": "the QAT model amplifies single rounding flips (benchmarks/results.md)"}


@pytest.mark.parametrize("name", list(MODELS))
def test_qat_int8_files_compute_what_the_qat_model_computes(name, trained, cli, tmp_path):
    model = trained(name)
    out = tmp_path / "out"
    result, report = _compress(cli, model, out, "--qat")
    float_top1 = report["reference"]["accuracy"]["top1"]
    qat = report["stages"]["qat"]
    assert float_top1 - qat["keras_accuracy"]["top1"] <= 0.015, qat
    assert qat["biases_rounded"] >= 50, qat  # every conv and the head (MobileNetV2 has 52 convs)
    assert qat["rounding_sensitivity"]["inputs"] >= 500, qat  # every validation input (539)
    assert 0.0 <= qat["rounding_sensitivity"]["top1_changed"] < 0.1, qat
    if name in QAT_KNOWN_GAPS and result.exit_code == 1:
        failed = report["failed_checks"]
        assert failed and all(f["against"] == "qat_model" and f["agreement"] < 0.98 for f in failed), failed
        assert all(f["qat_model_top1_changed_by_nudge"] > 0 for f in failed), failed
        assert "the QAT model itself changes its top-1" in result.stderr
        for f in failed:
            assert f["path"] in result.stderr and "left out" in result.stderr and not (out / f["path"]).exists()
        assert len(_int8(report)) + len(failed) == 3
    else:
        assert result.exit_code == 0, result.output
        assert len(_int8(report)) == 3 and report["failed_checks"] == []
    for artifact in _int8(report):
        check = artifact["verification"]
        assert check["against"] == "qat_model" and check["agreement"] >= 0.98, artifact


@pytest.mark.parametrize("mode", ["inline", "child"])
def test_accuracy_aware_int8_on_keras3_in_both_step_modes(mode, trained, cli, tmp_path, monkeypatch):
    """The crash of issue 22: a Keras 3 model's working.h5 existed only in child mode."""
    monkeypatch.setenv("EDGEKIT_STEP_PROCESSES", mode)
    model = trained("mobilenetv2-keras3")
    result, report = _compress(cli, model, tmp_path / "out", "--int8", "--max-accuracy-drop", "0.5",
                               "--formats", "tflite,onnx")
    assert result.exit_code in (0, 1), result.output
    assert report is not None and report["source"]["keras"] == "keras3"
    for artifact in _int8(report):
        assert "accuracy_aware" in artifact and artifact["accuracy_aware"]["max_drop"] == 0.5


def test_a_stage_that_loses_too_much_stops_with_exit_1_and_writes_nothing(trained, cli, tmp_path):
    """A learning rate far too high wrecks the network: the run says so after the stage."""
    model = trained("mobilenetv2-keras3")
    out = tmp_path / "out"
    result, report = _compress(cli, model, out, "--prune", "0.9", "--int8", "--formats", "tflite",
                               "--epochs", "1", "--learning-rate", "0.5")
    assert result.exit_code == 1, result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    for words in ("pruning kept top-1", "of the original", "over the tolerance of 3", "--epochs", "--learning-rate",
                  "--prune sparsity"):
        assert words in line, (words, line)
    assert report is None and not out.exists()


def test_integer_only_repairs_on_a_trained_mobilenetv2(trained, cli, tmp_path):
    """Per-tensor, integer-only, with every repair (ReLU6 made ReLU so that equalization reaches the
    inverted-residual blocks, then bias correction) on the trained MobileNetV2: the equalization
    check passes on a converged network, every conv/dense op of the file is integer with one weight
    scale (read back), and top-1 stays within 1.5 points of the original."""
    from edgekit.formats.facts import read_facts

    model = trained("mobilenetv2-tf_keras")
    out = tmp_path / "out"
    result, report = _compress(cli, model, out, "--int8", "--per-tensor", "--integer-only", "--relu6",
                               "--bias-correction", "--formats", "tflite", "--no-bench")
    assert result.exit_code == 0, result.output
    repairs = report["repairs"]
    assert len(repairs["equalize"]["relu6_made_relu"]) == 35 and len(repairs["equalize"]["pairs"]) >= 30
    assert repairs["equalize"]["max_abs_change"] <= 1e-3
    assert len(repairs["bias_correction"]["corrected"]) >= 50
    assert repairs["change"]["top1_agreement"] >= 0.95
    (int8,) = _int8(report)
    assert int8["accuracy"]["top1"] >= report["reference"]["accuracy"]["top1"] - 0.015, int8["accuracy"]
    facts = read_facts(out / "MobileNetV2.int8.tflite", "tflite")
    assert len(facts.mac_ops) >= 50 and all(op.int8_compute and op.weight_scales == 1 for op in facts.mac_ops)


def test_mse_ranges_and_int16x8_on_a_trained_mobilenetv2(trained, cli, tmp_path):
    """On the trained MobileNetV2 the MSE ranges narrow most activations, and TFLite and ONNX, given
    the same ranges, both stay within 1.5 points of the float model; the int16x8 file, read back
    as int16 activations, within 1 point."""
    from edgekit.formats.facts import read_facts

    model = trained("mobilenetv2-tf_keras")
    out = tmp_path / "out"
    result, report = _compress(cli, model, out, "--int8", "--ranges", "mse", "--int16x8", "--formats", "tflite,onnx",
                               "--no-bench")
    assert result.exit_code == 0, result.output
    reference = report["reference"]["accuracy"]["top1"]
    for int8 in _int8(report):
        assert int8["settings"]["ranges"].startswith("MSE"), int8["settings"]
        narrowed, total = (int(w) for w in int8["settings"]["ranges"].split(": ")[1].split(" activation")[0].split(" of "))
        assert narrowed >= total // 2, int8["settings"]
        assert int8["accuracy"]["top1"] >= reference - 0.015, (int8["id"], int8["accuracy"])
    wide = next(a for a in report["artifacts"] if a["precision"] == "int16x8")
    assert read_facts(out / wide["files"][0], "tflite").precision == "int16x8"
    assert wide["accuracy"]["top1"] >= reference - 0.01, wide["accuracy"]


def test_learned_rounding_on_a_trained_mobilenetv2_reaches_every_file(trained, cli, tmp_path):
    """AdaRound on the trained MobileNetV2, per-tensor and integer-only, all three formats: every
    layer's output error from rounding at most nearest's, the chosen int8 weights read back from
    every file (OpenVINO's first conv excepted: NNCF keeps it to 7 bits), most layers' int8 SQNR up,
    and top-1 within 1.5 points of the original in each file."""
    model = trained("mobilenetv2-tf_keras")
    out = tmp_path / "out"
    result, report = _compress(cli, model, out, "--int8", "--per-tensor", "--integer-only", "--adaround",
                               "--no-bench")
    assert result.exit_code == 0, result.output
    record = report["repairs"]["adaround"]
    assert len(record["rounded"]) == 53 and all(r["error_chosen"] <= r["error_nearest"] for r in record["rounded"])
    assert sum(r["error_chosen"] for r in record["rounded"]) < 0.7 * sum(r["error_nearest"] for r in record["rounded"])
    held = record["held"]
    assert held["MobileNetV2.int8.tflite"]["not_held"] == [] and held["MobileNetV2.int8.onnx"]["not_held"] == []
    assert held["MobileNetV2.int8.xml"]["not_held"] in ([], ["Conv1"]), held
    sqnr = report["repairs"]["layer_sqnr_db"]
    assert sqnr["stages"][-1] == "adaround"
    gains = [row["sqnr_db"][-1] - row["sqnr_db"][-2] for row in sqnr["layers"] if None not in row["sqnr_db"][-2:]]
    assert sum(g > 0 for g in gains) >= 0.8 * len(gains), gains
    for int8 in _int8(report):
        assert int8["accuracy"]["top1"] >= report["reference"]["accuracy"]["top1"] - 0.015, (int8["id"], int8["accuracy"])


def test_per_tensor_recovers_from_the_dead_channels_sgd_training_leaves(trained, cli, tmp_path):
    """MobileNetV2 trained with its paper's SGD recipe: per-tensor int8 with no repair collapses
    (dead channels whose folded kernels are hundreds of times the rest set each tensor's step);
    --per-tensor, which silences them, recovers at least half the gap to per-channel (it recovers
    nearly all), with the float function unchanged; --relu6 is said loudly to break this model."""
    model = trained("mobilenetv2-sgd")
    plain = tmp_path / "plain.yaml"
    plain.write_text("repairs: {dead_channels: false}\n")
    top1 = {}
    for run, flags in (("per-channel", []), ("plain", ["--per-tensor", "--recipe", plain]),
                       ("repaired", ["--per-tensor"])):
        result, report = _compress(cli, model, tmp_path / run, "--int8", "--formats", "tflite", "--no-bench", *flags)
        assert result.exit_code == 0, result.output
        (int8,) = _int8(report)
        top1[run] = int8["accuracy"]["top1"]
    assert top1["plain"] < 0.5, top1
    assert top1["repaired"] - top1["plain"] >= 0.5 * (top1["per-channel"] - top1["plain"]), top1
    record = report["repairs"]["dead_channels"]
    assert sum(len(s["channels"]) for s in record["silenced"]) >= 10 and record["max_abs_change"] <= 1e-5
    assert max(s["fold_over_median"] for s in record["silenced"]) > 100

    result = cli("compress", model["model"], "--data", model["train"], "-o", tmp_path / "relu6", "--int8",
                 "--per-tensor", "--relu6", "--formats", "tflite", "--no-bench")  # not -q: the notes are the point
    assert result.exit_code == 0, result.output
    assert "this model needs its ReLU6 clipping; leave out --relu6" in result.output


# Channel pruning on the trained networks (issue 27): half the MACs removed, the least sensitive
# groups first, 3 epochs with distillation. On benchmarks/channels.py's larger MobileNetV2 (width
# 1.0, 96 px) and this ResNet50 the int8 files are timed side by side; here the fp32 TFLite files
# of the original and the pruned model (report.json host_latency_ms): ResNet50 at 32 px is bound by
# its convolutions' MACs, MobileNetV2 0.35 at 48 px largely by per-layer overhead (benchmarks/results.md).
CHANNEL_MODELS = {"mobilenetv2-tf_keras": 1.0, "resnet50": 1.4}  # speed-up of the fp32 file at least
# MobileNetV2 at width 0.35 has little to spare: half its MACs cost 6.7 points after 3 epochs (65.3,
# 79.8, 86.1%) and none after 8 (best epoch 6: 94.6% of 92.8%); ResNet50 recovers in the default 3.
CHANNEL_EPOCHS = {"mobilenetv2-tf_keras": 8, "resnet50": 3}


@pytest.mark.parametrize("name", list(CHANNEL_MODELS))
def test_channel_pruning_half_the_macs_keeps_a_trained_network(name, trained, cli, tmp_path):
    model = trained(name)
    result, report = _compress(cli, model, tmp_path / "out", "--prune-channels-target-macs", "0.5", "--int8",
                               "--formats", "tflite", "--epochs", str(CHANNEL_EPOCHS[name]), "--bench-here")
    assert result.exit_code == 0, result.output
    channels = report["stages"]["channels"]
    original = report["reference"]["accuracy"]["top1"]
    assert channels["macs"]["after"] <= 0.5 * channels["macs"]["before"], channels["macs"]
    assert original - channels["keras_accuracy"]["top1"] <= 0.015, channels["keras_accuracy"]
    assert channels["keras_accuracy"]["top1"] > channels["top1_before_finetune"]  # the fine-tune recovered it
    (int8,) = _int8(report)
    assert original - int8["accuracy"]["top1"] <= 0.025, int8
    latency = channels["host_latency_ms"]
    assert latency["before"] / latency["after"] >= CHANNEL_MODELS[name], latency
