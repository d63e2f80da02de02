"""Activation ranges for int8 calibration (`--ranges`), measured.

    python benchmarks/ranges.py [--models hot-pixel,mobilenetv2,efficientnetb0] [--out benchmarks/results.md]

For each model, `compress --int8` into all three formats with each `--ranges`: default (each
library's own: TFLite and ONNX Runtime min/max, NNCF the mean of per-sample min/max), minmax,
percentile and mse. Top-1 of every int8 file on the validation split, how many activation ranges
the method narrowed, each run's wall time and peak memory (the process tree). Then `--int16x8`:
the TFLite 16x8 file's top-1 and host p50 beside the fp32 and int8 TFLite files of the same run. Models: the digits
CNN calibrated on data with one hot pixel (one pixel of one image at 500, real pixels 0..1), and
the slow tier's MobileNetV2 and EfficientNetB0 trained on the digits (tests/trained_build.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from per_tensor import FORMATS, compress, prepare
from process_peak import run_measured
from sections import run_per_model

METHODS = ("default", "minmax", "percentile", "mse")
HOT_PIXEL = 500.0


def prepare_hot_pixel(folder: Path) -> tuple[Path, Path, Path]:
    from edgekit.demo import train_digits_model

    x_train, y_train, x_val, y_val = train_digits_model(folder / "digits.h5")
    x = x_train[:200].copy()
    x[7, 3, 3, 0] = HOT_PIXEL
    np.savez(folder / "calib.npz", x=x, y=y_train[:200])
    np.savez(folder / "val.npz", x=x_val, y=y_val)
    return folder / "digits.h5", folder / "calib.npz", folder / "val.npz"


def section(name: str, folder: Path) -> list[str]:
    model, calib, val = prepare_hot_pixel(folder) if name == "hot-pixel" else prepare(name, folder)[:3]
    results = {m: compress(model, calib, val, folder / f"out-{m}", ["--ranges", m]) for m in METHODS}
    rows = ["| --ranges | " + " | ".join(f"{f} top-1" for f in FORMATS) + " | ranges (TFLite; ONNX) | wall s "
            "| peak MiB |", "|---|" + "---|" * (len(FORMATS) + 3)]
    for method, r in results.items():
        int8 = {a["format"]: a for a in r["report"]["artifacts"] if a["precision"] == "int8"}
        settings = "; ".join(int8[f]["settings"].get("ranges", "") for f in ("tflite", "onnx"))
        rows.append(f"| {method} | " + " | ".join(f"{100 * int8[f]['accuracy']['top1']:.2f}" for f in FORMATS)
                    + f" | {settings} | {r['seconds']:.0f} | {r['peak_mib']:,.0f} |")
    reference = results["default"]["report"]["reference"]["accuracy"]["top1"]
    return [f"### {name}", "", f"Keras float top-1 {100 * reference:.2f}% on the validation split "
            f"({len(np.load(val)['y'])} images).", "", *rows, "", *int16x8_rows(model, calib, val, folder / "out-16")]


def int16x8_rows(model: Path, calib: Path, val: Path, out: Path) -> list[str]:
    """One `--int8 --int16x8 --formats tflite` run, measured on this host (LiteRT, batch 1)."""
    edgekit = Path(sys.executable).parent / "edgekit"
    seconds, peak = run_measured([str(edgekit), "compress", str(model), "--int8", "--int16x8", "--data", str(calib),
                                  "--val", str(val), "--formats", "tflite", "-o", str(out), "-q"])
    artifacts = {a["precision"]: a for a in json.loads((out / "report.json").read_text())["artifacts"]}
    p50 = {k: a["latency_ms"]["p50"] for k, a in artifacts.items()}
    rows = ["| TFLite file | top-1 | p50 ms | p50 vs fp32 |", "|---|---|---|---|"]
    rows += [f"| {k} | {100 * a['accuracy']['top1']:.2f} | {p50[k]:.3g} | {p50[k] / p50['fp32']:.2f}× |"
             for k, a in artifacts.items()]
    return [f"`--int8 --int16x8 --formats tflite` ({seconds:.0f} s, peak {peak:,.0f} MiB):", "", *rows, ""]


def main() -> None:
    run_per_model(__doc__, "ranges.py", "Activation ranges: --ranges", "hot-pixel,mobilenetv2,efficientnetb0", section)


if __name__ == "__main__":
    main()
