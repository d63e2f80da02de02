"""Issue 25's check of `edgekit devices calibrate`: calibrate this machine, then estimate six
keras.applications architectures the calibration suite never ran (random weights, small input
sizes; int8 and fp32; TFLite, ONNX and OpenVINO) and compare with their measured p50 here, at the
same thread count. Target: ≥ 85% of the estimates within ±20%.

    python benchmarks/calibration_check.py [--threads N] [--profile P.yaml] [--keep DIR] [--architectures A:SIZE,...]

--profile reuses a calibration instead of running one; --keep leaves the held-out files and a
measured.json there; --architectures checks other keras.applications networks than the six (e.g.
the wider set MORE, whose op mixes the suite covers less: --architectures more). Prints one line
per file and the share within ±20%, per runtime and overall.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

# Not in the suite, by construction: the suite's networks are small random ones (edgekit/measure/calibration/suite.py)
HELD_OUT = (("MobileNetV2", 128), ("MobileNetV3Small", 128), ("EfficientNetB0", 128), ("ResNet50", 96),
            ("DenseNet121", 96), ("InceptionV3", 96))
# Five more, from other families: layer-norm/GELU (ConvNeXt), NASNet cells, fused-MBConv, separable convs
MORE = (("MobileNet", 128), ("Xception", 96), ("NASNetMobile", 96), ("EfficientNetV2B0", 128), ("ConvNeXtTiny", 64))


def parse_architectures(text: str) -> tuple:
    if text == "more":
        return MORE
    return tuple((name, int(size)) for name, size in (item.split(":") for item in text.split(",")))


def measure_held_out(folder: Path, threads: int, formats: list[str], precisions: list[str], names=HELD_OUT) -> list[dict]:
    from edgekit.measure.calibration.run import CalibrateOptions, measure_suite
    from edgekit.measure.calibration.suite import application_entry, write_suite
    from edgekit.support.progress import StepLog

    log = StepLog()
    files = write_suite(folder, formats, precisions, log, entries=[application_entry(n, s) for n, s in names])
    options = CalibrateOptions(output=folder / "unused.yaml", name="check", runs=10, min_time_s=1.0)
    return measure_suite(files, options, threads, log)


def compare(profile_path: Path, measured: list[dict]) -> list[dict]:
    from edgekit.measure.devices import load_profile
    from edgekit.measure.estimate import estimate_all

    profile = load_profile(str(profile_path))
    rows = []
    for m in measured:
        estimate = estimate_all([Path(m["path"])], profile)[0]
        ratio = estimate["latency_ms"]["estimate"] / m["p50_ms"]
        rows.append({"file": Path(m["path"]).name, "runtime": estimate["runtime"], "precision": m["precision"],
                     "measured_ms": m["p50_ms"], "estimate_ms": estimate["latency_ms"]["estimate"],
                     "likely_ms": estimate["likely_ms"], "ratio": round(ratio, 3),
                     "in_band": estimate["likely_ms"][0] <= m["p50_ms"] <= estimate["likely_ms"][1]})
    return rows


def main() -> int:
    from edgekit.support.quiet_libraries import configure

    configure(False, True)
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--keep", type=Path)
    parser.add_argument("--architectures", type=parse_architectures, default=HELD_OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        profile = args.profile
        if profile is None:
            from edgekit.measure.calibration.run import CalibrateOptions, calibrate

            profile = folder / "calibrated.yaml"
            calibrate(CalibrateOptions(output=profile, name="here", threads=args.threads))
        measured_file = folder / "measured.json"
        if measured_file.is_file():
            measured = json.loads(measured_file.read_text())
        else:
            measured = measure_held_out(folder, args.threads, ["tflite", "onnx", "openvino"], ["fp32", "int8"],
                                        names=args.architectures)
            measured_file.write_text(json.dumps([{**m, "path": str(m["path"])} for m in measured]))
        rows = compare(profile, measured)
    for row in rows:
        print(f"{row['file']:34} {row['runtime']:13} measured {row['measured_ms']:9.3f} ms  estimate "
              f"{row['estimate_ms']:9.3f} ms  ratio {row['ratio']:.2f}{'' if row['in_band'] else '  (outside its band)'}")
    ratios = np.array([r["ratio"] for r in rows])
    for runtime in sorted({r["runtime"] for r in rows}):
        for precision in ("fp32", "int8"):
            part = np.array([r["ratio"] for r in rows if r["runtime"] == runtime and r["precision"] == precision])
            if len(part):
                print(f"{runtime:13} {precision}: {np.mean(np.abs(part - 1) <= 0.2):.0%} within ±20% "
                      f"(median |ratio - 1| {np.median(np.abs(part - 1)):.2f}, {len(part)} files)")
    print(f"all: {np.mean(np.abs(ratios - 1) <= 0.2):.0%} within ±20% of {len(ratios)} files, "
          f"{np.mean(np.abs(ratios - 1) <= 0.3):.0%} within ±30% (median |ratio - 1| {np.median(np.abs(ratios - 1)):.2f}); "
          f"measured inside the estimate's likely band: {np.mean([r['in_band'] for r in rows]):.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
