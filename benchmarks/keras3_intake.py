"""Acceptance run for Keras 3 intake: keras.applications models written by Keras 3, as
.keras and .h5, each compressed to int8 in all three formats with verification.

    python benchmarks/keras3_intake.py [--models mobilenetv2,resnet50,efficientnetb0] [--calib 32]

Random weights (nothing is downloaded) and random calibration images: this measures that
the bridge and the exports are exact and how long they take, not accuracy. Prints a
Markdown table; each compress runs in a fresh process, its peak RSS taken from the OS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BUILDERS = {
    "mobilenetv2": "keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None)",
    "resnet50": "keras.applications.ResNet50(weights=None)",
    "efficientnetb0": "keras.applications.EfficientNetB0(weights=None)",
}


def build(name: str, root: Path, calib: int) -> tuple[list[Path], Path]:
    """Save the model with Keras 3 (in a child process, as a user's training script would)."""
    code = (f"import os; os.environ['TF_USE_LEGACY_KERAS']='1'; import keras, numpy as np; "
            f"m = {BUILDERS[name]}; m.save(r'{root / name}.keras'); m.save(r'{root / name}.h5'); "
            f"print(list(m.inputs[0].shape[1:]))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    shape = json.loads(out.strip().splitlines()[-1])
    x = np.random.default_rng(0).uniform(0, 1, (calib, *shape)).astype(np.float32)
    np.savez(root / f"{name}-calib.npz", x=x)
    return [root / f"{name}.keras", root / f"{name}.h5"], root / f"{name}-calib.npz"


def compress(model: Path, calib: Path, out: Path) -> tuple[float, float, dict]:
    edgekit = Path(sys.executable).parent / "edgekit"
    start = time.perf_counter()
    child = subprocess.Popen([str(edgekit), "compress", str(model), "--int8", "--data", str(calib), "-o", str(out),
                              "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS, in KiB on Linux
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"edgekit compress {model} failed (status {status})")
    return wall, usage.ru_maxrss / 1024, json.loads((out / "report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(BUILDERS))
    parser.add_argument("--calib", type=int, default=32)
    args = parser.parse_args()
    print("| model | file | bridge max|Δ| | fp32 max|Δ| (tflite/onnx/ov) | int8/fp32 size (tflite/onnx/ov) | wall s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in args.models.split(","):
            files, calib = build(name, root, args.calib)
            for model in files:
                wall, rss, report = compress(model, calib, root / f"out-{model.name}")
                arts = {a["id"]: a for a in report["artifacts"]}
                diffs = "/".join(f"{arts[f'{f}-fp32']['verification']['max_abs_diff']:.1e}" for f in ("tflite", "onnx", "openvino"))
                sizes = "/".join(f"{arts[f'{f}-int8']['size_vs_fp32']:.2f}" for f in ("tflite", "onnx", "openvino"))
                bridge = report["source"]["bridge"]
                shown = f"{bridge['max_abs_diff']:.1e}" if bridge and bridge["bridged"] else "not bridged"
                print(f"| {name} | {model.suffix} | {shown} | {diffs} | {sizes} | {wall:.1f} | {rss:.0f} |", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
