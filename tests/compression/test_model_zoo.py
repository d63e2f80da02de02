"""The models people bring: keras.applications in both Keras flavours (weights=None, small
inputs) compress to int8 in all three formats with every fp32 file verified.

Each model is built in a child process and compressed by the real `edgekit compress`
command in another, as a user runs it. The conversion steps run in that process
(EDGEKIT_STEP_PROCESSES=inline: the same step functions, without a TensorFlow start-up per
step) except for one model that takes the child-process path that models of ≥ 32 MiB of
weights take by default. The small grouped-convolution model is in test_memory_and_failures.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# 13 architectures, 25–160 s each on 2 cores: the slow tier, beside the trained ones (README, Development).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ZOO = [
    ("keras3", "ResNet50", 32), ("keras3", "EfficientNetV2B0", 32), ("keras3", "DenseNet121", 32),
    ("keras3", "ConvNeXtTiny", 32), ("keras3", "NASNetMobile", 32), ("keras3", "MobileNetV3Small", 32),
    ("keras3", "Xception", 71), ("keras3", "InceptionV3", 75),
    ("tf_keras", "ResNet50", 32), ("tf_keras", "EfficientNetB0", 32), ("tf_keras", "MobileNetV3Small", 32),
    ("tf_keras", "DenseNet121", 32), ("tf_keras", "RegNetX002", 32),
]
FORMATS = ("tflite", "onnx", "openvino")
CHILD_STEPS = ("tf_keras", "ResNet50")
# Keras 3 models the tf_keras bridge cannot rebuild: int8 and export come from Keras 3 itself.
NOT_BRIDGED = {"MobileNetV3Small": "the hard_silu activation has no tf_keras equivalent"}


@pytest.mark.parametrize("flavour,name,size", ZOO, ids=[f"{f}-{n}" for f, n, _ in ZOO])
def test_application_compresses_to_int8_in_all_formats(flavour, name, size, tmp_path):
    built = subprocess.run([sys.executable, "-m", "tests.zoo_build", flavour, name, str(size), str(tmp_path)],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    model = Path(built.stdout.strip().splitlines()[-1])
    out = tmp_path / "out"
    mode = "child" if (flavour, name) == CHILD_STEPS else "inline"
    run = subprocess.run([sys.executable, "-m", "edgekit", "compress", str(model), "--int8",
                          "--data", str(tmp_path / "data.npz"), "-o", str(out), "--no-bench", "-q"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "EDGEKIT_STEP_PROCESSES": mode})
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    if flavour == "keras3":
        assert report["source"]["bridge"]["bridged"] == (name not in NOT_BRIDGED), report["source"]["bridge"]
    artifacts = {a["id"]: a for a in report["artifacts"]}
    assert set(artifacts) == {f"{f}-{p}" for f in FORMATS for p in ("fp32", "int8")}
    for fmt in FORMATS:
        fp32, int8 = artifacts[f"{fmt}-fp32"], artifacts[f"{fmt}-int8"]
        assert fp32["verification"]["max_abs_diff"] <= 1e-4
        assert fp32["agreement"] == 1.0  # same top-1 as Keras on every input: outputs are distinct
        assert not int8["quantization"]["mostly_float"], int8["quantization"]
        assert int8["quantization"]["int8_mac_share"] >= 0.9, (fmt, int8["quantization"])
    _check_diagnostics(report, flavour, name)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", "data.npz", model.name])
    if mode == "child":  # a child's peak is its own, not this process's
        steps = report["peak_rss_mb"]
        assert steps["TFLite: convert int8"] != steps["ONNX: convert fp32 (tf2onnx)"]


def _check_diagnostics(report: dict, flavour: str, name: str) -> None:
    """Every int8 compress reports per-layer error, per format, of the layers whose tap the
    fp32 file of that format reproduced (the rest are listed as not compared, never guessed)."""
    if flavour == "keras3" and name in NOT_BRIDGED:  # no tf_keras model to take layer outputs from
        assert report["diagnostics"] is None
        return
    diagnostics = {d["format"]: d for d in report["diagnostics"]}
    assert set(diagnostics) == set(FORMATS)
    for fmt, d in diagnostics.items():
        compared = [l["layer"] for l in d["layers"]]
        assert len(set(compared)) == len(compared) and not set(compared) & set(d["not_compared"])
        least = LOW_COVERAGE.get(name, (MIN_COMPARED, ""))[0]
        assert len(compared) >= least * (len(compared) + len(d["not_compared"])), (fmt, d["not_compared"])
        assert [l["added_db"] for l in d["layers"]] == sorted((l["added_db"] for l in d["layers"]), reverse=True)
        print(f"{flavour} {name} {fmt}: {len(compared)} compared, not: {d['not_compared']}")


MIN_COMPARED = 0.5
# Layers are paired with a file's ops by kernel shape in order; where parallel branches hold
# convs of the same shape, a converter may order them otherwise, and the fp32 check then
# leaves those layers out (never shown wrong). Measured coverage, per format, at least:
LOW_COVERAGE = {"NASNetMobile": (0.4, "cells of parallel same-shape convs: 17-21 of 37 layers compared"),
                "Xception": (0.4, "its 7 conv layers: 4 shortcut convs beside separable-conv paths"),
                "InceptionV3": (0.4, "parallel 1x1 branches: 45 of 95 compared in ONNX")}


def test_densenet_is_integer_only_in_every_format(tmp_path):
    """DenseNet121 normalizes each concatenation with a BatchNorm that no conv before it can take:
    `--integer-only` makes those 1×1 depthwise convolutions (repairs.batchnorm_as_conv), and
    every conv/dense op of the three int8 files computes in integers, read back from the files
    (ONNX Runtime has no integer BatchNormalization; NNCF quantizes the pieces of each nested
    concatenation, which the OpenVINO reader follows)."""
    built = subprocess.run([sys.executable, "-m", "tests.zoo_build", "tf_keras", "DenseNet121", "32", str(tmp_path)],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    model = Path(built.stdout.strip().splitlines()[-1])
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "edgekit", "compress", str(model), "--integer-only", "--int8",
                          "--data", str(tmp_path / "data.npz"), "-o", str(out), "--no-bench", "-q"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "EDGEKIT_STEP_PROCESSES": "inline"})
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert len(report["repairs"]["batchnorm_as_conv"]["converted"]) == 62
    assert report["repairs"]["batchnorm_as_conv"]["max_abs_change"] <= 1e-4
    checked = report["target"]["checked"]
    assert len(checked) == 3 and all(c["problems"] == [] for c in checked), checked
    for artifact in (a for a in report["artifacts"] if a["precision"] == "int8"):
        assert artifact["quantization"]["int8_mac_share"] == 1.0, (artifact["id"], artifact["quantization"])
