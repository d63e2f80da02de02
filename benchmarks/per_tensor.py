"""Per-tensor int8 weights and the repairs that keep every layer integer, measured.

    python benchmarks/per_tensor.py [--models mobilenetv2,mobilenetv2-sgd,efficientnetb0,outliers] [--out benchmarks/results.md]

For each model, `compress --int8` into all three formats seven ways: per-channel weights (the
default), per-tensor with no repair (a recipe turning off the dead-channel repair), `--per-tensor`
(dead channels silenced, its default), `--per-tensor --bias-correction`, `--per-tensor --equalize`
(with `--relu6` where the model has ReLU6), `--per-tensor` with both, and `--per-tensor --adaround`
(learned rounding). Top-1 of every int8 file on the validation split, how much of the
per-channel-to-plain-per-tensor gap each run recovers, and each run's wall time and peak memory
(the process tree). Models: the slow tier's MobileNetV2 and EfficientNetB0 trained on the digits
with Adam (tests/trained_build.py), the same MobileNetV2 trained with its paper's SGD recipe (which
leaves dead channels, as ImageNet training does), and the digits CNN with two activation outliers
(edgekit.demo.add_activation_outliers), where per-tensor int8 is near chance.
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

TRAINED = {"mobilenetv2": ("tf_keras", "MobileNetV2", 48, 12, "adam"),
           "mobilenetv2-sgd": ("tf_keras", "MobileNetV2", 48, 30, "sgd"),
           "efficientnetb0": ("tf_keras", "EfficientNetB0", 32, 4, "adam")}
PLAIN = "per-tensor, no repair"  # the gap's baseline: the dead-channel repair --per-tensor turns on, off
FORMATS = ("tflite", "onnx", "openvino")


def runs(relu6: bool, folder: Path) -> dict[str, list[str]]:
    equalize = ["--equalize", "--relu6"] if relu6 else ["--equalize"]
    plain = folder / "no-repair.yaml"
    plain.write_text("repairs: {dead_channels: false}\n")
    return {"per-channel": [], PLAIN: ["--per-tensor", "--recipe", str(plain)],
            "per-tensor": ["--per-tensor"],
            "per-tensor + bias correction": ["--per-tensor", "--bias-correction"],
            f"per-tensor + {' '.join(equalize)}": ["--per-tensor", *equalize],
            "per-tensor + both": ["--per-tensor", *equalize, "--bias-correction"],
            "per-tensor + --adaround": ["--per-tensor", "--adaround"]}


def prepare(name: str, folder: Path) -> tuple[Path, Path, Path, bool]:
    """(model, calibration/training data, validation data, has ReLU6)."""
    if name == "outliers":
        from edgekit.demo import add_activation_outliers, train_digits_model

        x_train, y_train, x_val, y_val = train_digits_model(folder / "digits.h5")
        np.savez(folder / "train.npz", x=x_train, y=y_train)
        np.savez(folder / "val.npz", x=x_val, y=y_val)
        add_activation_outliers(folder / "digits.h5", folder / "outliers.h5")
        return folder / "outliers.h5", folder / "train.npz", folder / "val.npz", False
    flavour, arch, size, epochs, recipe = TRAINED[name]
    out = subprocess.run([sys.executable, "-m", "tests.trained_build", flavour, arch, str(size), str(folder),
                          str(epochs), recipe], cwd=ROOT, capture_output=True, text=True, check=True)
    built = json.loads(out.stdout.strip().splitlines()[-1])
    return Path(built["model"]), folder / "train.npz", folder / "val.npz", arch == "MobileNetV2"


def compress(model: Path, train: Path, val: Path, out: Path, flags: list[str]) -> dict:
    edgekit = Path(sys.executable).parent / "edgekit"
    seconds, peak = run_measured([str(edgekit), "compress", str(model), "--int8", "--data", str(train),
                                  "--val", str(val), "-o", str(out), "-q", "--no-bench", *flags])
    report = json.loads((out / "report.json").read_text())
    return {"seconds": seconds, "peak_mib": peak, "report": report}


def section(name: str, folder: Path) -> list[str]:
    model, train, val, relu6 = prepare(name, folder)
    results = {run: compress(model, train, val, folder / f"out{i}", flags)
               for i, (run, flags) in enumerate(runs(relu6, folder).items())}
    top1 = {run: {a["format"]: a["accuracy"]["top1"] for a in r["report"]["artifacts"] if a["precision"] == "int8"}
            for run, r in results.items()}
    first = results["per-channel"]["report"]
    reference = first["reference"]["accuracy"]["top1"]
    rows = ["| run | " + " | ".join(f"{f} top-1" for f in FORMATS) + " | gap recovered (per format) | fp32 file top-1 "
            "| wall s | peak MiB |", "|---|" + "---|" * (len(FORMATS) + 4)]
    for run, r in results.items():
        fp32 = next(a["accuracy"]["top1"] for a in r["report"]["artifacts"] if a["id"] == "tflite-fp32")
        rows.append(f"| {run} | " + " | ".join(f"{100 * top1[run][f]:.2f}" for f in FORMATS)
                    + f" | {_recovered(top1, run)} | {100 * fp32:.2f} | {r['seconds']:.0f} | {r['peak_mib']:,.0f} |")
    change = results["per-tensor + both"]["report"]["repairs"].get("change") or {}
    return [f"### {name}", "", f"Keras float top-1 {100 * reference:.2f}% on the validation split "
            f"({len(np.load(val)['y'])} images).", "", *rows, "",
            f"With both repairs the float model every file comes from moved by up to "
            f"{change.get('max_abs_change', 0):.3g} (probabilities), top-1 agreement with the original "
            f"{100 * change.get('top1_agreement', 1):.1f}% on {change.get('inputs', 0)} inputs.", ""]


def _recovered(top1: dict, run: str) -> str:
    """(repaired − plain per-tensor) / (per-channel − plain per-tensor), per format, where plain
    per-tensor loses at least a point (less is a handful of images: noise, not a gap)."""
    if run in ("per-channel", PLAIN):
        return "—"
    shares = []
    for fmt in FORMATS:
        gap = top1["per-channel"][fmt] - top1[PLAIN][fmt]
        shares.append("gap < 1 pt" if gap < 0.01 else f"{(top1[run][fmt] - top1[PLAIN][fmt]) / gap:.0%}")
    return ", ".join(shares)


def main() -> None:
    run_per_model(__doc__, "per_tensor.py", "Per-tensor int8 weights and integer-only repairs",
                  "mobilenetv2,mobilenetv2-sgd,efficientnetb0,outliers", section)


if __name__ == "__main__":
    main()
