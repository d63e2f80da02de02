"""Measure `edgekit compress --int8` on the demo's digits CNN: wall time, size and accuracy.

    python benchmarks/compress_digits.py [--repeats 3]

Each repeat runs the real console script in a fresh process (TensorFlow import included),
so the wall time is what a user waits. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def prepare(root: Path) -> tuple[Path, Path, Path]:
    from edgekit.demo import train_digits_model

    model = root / "digits.h5"
    x_train, y_train, x_val, y_val = train_digits_model(model)
    np.savez(root / "calib.npz", x=x_train, y=y_train)
    np.savez(root / "val.npz", x=x_val, y=y_val)
    return model, root / "calib.npz", root / "val.npz"


def run_once(model: Path, calib: Path, val: Path, out: Path, *extra: str) -> tuple[float, dict]:
    edgekit = Path(sys.executable).parent / "edgekit"
    start = time.perf_counter()
    subprocess.run([str(edgekit), "compress", str(model), "--int8", "--data", str(calib), "--val", str(val),
                    "-o", str(out), "--force", "-q", *extra], check=True, capture_output=True)
    return time.perf_counter() - start, json.loads((out / "report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, calib, val = prepare(root)
        walls, report = {"with host latency": [], "--no-bench": []}, None
        for _ in range(args.repeats):  # interleaved, so drift on this shared machine hits both alike
            for mode, extra in (("with host latency", ()), ("--no-bench", ("--no-bench",))):
                wall, report = run_once(model, calib, val, root / "out", *extra)
                walls[mode].append(wall)
    ref = report["reference"]["accuracy"]["top1"]
    for mode, times in walls.items():
        print(f"compress --int8 {mode}, 3 formats, digits CNN ({report['source']['params']:,} params), "
              f"{args.repeats} runs: wall median {statistics.median(times):.1f} s "
              f"(min {min(times):.1f}, max {max(times):.1f})")
    print()
    print("| artifact | size (bytes) | int8/fp32 size | top-1 | Δ vs Keras (points) | agreement |")
    print("|---|---|---|---|---|---|")
    for a in report["artifacts"]:
        top1 = a["accuracy"]["top1"]
        print(f"| {a['id']} | {a['size_bytes']:,} | {a['size_vs_fp32']:.3f} | {100 * top1:.2f}% | "
              f"{100 * (top1 - ref):+.2f} | {100 * a['agreement']:.2f}% |")
    print(f"\nKeras reference top-1: {100 * ref:.2f}%")


if __name__ == "__main__":
    main()
