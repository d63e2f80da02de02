"""The pruning/QAT bars on the digits CNN, read back from the written .tflite files.

    python benchmarks/prune_qat_digits.py [--seed 0]

Runs PTQ int8, --prune 0.5 --int8, --qat --int8 and --prune 0.5 --qat --int8 (TFLite), and
prints top-1 of each int8 file against the fp32 Keras model and the fraction of zeros in its
int8 conv/dense weights.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

RUNS = {"PTQ int8": ["--int8"], "prune 0.5 + int8": ["--prune", "0.5", "--int8"], "QAT int8": ["--qat", "--int8"],
        "prune 0.5 + QAT int8": ["--prune", "0.5", "--qat", "--int8"]}


def int8_zero_fraction(path: Path) -> float:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    weights = [interp.get_tensor(op["inputs"][1]) for op in interp._get_ops_details()
               if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D")]
    return sum(int(np.count_nonzero(w == 0)) for w in weights) / sum(w.size for w in weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from edgekit.demo import train_digits_model

    edgekit = Path(sys.executable).parent / "edgekit"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        x_train, y_train, x_val, y_val = train_digits_model(root / "digits.h5", seed=args.seed)
        np.savez(root / "calib.npz", x=x_train, y=y_train)
        np.savez(root / "val.npz", x=x_val, y=y_val)
        print("| run | fp32 Keras top-1 | int8 TFLite top-1 | Δ (points) | zeros in int8 weights | gzip int8 / size |")
        print("|---|---|---|---|---|---|")
        for name, flags in RUNS.items():
            out = root / name.replace(" ", "_")
            subprocess.run([str(edgekit), "compress", str(root / "digits.h5"), *flags, "--data", str(root / "calib.npz"),
                            "--val", str(root / "val.npz"), "--formats", "tflite", "--seed", str(args.seed),
                            "-o", str(out), "-q"], check=True, capture_output=True)
            report = json.loads((out / "report.json").read_text())
            ref = report["reference"]["accuracy"]["top1"]
            (int8,) = [a for a in report["artifacts"] if a["id"] == "tflite-int8"]
            top1 = int8["accuracy"]["top1"]
            packed = f"{int8['gzip_bytes'] / int8['size_bytes']:.2f}" if int8.get("gzip_bytes") else "—"
            print(f"| {name} | {100 * ref:.2f}% | {100 * top1:.2f}% | {100 * (top1 - ref):+.2f} | "
                  f"{int8_zero_fraction(out / 'digits.int8.tflite'):.1%} | {packed} |", flush=True)


if __name__ == "__main__":
    main()
