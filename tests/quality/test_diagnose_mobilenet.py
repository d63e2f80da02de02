"""Per-layer diagnostics on MobileNetV2 (random weights, BatchNormalization statistics from the
data): every layer found in every format, and the formats agree on each layer's int8 error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from statistics import median

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a full-size MobileNetV2 in three formats: ~55 s
def test_mobilenetv2_diagnostics_cover_every_layer_and_agree_across_formats(tmp_path):
    built = subprocess.run([sys.executable, "-m", "tests.zoo_build", "mobilenet-on-digits", "64", str(tmp_path)],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "edgekit", "compress", str(tmp_path / "mnv2.h5"), "--int8", "--data",
                          str(tmp_path / "mcalib.npz"), "--val", str(tmp_path / "mval.npz"), "-o", str(out), "-q",
                          "--no-bench"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    sqnr = {}
    for d in report["diagnostics"]:
        assert d["not_compared"] == [] and len(d["layers"]) == 53, (d["format"], d["not_compared"])
        sqnr[d["format"]] = {l["layer"]: l["sqnr_db"] for l in d["layers"]}
    gap = {pair: median(abs(sqnr[pair[0]][k] - sqnr[pair[1]][k]) for k in sqnr["tflite"])
           for pair in (("tflite", "onnx"), ("tflite", "openvino"))}
    # TFLite and ONNX Runtime both calibrate with the global min/max: the same grids, the same error
    assert gap[("tflite", "onnx")] <= 0.5, gap
    # NNCF estimates ranges from per-sample statistics and clips the largest values: a few dB lower
    assert gap[("tflite", "openvino")] <= 3.0, gap
    assert all(sqnr["openvino"][k] <= sqnr["tflite"][k] + 1.0 for k in sqnr["tflite"]), gap
