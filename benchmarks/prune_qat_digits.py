"""The pruning/QAT bars on the digits CNN, read back from the written files.

    python benchmarks/prune_qat_digits.py [--seed 0] [--rounds 5] [--out benchmarks/results.md]

Runs PTQ int8, --prune 0.5 --int8, --qat --int8 and --prune 0.5 --qat --int8 in all three
formats and writes its section of results.md:
- top-1 of each TFLite int8 file against the fp32 Keras model, zeros in its int8 weights;
- QAT int8 p50 against PTQ int8 p50 per format, measured interleaved (PTQ, QAT, PTQ, …) in
  `--rounds` rounds on this noisy shared machine, as the median ratio of the pairs;
- the time of each step of the pruning run (report.json timings_s).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from sections import markers, write_section

HERE = Path(__file__).resolve().parent
FORMATS = {"tflite": "tflite", "onnx": "onnx", "openvino": "xml"}  # format → file extension

RUNS = {"PTQ int8": ["--int8"], "prune 0.5 + int8": ["--prune", "0.5", "--int8"], "QAT int8": ["--qat", "--int8"],
        "prune 0.5 + QAT int8": ["--prune", "0.5", "--qat", "--int8"]}


def int8_zero_fraction(path: Path) -> float:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    weights = [interp.get_tensor(op["inputs"][1]) for op in interp._get_ops_details()
               if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D")]
    return sum(int(np.count_nonzero(w == 0)) for w in weights) / sum(w.size for w in weights)


def compress(edgekit: Path, root: Path, name: str, flags: list[str], seed: int) -> dict:
    out = root / name.replace(" ", "_")
    subprocess.run([str(edgekit), "compress", str(root / "digits.h5"), *flags, "--data", str(root / "calib.npz"),
                    "--val", str(root / "val.npz"), "--seed", str(seed), "-o", str(out), "-q", "--no-bench"],
                   check=True, capture_output=True)
    report = json.loads((out / "report.json").read_text())
    report["folder"] = out
    return report


def accuracy_rows(reports: dict) -> list[str]:
    rows = ["| run | fp32 Keras top-1 | int8 TFLite top-1 | Δ (points) | zeros in int8 weights | gzip int8 / size |",
            "|---|---|---|---|---|---|"]
    for name, report in reports.items():
        ref = report["reference"]["accuracy"]["top1"]
        (int8,) = [a for a in report["artifacts"] if a["id"] == "tflite-int8"]
        top1 = int8["accuracy"]["top1"]
        packed = f"{int8['gzip_bytes'] / int8['size_bytes']:.2f}" if int8.get("gzip_bytes") else "—"
        rows.append(f"| {name} | {100 * ref:.2f}% | {100 * top1:.2f}% | {100 * (top1 - ref):+.2f} | "
                    f"{int8_zero_fraction(report['folder'] / 'digits.int8.tflite'):.1%} | {packed} |")
    return rows


def latency_rows(ptq: dict, qat: dict, rounds: int) -> list[str]:
    """PTQ and QAT int8 of each format measured back to back in one bench child per round,
    which of the two goes first alternating by round, so drift and order cancel out."""
    from statistics import median

    from edgekit.measure.latency import BenchSettings, bench_local

    settings = BenchSettings(threads=1, runs=200, min_time_s=1.0)
    p50 = {fmt: {"ptq": [], "qat": []} for fmt in FORMATS}
    for round_ in range(rounds):
        kinds = ("ptq", "qat") if round_ % 2 == 0 else ("qat", "ptq")
        jobs = [(fmt, kind) for fmt in FORMATS for kind in kinds]
        paths = [{"ptq": ptq, "qat": qat}[kind]["folder"] / f"digits.int8.{FORMATS[fmt]}" for fmt, kind in jobs]
        for (fmt, kind), result in zip(jobs, bench_local(paths, settings)):
            p50[fmt][kind].append(result["p50"])
    rows = ["| format | PTQ int8 p50 ms | QAT int8 p50 ms | QAT / PTQ (median of pairs) |", "|---|---|---|---|"]
    for fmt, times in p50.items():
        ratio = median(q / p for p, q in zip(times["ptq"], times["qat"]))
        rows.append(f"| {fmt} | {median(times['ptq']):.4f} | {median(times['qat']):.4f} | {ratio:.2f}× |")
    return rows


def step_rows(report: dict) -> list[str]:
    rows = ["| step of `--prune 0.5 --int8` | seconds |", "|---|---|"]
    for step, seconds in report["timings_s"].items():
        rows.append(f"| {step.replace(str(report['folder'].parent), '…')} | {seconds:.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "results.md")
    args = parser.parse_args()
    from edgekit.demo import train_digits_model

    edgekit = Path(sys.executable).parent / "edgekit"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        x_train, y_train, x_val, y_val = train_digits_model(root / "digits.h5", seed=args.seed)
        np.savez(root / "calib.npz", x=x_train, y=y_train)
        np.savez(root / "val.npz", x=x_val, y=y_val)
        reports = {name: compress(edgekit, root, name, flags, args.seed) for name, flags in RUNS.items()}
        begin, end = markers("prune_qat_digits.py")
        lines = [begin, "## Pruning and QAT on the digits CNN (benchmarks/prune_qat_digits.py)", "",
                 *accuracy_rows(reports), "", f"Latency, batch 1, 1 thread, {args.rounds} interleaved rounds:", "",
                 *latency_rows(reports["PTQ int8"], reports["QAT int8"], args.rounds), "",
                 *step_rows(reports["prune 0.5 + int8"]), "", end]
    section = "\n".join(lines)
    write_section("prune_qat_digits.py", section, args.out)
    print(section)


if __name__ == "__main__":
    main()
