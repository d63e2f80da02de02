"""Accuracy-aware int8 and per-layer diagnostics, measured.

    python benchmarks/accuracy_aware.py [--rounds 5] [--size 64] [--out benchmarks/results.md]

1. The digits CNN with two activation outliers in its hidden Dense layer (edgekit.demo.
   add_activation_outliers): fp32, plain int8, `--max-accuracy-drop 0.5` int8 (float fallback)
   and `--integer-only` int8 (cross-layer equalization, every layer integer) per format:
   top-1 on the validation split, size, and p50 latency measured interleaved (the three
   files of a format back to back in one bench child, the order rotating by round), with
   each compress run's wall time and peak memory.
2. MobileNetV2 (random weights, BatchNormalization statistics set from the data, 64×64
   digits images: tests/zoo_build.py build_mobilenet_on_digits): `diagnose` time against one int8 verification (the file run on the same
   inputs), and how far the per-layer SQNR of the three formats lies apart.
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
from statistics import median

import numpy as np

from process_peak import run_measured
from sections import markers, write_section

HERE = Path(__file__).resolve().parent
FORMATS = {"tflite": "tflite", "onnx": "onnx", "openvino": "xml"}


def compress(edgekit: Path, root: Path, model: Path, out: str, extra: list[str]) -> dict:
    seconds, peak = run_measured([str(edgekit), "compress", str(model), "--int8", "--data", str(root / "calib.npz"),
                                  "--val", str(root / "val.npz"), "-o", str(root / out), "-q", "--no-bench", *extra])
    report = json.loads((root / out / "report.json").read_text())
    report["bench_wall_s"], report["bench_peak_mb"], report["folder"] = seconds, peak, root / out
    return report


KINDS = {"fp32": ("plain", "fp32"), "plain int8": ("plain", "int8"), "accuracy-aware int8": ("aware", "int8"),
         "integer-only int8": ("integer", "int8")}  # the file: which run wrote it, at which precision


def latencies(files: dict[str, dict[str, Path]], rounds: int) -> dict:
    from edgekit.measure.latency import BenchSettings, bench_local

    settings = BenchSettings(threads=1, runs=200, min_time_s=0.5)
    kinds = list(KINDS)
    p50 = {fmt: {k: [] for k in kinds} for fmt in files}
    for round_ in range(rounds):
        order = kinds[round_ % len(kinds):] + kinds[:round_ % len(kinds)]
        jobs = [(fmt, kind) for fmt in files for kind in order]
        for (fmt, kind), result in zip(jobs, bench_local([files[f][k] for f, k in jobs], settings)):
            p50[fmt][kind].append(result["p50"])
    return p50


def digits_section(edgekit: Path, root: Path, rounds: int) -> list[str]:
    from edgekit.demo import add_activation_outliers, train_digits_model

    x_train, y_train, x_val, y_val = train_digits_model(root / "digits.h5")
    np.savez(root / "calib.npz", x=x_train, y=y_train)
    np.savez(root / "val.npz", x=x_val, y=y_val)
    model = root / "outliers.h5"
    add_activation_outliers(root / "digits.h5", model)
    plain = compress(edgekit, root, model, "plain", [])
    aware = compress(edgekit, root, model, "aware", ["--max-accuracy-drop", "0.5"])
    integer = compress(edgekit, root, model, "integer", ["--integer-only"])
    runs = {"plain": plain, "aware": aware, "integer": integer}
    files = {fmt: {kind: runs[run]["folder"] / f"outliers.{precision}.{ext}" for kind, (run, precision) in KINDS.items()}
             for fmt, ext in FORMATS.items()}
    p50 = latencies(files, rounds)
    entries = {(r_name, a["id"]): a for r_name, r in runs.items() for a in r["artifacts"]}
    ref = plain["reference"]["accuracy"]["top1"]
    rows = ["| format | file | top-1 | Δ vs Keras fp32 (points) | int8 MACs | size KiB | p50 ms | p50 / plain int8 |",
            "|---|---|---|---|---|---|---|---|"]
    for fmt in FORMATS:
        for kind, (run, precision) in KINDS.items():
            a = entries[(run, f"{fmt}-{precision}")]
            share = a["quantization"]["int8_mac_share"]
            pairs = median(x / y for x, y in zip(p50[fmt][kind], p50[fmt]["plain int8"]))
            rows.append(f"| {fmt} | {kind} | {100 * a['accuracy']['top1']:.2f}% | "
                        f"{100 * (a['accuracy']['top1'] - ref):+.2f} | {'—' if share is None else f'{share:.0%}'} | "
                        f"{a['size_bytes'] / 1024:.1f} | {median(p50[fmt][kind]):.4f} | {pairs:.2f}× |")
    kept = {a["id"]: ", ".join(a["accuracy_aware"]["float_layers"]) for a in aware["artifacts"]
            if a.get("accuracy_aware", {}).get("needed")}
    steps = {k: v for k, v in aware["timings_s"].items() if "accuracy-aware" in k}
    pairs = integer["repairs"]["equalize"]["pairs"]
    return [
        "### The digits CNN with activation outliers", "",
        f"Keras fp32 top-1 {100 * ref:.2f}% on {len(x_val)} validation images. Latency: batch 1, 1 thread, "
        f"{rounds} interleaved rounds, median p50 and the median of per-round ratios.", "", *rows, "",
        "Kept in float: " + "; ".join(f"{k}: {v}" for k, v in kept.items()), "",
        "Equalized (`--integer-only`): " + "; ".join(f"{p['from']} → {p['to']}, widest channel range "
                                                   f"{p['range_spread_before']:g}× → {p['range_spread_after']:g}× the median"
                                                   for p in pairs), "",
        "| run | wall s | peak RSS MiB |", "|---|---|---|",
        f"| `compress --int8` (diagnostics included) | {plain['bench_wall_s']:.1f} | {plain['bench_peak_mb']:.0f} |",
        f"| `compress --int8 --max-accuracy-drop 0.5` | {aware['bench_wall_s']:.1f} | {aware['bench_peak_mb']:.0f} |",
        f"| `compress --int8 --integer-only` | {integer['bench_wall_s']:.1f} | {integer['bench_peak_mb']:.0f} |",
        "", "Search steps: " + ", ".join(f"{k.split(':')[0]} {v:.2f} s" for k, v in steps.items()), ""]


def mobilenet_section(edgekit: Path, root: Path, size: int) -> list[str]:
    subprocess.run([sys.executable, "-m", "tests.zoo_build", "mobilenet-on-digits", str(size), str(root)],
                   check=True, capture_output=True, cwd=HERE.parent)
    model = root / "mnv2.h5"
    out = root / "mnv2"
    subprocess.run([str(edgekit), "compress", str(model), "--int8", "--data", str(root / "mcalib.npz"),
                    "--val", str(root / "mval.npz"), "-o", str(out), "-q", "--no-bench"], check=True,
                   capture_output=True)
    x = np.load(root / "mval.npz")["x"]
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from edgekit.quality.diagnose import diagnose_files
    from edgekit.support.keras_compat import tf_keras
    from edgekit.formats.runner import open_runner
    from edgekit.formats.reference import ReferenceRunner

    keras_model = tf_keras().models.load_model(model)
    reference = ReferenceRunner(lambda batch: keras_model(batch, training=False))
    reference.predict(x[:8])  # warm: TensorFlow's first call pays for its set-up, not for either side
    files = [(fmt, out / f"mnv2.int8.{ext}", fmt) for fmt, ext in FORMATS.items()]
    timings = {}
    for fmt, path, _ in files:  # one file at a time: verify = the Keras reference + the file
        started = time.perf_counter()
        reference.predict(x)
        open_runner(path).predict(x)
        timings[("verify", fmt)] = time.perf_counter() - started
        started = time.perf_counter()
        diagnose_files(keras_model, [(fmt, path, fmt)], x, len(x))
        timings[("diagnose", fmt)] = time.perf_counter() - started
    started = time.perf_counter()  # all three formats: one Keras pass serves every file, in both
    reference.predict(x)
    for _, path, _ in files:
        open_runner(path).predict(x)
    timings[("verify", "all")] = time.perf_counter() - started
    started = time.perf_counter()
    found = {d["format"]: d for d in diagnose_files(keras_model, files, x, len(x))}
    timings[("diagnose", "all")] = time.perf_counter() - started
    started = time.perf_counter()
    small = {d["format"]: d for d in diagnose_files(keras_model, files, x, 32)}
    small_s = time.perf_counter() - started
    rows = ["| files | verify s (Keras reference + files) | diagnose s | diagnose / verify |", "|---|---|---|---|"]
    for which in [*FORMATS, "all"]:
        verify_s, diagnose_s = timings[("verify", which)], timings[("diagnose", which)]
        rows.append(f"| {'all three' if which == 'all' else which} | {verify_s:.2f} | {diagnose_s:.2f} | "
                    f"{diagnose_s / verify_s:.2f}× |")
    settle = []
    for fmt in FORMATS:
        full = {l["layer"]: l["sqnr_db"] for l in found[fmt]["layers"]}
        gaps = sorted(abs(full[l["layer"]] - l["sqnr_db"]) for l in small[fmt]["layers"] if l["layer"] in full)
        settle.append(f"{fmt} median {median(gaps):.2f}, max {gaps[-1]:.2f} dB")
    rows += ["", f"With the 32 inputs `compress` diagnoses on, all three formats: {small_s:.2f} s "
             f"({small_s / timings[('verify', 'all')]:.2f}× the verification of all three on {len(x)} inputs); "
             f"per-layer SQNR on 32 inputs against {len(x)}: {'; '.join(settle)}."]
    sqnr = {fmt: {l["layer"]: l["sqnr_db"] for l in d["layers"]} for fmt, d in found.items()}
    layers = list(sqnr["tflite"])
    pairs = ["| formats | median abs Δ SQNR dB | 90th pct | max (layer) |", "|---|---|---|---|"]
    for a, b in (("tflite", "onnx"), ("tflite", "openvino"), ("onnx", "openvino")):
        gaps = sorted((abs(sqnr[a][k] - sqnr[b][k]), k) for k in layers if k in sqnr[b])
        pairs.append(f"| {a} vs {b} | {median(g for g, _ in gaps):.2f} | {gaps[int(0.9 * len(gaps))][0]:.2f} | "
                     f"{gaps[-1][0]:.2f} ({gaps[-1][1]}) |")
    first = [f"{fmt} {d['layers'][0]['layer']}" for fmt, d in found.items()]
    return ["### MobileNetV2: diagnose cost and cross-format agreement", "",
            f"MobileNetV2 at {size}×{size}, {len(layers)} conv/dense layers compared in every format, N = {len(x)} "
            "inputs. Verifying a file means running the Keras model and the file on the inputs; the diagnosis runs "
            "the Keras model with one output per layer and the file with its layer outputs readable (LiteRT: one "
            "input at a time, every tensor kept; ONNX Runtime and OpenVINO: extra graph outputs).", "", *rows, "",
            "Per-layer SQNR (int8 against the Keras float model), how far the formats lie apart:", "", *pairs, "",
            "Most error added first: " + "; ".join(first), ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=HERE / "results.md")
    args = parser.parse_args()
    edgekit = Path(sys.executable).parent / "edgekit"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        begin, end = markers("accuracy_aware.py")
        lines = [begin, "## Accuracy-aware int8 and per-layer diagnostics (benchmarks/accuracy_aware.py)", "",
                 *digits_section(edgekit, root, args.rounds), *mobilenet_section(edgekit, root, args.size), end]
    section = "\n".join(lines)
    write_section("accuracy_aware.py", section, args.out)
    print(section)


if __name__ == "__main__":
    main()
