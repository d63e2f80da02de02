"""edgekit against the hand-written pipelines (benchmarks/handwritten.py), side by side.

    python benchmarks/vs_handwritten.py                 # digits + MobileNetV2, writes results.md
    python benchmarks/vs_handwritten.py --quick --out /tmp/smoke.md   # digits only, < 2 min
    python benchmarks/vs_handwritten.py --scaling       # also compress cost vs input size / samples

For each model both sides do the same work (fp32 + int8 for TFLite, ONNX and OpenVINO, from
the same .h5 and the same calibration samples), each in a fresh process, interleaved and
repeated; edgekit also verifies every file. Latency is measured for both sides by the same
harness (edgekit's, batch 1, 2 threads), so the files are the only difference. The machine
is shared and noisy: compare the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

from process_peak import run_measured
from sections import kept_sections

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
FORMATS = {"tflite": ".tflite", "onnx": ".onnx", "openvino": ".xml"}
TARGET_LATENCY_RATIO = 1.05
TARGET_SPEEDUP = {"tflite": 1.4, "onnx": 1.4, "openvino": 1.6}
TARGET_COST_RATIO = 1.3


# --- models and data ----------------------------------------------------------------------

def make_digits(root: Path, samples: int) -> dict:
    from edgekit.demo import train_digits_model

    model = root / "digits.h5"
    x_train, y_train, x_val, y_val = train_digits_model(model)
    np.savez(root / "digits-calib.npz", x=x_train[:samples], y=y_train[:samples])
    np.savez(root / "digits-val.npz", x=x_val, y=y_val)
    return {"name": "digits CNN", "model": model, "calib": root / "digits-calib.npz", "val": root / "digits-val.npz",
            "samples": samples}


def make_mobilenetv2(root: Path, samples: int, size: int = 224) -> dict:
    model = root / f"mobilenetv2-{size}.h5"
    code = ("import os; os.environ['TF_USE_LEGACY_KERAS']='1'; import tf_keras as k; "
            f"k.applications.MobileNetV2(alpha=1.0, input_shape=({size}, {size}, 3), weights=None).save(r'{model}')")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    calib = root / f"mobilenetv2-{size}-calib{samples}.npz"
    np.savez(calib, x=np.random.default_rng(0).uniform(-1, 1, (samples, size, size, 3)).astype(np.float32))
    return {"name": f"MobileNetV2 1.0 {size}", "model": model, "calib": calib, "val": None, "samples": samples}


# --- the two sides ------------------------------------------------------------------------

def edgekit_command(case: dict, out: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "edgekit"), "compress", str(case["model"]), "--int8",
            "--data", str(case["calib"]), "--calib-samples", str(case["samples"]), "-o", str(out),
            "-q", "--no-bench", "--force"]


def handwritten_command(case: dict, out: Path) -> list[str]:
    return [sys.executable, str(HERE / "handwritten.py"), str(case["model"]), str(case["calib"]), str(out)]


def edgekit_files(out: Path, stem: str, precision: str) -> dict[str, Path]:
    return {fmt: out / f"{stem}.{precision}{ext}" for fmt, ext in FORMATS.items()}


def compare_cost(case: dict, root: Path, repeats: int) -> dict:
    """compress vs the hand-written path, interleaved (the order flips every repeat)."""
    sides = {"edgekit": (edgekit_command, root / "edgekit"), "handwritten": (handwritten_command, root / "hand")}
    runs = {side: [] for side in sides}
    for r in range(repeats):
        for side in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            make, out = sides[side]
            runs[side].append(run_measured(make(case, out)))
    return {side: {"wall_s": median(w for w, _ in v), "peak_mib": max(m for _, m in v)} for side, v in runs.items()}


def compare_latency(case: dict, root: Path, repeats: int, quick: bool) -> dict:
    from edgekit.measure.latency import BenchSettings, bench_local

    stem = Path(case["model"]).stem
    files = {("edgekit", "int8", f): p for f, p in edgekit_files(root / "edgekit", stem, "int8").items()}
    files |= {("edgekit", "fp32", f): p for f, p in edgekit_files(root / "edgekit", stem, "fp32").items()}
    files |= {("handwritten", "int8", f): p for f, p in edgekit_files(root / "hand", "model", "int8").items()}
    settings = BenchSettings(threads=2, runs=20 if quick else 50, min_time_s=0.2 if quick else 1.0,
                             warmup_time_s=0.1 if quick else 0.5)
    p50s = {key: [] for key in files}
    for r in range(repeats):
        for fmt in FORMATS:  # the three files of a format side by side, in alternating order
            trio = [key for key in files if key[2] == fmt]
            order = trio if r % 2 == 0 else trio[::-1]
            for key, result in zip(order, bench_local([files[k] for k in order], settings)):
                p50s[key].append(result["p50"])
    return {"/".join(key): median(v) for key, v in p50s.items()}


def compare_accuracy(case: dict, root: Path) -> dict | None:
    """Top-1 on the validation set; the fp32 reference is edgekit's fp32 TFLite file, which
    compress verified to match Keras within 1e-4 (so no TensorFlow import here)."""
    if case["val"] is None:
        return None  # random weights: accuracy means nothing
    from edgekit.quality.evaluation import evaluate_artifacts

    stem = Path(case["model"]).stem
    files = {"fp32": root / "edgekit" / f"{stem}.fp32.tflite"}
    files |= {f"edgekit/{k}": v for k, v in edgekit_files(root / "edgekit", stem, "int8").items()}
    files |= {f"handwritten/{k}": v for k, v in edgekit_files(root / "hand", "model", "int8").items()}
    result = evaluate_artifacts(list(files.values()), case["val"], "none", None)
    return {name: r["accuracy"]["top1"] for name, r in zip(files, result["artifacts"])}


def run_case(case: dict, root: Path, repeats: int, quick: bool) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    print(f"{case['name']}: compress vs hand-written ×{repeats}", file=sys.stderr, flush=True)
    cost = compare_cost(case, root, repeats)
    print(f"{case['name']}: latency ×{repeats}", file=sys.stderr, flush=True)
    latency = compare_latency(case, root, repeats, quick)
    accuracy = compare_accuracy(case, root)
    return {"case": case["name"], "samples": case["samples"], "cost": cost, "latency": latency, "accuracy": accuracy}


# --- cost growth ----------------------------------------------------------------------------

def scaling(root: Path) -> list[dict]:
    rows = []
    for size, samples in ((96, 100), (160, 100), (224, 100), (224, 500), (224, 1000)):
        case = make_mobilenetv2(root, samples, size)
        print(f"scaling: MobileNetV2 {size}² with {samples} calibration samples", file=sys.stderr, flush=True)
        wall, peak = run_measured(edgekit_command(case, root / f"scale-{size}-{samples}"))
        rows.append({"input": size, "samples": samples, "wall_s": wall, "peak_mib": peak})
    return rows


# --- the report -----------------------------------------------------------------------------

def render(results: list[dict], scale: list[dict] | None, repeats: int) -> str:
    from edgekit.measure.latency import machine

    host = machine()
    lines = [f"# edgekit vs hand-written pipelines ({datetime.date.today().isoformat()})", "",
             f"Machine: {host['cpu']} ({host['arch']}; {' '.join(host['isa'])}), {os.cpu_count()} cores, shared and "
             f"noisy, so read the ratios. Python {host['python']}; "
             + ", ".join(f"{k} {v}" for k, v in host["runtimes"].items() if v) + ".",
             f"Each figure is the median of {repeats} interleaved repeats; latency is p50 at batch 1, 2 threads, "
             "measured by edgekit's harness for both sides.", "",
             "| model | format | int8 p50 edgekit / hand-written (≤ 1.05) | edgekit int8/fp32 speed-up "
             "(≥ 1.4; OpenVINO ≥ 1.6) | int8 top-1 edgekit / hand-written / fp32 |",
             "|---|---|---|---|---|"]
    for r in results:
        lat, acc = r["latency"], r["accuracy"]
        for fmt in FORMATS:
            ratio = lat[f"edgekit/int8/{fmt}"] / lat[f"handwritten/int8/{fmt}"]
            speedup = lat[f"edgekit/fp32/{fmt}"] / lat[f"edgekit/int8/{fmt}"]
            accuracy = (f"{100 * acc[f'edgekit/{fmt}']:.2f}% / {100 * acc[f'handwritten/{fmt}']:.2f}% / "
                        f"{100 * acc['fp32']:.2f}%") if acc else "— (random weights)"
            lines.append(f"| {r['case']} | {fmt} | {ratio:.3f} {_mark(ratio <= TARGET_LATENCY_RATIO)} | "
                         f"{speedup:.2f}× {_mark(speedup >= TARGET_SPEEDUP[fmt])} | {accuracy} |")
    lines += ["", "| model | calibration samples | compress wall s (edgekit / hand) | ratio (≤ 1.3) | "
              "peak MiB (edgekit / hand) | ratio (≤ 1.3) |", "|---|---|---|---|---|---|"]
    for r in results:
        e, h = r["cost"]["edgekit"], r["cost"]["handwritten"]
        wall, peak = e["wall_s"] / h["wall_s"], e["peak_mib"] / h["peak_mib"]
        lines.append(f"| {r['case']} | {r['samples']} | {e['wall_s']:.1f} / {h['wall_s']:.1f} | {wall:.2f} "
                     f"{_mark(wall <= TARGET_COST_RATIO)} | {e['peak_mib']:.0f} / {h['peak_mib']:.0f} | {peak:.2f} "
                     f"{_mark(peak <= TARGET_COST_RATIO)} |")
    if scale:
        lines += ["", "How `edgekit compress --int8` (3 formats, verification included) grows with MobileNetV2 "
                  "input size and calibration samples:", "",
                  "| input | calibration samples | wall s | peak MiB |", "|---|---|---|---|"]
        lines += [f"| {s['input']}² | {s['samples']} | {s['wall_s']:.1f} | {s['peak_mib']:.0f} |" for s in scale]
    return "\n".join(lines) + "\n"


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    labels, values = [], []
    for r in results:
        for fmt in FORMATS:
            labels.append(f"{r['case'].split()[0]}\n{fmt}")
            values.append(r["latency"][f"edgekit/int8/{fmt}"] / r["latency"][f"handwritten/int8/{fmt}"])
    ax.bar(labels, values, color="#1f77b4")
    ax.axhline(TARGET_LATENCY_RATIO, color="#b00020", linestyle="--", label="target ≤ 1.05")
    ax.set_ylabel("int8 p50: edgekit / hand-written")
    ax.set_ylim(0, 1.25)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits only, one repeat, short timings (CI smoke)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--scaling", action="store_true", help="also measure cost growth (several minutes)")
    parser.add_argument("--out", type=Path, default=HERE / "results.md")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="edgekit-vs-") as tmp:
        root = Path(tmp)
        cases = [make_digits(root, 200)] + ([] if args.quick else [make_mobilenetv2(root, 100)])
        results = [run_case(case, root / str(i), repeats, args.quick) for i, case in enumerate(cases)]
        scale = scaling(root / "scaling") if args.scaling else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(results, scale, repeats) + kept_sections(args.out))
    plot(results, args.out.with_suffix(".png"))
    args.out.with_suffix(".json").write_text(json.dumps({"results": results, "scaling": scale}, indent=2))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
