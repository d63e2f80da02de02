"""Peak memory of `edgekit compress --int8` per step and in total, against the hand-written path.

    python benchmarks/memory.py                    # VGG16, ResNet50, MobileNetV2 at 224², 10 classes
    python benchmarks/memory.py --models MobileNetV2 --skip-handwritten

Models are tf_keras keras.applications with weights=None saved as model.h5, with 32
calibration samples. For each:
- edgekit: one `edgekit compress MODEL --int8 --data CALIB --no-bench` (3 formats, verified);
  its per-step peaks come from report.json (`peak_rss_mb`), and the machine-wide peak is
  sampled every 0.1 s as the sum of the resident memory of edgekit and its children.
- hand-written (benchmarks/handwritten.py), one process per format, so that each format
  gets the whole machine: its wall time and peak; a process the kernel kills is recorded
  as killed, with the peak it had reached.
Writes the "Peak memory" section of benchmarks/results.md (between its markers) and
benchmarks/memory.json. The machine is shared and noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from process_peak import run_sampled
from sections import markers, write_section

HERE = Path(__file__).resolve().parent
MODELS = {"VGG16": 224, "ResNet50": 224, "MobileNetV2": 224}
FORMATS = ("tflite", "onnx", "openvino")
CALIBRATION_SAMPLES = 32
TARGETS_MIB = {"VGG16": 12 * 1024, "ResNet50": 4 * 1024}
TARGET_WALL_RATIO = 1.3
BEGIN, END = markers("memory.py")


def make_model(name: str, size: int, root: Path) -> tuple[Path, Path, int]:
    code = (
        "import os, sys, numpy as np; os.environ['TF_USE_LEGACY_KERAS'] = '1'; import tf_keras as k; "
        f"m = k.applications.{name}(weights=None, classes=10, input_shape=({size}, {size}, 3)); "
        f"m.save(sys.argv[1]); rng = np.random.default_rng(0); "
        f"np.savez(sys.argv[2], x=rng.uniform(0, 255, ({CALIBRATION_SAMPLES}, {size}, {size}, 3)).astype('float32'), "
        f"y=rng.integers(0, 10, {CALIBRATION_SAMPLES})); print(m.count_params())"
    )
    model, calib = root / f"{name}.h5", root / f"{name}-calib.npz"
    done = subprocess.run([sys.executable, "-c", code, str(model), str(calib)], capture_output=True, text=True,
                          check=True)
    return model, calib, int(done.stdout.split()[-1])


def measure_edgekit(model: Path, calib: Path, root: Path) -> dict:
    out = root / f"{model.stem}-edgekit"
    result = run_sampled([sys.executable, "-m", "edgekit", "compress", str(model), "--int8", "--data", str(calib),
                          "-o", str(out), "--no-bench", "--force", "-q"], root)
    if result["status"] == 0:
        report = json.loads((out / "report.json").read_text())
        result["steps"] = {step: {"s": report["timings_s"][step], "peak_mib": peak}
                           for step, peak in report["peak_rss_mb"].items() if step in report["timings_s"]}
    return result


def measure_handwritten(model: Path, calib: Path, root: Path) -> dict:
    results = {}
    for fmt in FORMATS:
        results[fmt] = run_sampled([sys.executable, str(HERE / "handwritten.py"), str(model), str(calib),
                                    str(root / f"{model.stem}-hand"), fmt], root)
    return results


def render(rows: list[dict]) -> str:
    lines = [BEGIN, "## Peak memory of `compress --int8` (benchmarks/memory.py)", "",
             f"tf_keras keras.applications, weights=None, 10 classes, 224², {CALIBRATION_SAMPLES} calibration samples, "
             "3 formats with verification. Peaks are resident memory (MiB): the largest step (each conversion "
             "step runs in a child process of its own), and the whole run (edgekit plus its children, sampled "
             "every 0.1 s). Hand-written: benchmarks/handwritten.py, one process per format.", "",
             "| model | weights MiB | largest step (MiB, × weights) | whole run MiB | target | hand-written peak "
             "per format (tflite / onnx / openvino) | wall s edgekit / hand-written | ratio (≤ 1.3) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        e, weights = row["edgekit"], row["params"] * 4 / (1 << 20)
        if e["status"] != 0:
            lines.append(f"| {row['model']} | {weights:.0f} | failed: {e['error']} | | | | | |")
            continue
        step, largest = max(((s, v["peak_mib"]) for s, v in e["steps"].items()), key=lambda kv: kv[1])
        target = TARGETS_MIB.get(row["model"])
        verdict = "—" if target is None else f"≤ {target // 1024} GiB {'✓' if e['peak_mib'] <= target else '✗'}"
        hand = row.get("handwritten") or {}
        peaks = " / ".join(("killed at " if h["status"] < 0 else "") + f"{h['peak_mib']}"
                           if h else "—" for h in (hand.get(f) for f in FORMATS))
        finished = [h for h in hand.values() if h["status"] == 0]
        hand_wall = sum(h["wall_s"] for h in finished) if len(finished) == len(FORMATS) else None
        ratio = "—" if hand_wall is None else f"{e['wall_s'] / hand_wall:.2f} " \
                                             f"{'✓' if e['wall_s'] / hand_wall <= TARGET_WALL_RATIO else '✗'}"
        walls = f"{e['wall_s']:.0f} / {hand_wall:.0f}" if hand_wall else f"{e['wall_s']:.0f} / — (a format failed)"
        lines.append(f"| {row['model']} | {weights:.0f} | {largest:,.0f} ({largest / weights:.1f}×) in '{step}' | "
                     f"{e['peak_mib']:,} | {verdict} | {peaks} | {walls} | {ratio} |")
    lines += ["", "Growth with weight bytes (MiB of peak per MiB of weights, between the two largest models):", ""]
    lines += _growth(rows)
    lines += ["", "Per step (s, peak MiB):", ""]
    for row in rows:
        if row["edgekit"]["status"] == 0:
            steps = "; ".join(f"{_short(s)} {v['s']:.1f} s {v['peak_mib']:,.0f}"
                              for s, v in row["edgekit"]["steps"].items())
            lines.append(f"- {row['model']}: {steps}")
    return "\n".join(lines + ["", END])


def _short(step: str) -> str:
    """Step titles name temporary paths: keep the file name."""
    return " ".join(Path(w).name if w.startswith("/") else w for w in step.split())


def _growth(rows: list[dict]) -> list[str]:
    done = sorted((r for r in rows if r["edgekit"]["status"] == 0), key=lambda r: r["params"])
    if len(done) < 2:
        return ["- (needs two models)"]
    small, big = done[-2], done[-1]
    extra_weights = (big["params"] - small["params"]) * 4 / (1 << 20)
    lines = []
    for step in big["edgekit"]["steps"]:
        kind = _kind(step, big["model"])
        before = next((v for s, v in small["edgekit"]["steps"].items() if _kind(s, small["model"]) == kind), None)
        if before and not step.startswith(("Load", "Read", "Write")):
            slope = (big["edgekit"]["steps"][step]["peak_mib"] - before["peak_mib"]) / extra_weights
            lines.append(f"- {kind}: {slope:.1f}× ({small['model']} → {big['model']})")
    whole = (big["edgekit"]["peak_mib"] - small["edgekit"]["peak_mib"]) / extra_weights
    return lines + [f"- whole run: {whole:.1f}×"]


def _kind(step: str, model: str) -> str:
    """A step's title without paths and the model's name, to match steps across models."""
    return " ".join(w.replace(f"{model}.", "") for w in step.split() if not w.startswith("/"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--skip-handwritten", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results.md")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-memory-") as tmp:
        root = Path(tmp)
        for name in args.models.split(","):
            model, calib, params = make_model(name, MODELS[name], root)
            row = {"model": name, "params": params, "edgekit": measure_edgekit(model, calib, root)}
            print(name, "edgekit", {k: v for k, v in row["edgekit"].items() if k != "steps"}, flush=True)
            if not args.skip_handwritten:
                row["handwritten"] = measure_handwritten(model, calib, root)
                print(name, "hand-written", row["handwritten"], flush=True)
            rows.append(row)
            for leftover in root.iterdir():
                if leftover.is_dir():
                    subprocess.run(["rm", "-rf", str(leftover)], check=False)
    write_section("memory.py", render(rows), args.out)
    (HERE / "memory.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(render(rows))


if __name__ == "__main__":
    main()
