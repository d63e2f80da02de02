"""p50 latency of fp32 and int8 MobileNetV2 (alpha 1.0, 224×224) per format, on this host.

    python benchmarks/latency_mobilenetv2.py [--threads 2] [--calib 64]

Random weights built here (nothing downloaded), random calibration images: this measures
speed, not accuracy. Every artifact is timed by edgekit's harness (batch 1, ≥50 runs and
≥1 s, in a child process); the TFLite files are also timed by a bare LiteRT loop in this
process, to show the harness adds nothing. OpenVINO runs with INFERENCE_PRECISION_HINT=f32,
so its fp32 numbers are real fp32 (not the bf16 it would pick on AMX/AVX512-BF16 CPUs).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgekit.measure.latency import BenchSettings, bench_local, machine


def bare_tflite_p50(path: Path, threads: int, runs: int) -> float:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    x = np.random.default_rng(0).uniform(0, 1, (1, 224, 224, 3)).astype(np.float32)
    times = []
    for i in range(runs + 5):
        start = time.perf_counter()
        interp.set_tensor(inp, x)
        interp.invoke()
        interp.get_tensor(out)
        if i >= 5:
            times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calib", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        code = ("import os; os.environ['TF_USE_LEGACY_KERAS']='1'; import tf_keras as k; "
                f"k.applications.MobileNetV2(alpha=1.0, input_shape=(224, 224, 3), weights=None).save(r'{root}/mnv2.h5')")
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        x = np.random.default_rng(0).uniform(-1, 1, (args.calib, 224, 224, 3)).astype(np.float32)
        np.savez(root / "calib.npz", x=x)
        edgekit = Path(sys.executable).parent / "edgekit"
        subprocess.run([str(edgekit), "compress", str(root / "mnv2.h5"), "--int8", "--data", str(root / "calib.npz"),
                        "-o", str(root / "out"), "-q", "--no-bench"], check=True, capture_output=True)
        out = root / "out"
        files = {f"{fmt}-{p}": out / f"mnv2.{p}.{ext}" for fmt, ext in (("tflite", "tflite"), ("onnx", "onnx"),
                                                                          ("openvino", "xml"))
                 for p in ("fp32", "int8")}
        settings = BenchSettings(threads=args.threads)
        results = dict(zip(files, bench_local(list(files.values()), settings)))
        # Harness vs bare loop, interleaved 3 times: this shared machine drifts ±15% between
        # minutes, so only back-to-back pairs are comparable; the median ratio is reported.
        pairs = {k: [] for k in ("tflite-fp32", "tflite-int8")}
        for _ in range(3):
            for key in pairs:
                (harness,) = bench_local([files[key]], settings)
                pairs[key].append((harness["p50"], bare_tflite_p50(files[key], args.threads, harness["runs"])))
    host = machine()
    print(f"MobileNetV2 1.0 224×224, batch 1, {args.threads} threads, on {host['cpu']} "
          f"({' '.join(host['isa'])}); runtimes {json.dumps(host['runtimes'])}\n")
    print("| format | fp32 p50 ms | int8 p50 ms | int8/fp32 speed-up |")
    print("|---|---|---|---|")
    for fmt in ("tflite", "onnx", "openvino"):
        fp32, int8 = results[f"{fmt}-fp32"]["p50"], results[f"{fmt}-int8"]["p50"]
        print(f"| {fmt} | {fp32:.2f} | {int8:.2f} | {fp32 / int8:.2f}× |")
    print("\n| TFLite file | harness p50 ms (3 rounds) | bare loop p50 ms | median harness / bare |")
    print("|---|---|---|---|")
    for key, rounds in pairs.items():
        ratio = float(np.median([h / b for h, b in rounds]))
        print(f"| {key} | {', '.join(f'{h:.2f}' for h, _ in rounds)} | {', '.join(f'{b:.2f}' for _, b in rounds)} "
              f"| {ratio:.3f} |")


if __name__ == "__main__":
    main()
