"""Structured channel pruning that pays in latency, measured on trained networks.

    python benchmarks/channels.py [--models mobilenetv2,resnet50] [--out benchmarks/results.md]

For each model (trained on the digits, upscaled, by tests/trained_build.py: a MobileNetV2 of
width 1.0 at 96 px in tf_keras, a ResNet50 at 32 px in Keras 3), `compress --int8` into all three
formats twice: as it is, and with `--prune-channels-target-macs 0.5` (half the MACs removed, the
groups whose trial removal costs least top-1 first; fine-tuned with distillation from the
original, default epochs). Then each format's two int8 files are timed side by side on this host
(edgekit's own benchmark, alternating A B A B A B, the median of each file's p50s), and top-1 of
every file is read from the reports (the validation split, 539 images: one image is 0.19 points).
Wall time and peak memory (process tree) of each compress run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from process_peak import run_measured  # noqa: E402
from sections import run_per_model  # noqa: E402

TRAINED = {"mobilenetv2": ("tf_keras", "MobileNetV2:1.0", 96, 8), "resnet50": ("keras3", "ResNet50", 32, 4)}
FORMATS = ("tflite", "onnx", "openvino")
ROUNDS = 3
PRUNE = ["--prune-channels-target-macs", "0.5"]


def prepare(name: str, folder: Path) -> tuple[Path, Path, Path, float, float]:
    return prepare_spec(TRAINED[name], folder)


def prepare_spec(spec: tuple, folder: Path) -> tuple[Path, Path, Path, float, float]:
    """Train (flavour, architecture, input size, epochs) on the digits: model, train, val, top-1, seconds."""
    flavour, arch, size, epochs = spec
    out = subprocess.run([sys.executable, "-m", "tests.trained_build", flavour, arch, str(size), str(folder),
                          str(epochs)], cwd=ROOT, capture_output=True, text=True, check=True)
    built = json.loads(out.stdout.strip().splitlines()[-1])
    return Path(built["model"]), folder / "train.npz", folder / "val.npz", built["top1"], built["train_s"]


def compress(model: Path, train: Path, val: Path, out: Path, flags: list[str]) -> dict:
    edgekit = Path(sys.executable).parent / "edgekit"
    seconds, peak = run_measured([str(edgekit), "compress", str(model), "--int8", "--data", str(train),
                                  "--val", str(val), "-o", str(out), "-q", "--no-bench", *flags])
    return {"seconds": seconds, "peak_mib": peak, "report": json.loads((out / "report.json").read_text()), "out": out}


def side_by_side(a: Path, b: Path) -> tuple[float, float]:
    """Median p50 (ms) of each file over ROUNDS alternating rounds."""
    from edgekit.measure.latency import BenchSettings, bench_local

    timings = bench_local([a, b] * ROUNDS, BenchSettings())
    p50 = {str(a): [], str(b): []}
    for t in timings:
        p50[t["path"]].append(t["p50"])
    return float(np.median(p50[str(a)])), float(np.median(p50[str(b)]))


def _int8(report: dict) -> dict[str, dict]:
    return {a["format"]: a for a in report["artifacts"] if a["precision"] == "int8"}


def section(name: str, folder: Path) -> list[str]:
    model, train, val, trained_top1, train_s = prepare(name, folder)
    plain = compress(model, train, val, folder / "plain", [])
    pruned = compress(model, train, val, folder / "pruned", PRUNE)
    channels = pruned["report"]["stages"]["channels"]
    original = plain["report"]["reference"]["accuracy"]["top1"]
    after = channels["keras_accuracy"]["top1"]
    rows = ["| format | int8 top-1 unpruned | int8 top-1 pruned | int8 p50 ms unpruned | int8 p50 ms pruned "
            "| speed-up (≥ 1.6) |", "|---|---|---|---|---|---|"]
    for fmt in FORMATS:
        a, b = _int8(plain["report"])[fmt], _int8(pruned["report"])[fmt]
        slow, fast = side_by_side(plain["out"] / Path(a["path"]).name, pruned["out"] / Path(b["path"]).name)
        rows.append(f"| {fmt} | {100 * a['accuracy']['top1']:.2f} | {100 * b['accuracy']['top1']:.2f} | {slow:.3f} "
                    f"| {fast:.3f} | {slow / fast:.2f}× {'✓' if slow / fast >= 1.6 else '✗'} |")
    macs, params = channels["macs"], channels["params"]
    drop = 100 * (original - after)
    return [f"### {name}", "",
            f"Trained to {100 * trained_top1:.2f}% in {train_s:.0f} s (tests/trained_build.py "
            f"{' '.join(map(str, TRAINED[name]))}). `{' '.join(PRUNE)}`: MACs {macs['before']:,} → {macs['after']:,} "
            f"({macs['after'] / macs['before']:.1%}), parameters {params['before']:,} → {params['after']:,}; "
            f"{len(channels['channels'])} layers narrower, {len(channels['left_alone'])} kept every channel.", "",
            f"Keras float top-1: original {100 * original:.2f}%, pruned before fine-tuning "
            f"{100 * channels['top1_before_finetune']:.2f}%, after {channels['finetune']['epochs']} epochs with "
            f"distillation {100 * after:.2f}% ({abs(drop):.2f} points {'lost' if drop > 0 else 'gained'}; bar: at most 1.5 "
            f"lost {'✓' if drop <= 1.5 else '✗'}), "
            f"agreement with the original {100 * channels['agreement_with_original']:.1f}%.", "", *rows, "",
            f"compress wall s / peak MiB: unpruned {plain['seconds']:.0f} / {plain['peak_mib']:,.0f}, pruned "
            f"{pruned['seconds']:.0f} / {pruned['peak_mib']:,.0f}.", ""]


def main() -> None:
    run_per_model(__doc__, "channels.py", "Structured channel pruning: latency and accuracy", "mobilenetv2,resnet50",
                  section)


if __name__ == "__main__":
    main()
