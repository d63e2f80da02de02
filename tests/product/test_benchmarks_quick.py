"""The side-by-side benchmark's --quick smoke run: both pipelines run and the report is complete.

It asserts that the comparison works and what it writes, not the timings: the targets are
measured by the full run (benchmarks/results.md), on a quiet machine, not in a noisy test.
"""

from __future__ import annotations

import pytest

import json
import subprocess
import sys
import time
from pathlib import Path

pytestmark = pytest.mark.heavy  # whole compress/sweep/demo runs: the full suite, not the quick loop

ROOT = Path(__file__).resolve().parents[2]


def test_quick_side_by_side_run_completes_and_reports(tmp_path):
    out = tmp_path / "results.md"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "vs_handwritten.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.perf_counter() - start < 120  # the bound for the smoke run
    text = out.read_text()
    for fmt in ("tflite", "onnx", "openvino"):
        assert f"| digits CNN | {fmt} |" in text
    assert "compress wall s (edgekit / hand)" in text and out.with_suffix(".png").stat().st_size > 5000
    (result,) = json.loads(out.with_suffix(".json").read_text())["results"]
    accuracy = result["accuracy"]
    for fmt in ("tflite", "onnx", "openvino"):  # both sides really quantized and kept the model working
        assert abs(accuracy[f"edgekit/{fmt}"] - accuracy["fp32"]) <= 0.005
        assert accuracy[f"handwritten/{fmt}"] > 0.9
    assert all(v > 0 for v in result["latency"].values())
