"""edgekit's integer-only int8 TFLite against Sony MCT's Keras PTQ and GPTQ, on the same models and data.

    python3 -m venv .mct && .mct/bin/pip install "tensorflow==2.15.*" model-compression-toolkit scikit-learn
    python benchmarks/vs_mct.py --mct-python .mct/bin/python [--models outliers,mobilenetv2,efficientnetb0]

MCT pins TensorFlow below 2.16, so it runs in its own virtual environment (benchmarks/mct_child.py).
Models: the digits CNN with two activation outliers (edgekit.demo.add_activation_outliers), and the
slow tier's MobileNetV2 (depthwise-heavy) and EfficientNetB0 trained on the digits
(tests/trained_build.py). Each is quantized to an int8 TFLite file by: edgekit plain `--int8`,
`--max-accuracy-drop 0.5` (float fallback), `--integer-only` (cross-layer equalization) and
`--integer-only` with `--bias-correction` (and `--relu6` where the model has ReLU6), `--integer-only
--adaround` (learned rounding, edgekit's counterpart of GPTQ); MCT PTQ and GPTQ. All calibrate on the same 200 training images; top-1 on the same validation split; the share
of MACs in integer kernels read back from each file (edgekit.formats.facts); wall time and peak
memory of each run's process tree.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from per_tensor import prepare  # noqa: E402
from process_peak import run_sampled  # noqa: E402
from sections import markers, write_section  # noqa: E402


def edgekit_runs(relu6: bool) -> dict[str, list[str]]:
    repairs = ["--integer-only", "--bias-correction", *(["--relu6"] if relu6 else [])]
    return {"edgekit plain int8": [], "edgekit float fallback (0.5)": ["--max-accuracy-drop", "0.5"],
            "edgekit --integer-only": ["--integer-only"], f"edgekit {' '.join(repairs)}": repairs,
            "edgekit --integer-only --adaround": ["--integer-only", "--adaround"]}


def run_edgekit(model: Path, calib: Path, val: Path, out: Path, flags: list[str]) -> dict:
    edgekit = Path(sys.executable).parent / "edgekit"
    done = run_sampled([str(edgekit), "compress", str(model), "--int8", "--formats", "tflite", "--data", str(calib),
                        "--val", str(val), "-o", str(out), "-q", "--no-bench", *flags])
    if done["status"] != 0:
        return {"error": done["error"], "seconds": done["wall_s"], "peak_mib": done["peak_mib"]}
    (path,) = out.glob("*.int8.tflite")
    return {"file": path, "seconds": done["wall_s"], "peak_mib": done["peak_mib"]}


def run_mct(python: str, model: Path, calib: Path, val: Path, out: Path, mode: str) -> dict:
    # env -u: edgekit set TF_USE_LEGACY_KERAS in this process; MCT's TensorFlow 2.15 has no tf_keras to take
    done = run_sampled(["env", "-u", "TF_USE_LEGACY_KERAS", python, str(HERE / "mct_child.py"), str(model), str(calib), str(val), str(out), mode])
    if done["status"] != 0:
        return {"error": done["error"], "seconds": done["wall_s"], "peak_mib": done["peak_mib"]}
    return {"file": out, "seconds": done["wall_s"], "peak_mib": done["peak_mib"]}


def measure(file: Path, val: Path) -> tuple[float, float]:
    """(top-1 on val, share of MACs in integer kernels), both from the file itself."""
    from edgekit.formats.facts import read_facts
    from edgekit.formats.runner import open_runner

    data = np.load(val)
    scores = open_runner(file).predict(data["x"].astype(np.float32))
    facts = read_facts(file, "tflite")
    total = sum(op.macs for op in facts.mac_ops) or 1
    return float(np.mean(np.argmax(scores, 1) == data["y"])), sum(op.macs for op in facts.mac_ops
                                                                     if op.int8_compute) / total


def section(name: str, folder: Path, mct_python: str, gptq: bool) -> list[str]:
    model, train, val, relu6 = prepare(name, folder)
    calib = folder / "calib.npz"
    data = np.load(train)
    np.savez(calib, x=data["x"][:200], y=data["y"][:200])  # edgekit draws 200 of --data; MCT gets these
    results = {run: run_edgekit(model, calib, val, folder / f"e{i}", flags)
               for i, (run, flags) in enumerate(edgekit_runs(relu6).items())}
    for mode in ("ptq", "gptq") if gptq else ("ptq",):
        results[f"MCT {mode.upper()}"] = run_mct(mct_python, model, calib, val, folder / f"mct-{mode}.tflite", mode)
    rows = ["| run | top-1 | MACs in int8 kernels | wall s | peak MiB |", "|---|---|---|---|---|"]
    for run, r in results.items():
        if "error" in r:
            rows.append(f"| {run} | failed: {r['error'].strip().splitlines()[-1][:120]} | | {r['seconds']:.0f} | {r['peak_mib']:,.0f} |")
            continue
        top1, share = measure(r["file"], val)
        rows.append(f"| {run} | {100 * top1:.2f} | {share:.0%} | {r['seconds']:.0f} | {r['peak_mib']:,.0f} |")
    return [f"### {name}", "", *rows, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mct-python", required=True, help="the Python of a virtual environment with MCT")
    parser.add_argument("--models", default="outliers,mobilenetv2,efficientnetb0")
    parser.add_argument("--gptq-models", default="outliers", help="models MCT's GPTQ also runs on (5 epochs: "
                        "more than 10 minutes for the trained MobileNetV2 on 2 cores)")
    parser.add_argument("--out", type=Path, default=HERE / "results.md")
    args = parser.parse_args()
    lines = []
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            lines += section(name, Path(tmp), args.mct_python, name in args.gptq_models.split(","))
            print("\n".join(lines[-12:]), flush=True)  # each model as it is done: the whole run takes long
    begin, end = markers("vs_mct.py")
    text = "\n".join([begin, "## Integer-only int8 against Sony MCT (benchmarks/vs_mct.py)", "",
                      "Calibration: the same 200 training images for every run; top-1 on the validation split; "
                      "wall time includes each tool's start-up (edgekit's verification of its file too).", "",
                      *lines, end])
    write_section("vs_mct.py", text, args.out)
    print(text)


if __name__ == "__main__":
    main()
