"""Pruning, QAT and accuracy-aware int8 on keras.applications architectures trained for real.

    python benchmarks/trained_stages.py [--models mobilenetv2-keras3,...] [--out benchmarks/results.md]

Each model is trained on scikit-learn's digits upscaled (tests/trained_build.py, the same
models as the slow test tier), then compressed three ways, each in its own process:
`--prune 0.5 --int8 --formats tflite` (default epochs, and the slow tier's epochs where they differ),
`--qat` (all three formats) and
`--int8 --max-accuracy-drop 0.5 --formats tflite,onnx`. For each run: the top-1 of the
original model, of the model the stage hands on, and of every int8 file, the QAT files'
agreement with the QAT model, the wall time and the run's peak resident memory (the
process and its children, from wait4). Writes its section of results.md.
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from sections import markers, write_section  # noqa: E402
from tests.trained.test_trained_stages import MODELS, PRUNE_EPOCHS  # noqa: E402

RUNS = {"prune 0.5 + int8": ["--prune", "0.5", "--int8", "--formats", "tflite"],
        "prune 0.5 + int8, slow tier's epochs": ["--prune", "0.5", "--int8", "--formats", "tflite"],
        "QAT": ["--qat"],
        "accuracy-aware int8 (0.5)": ["--int8", "--max-accuracy-drop", "0.5", "--formats", "tflite,onnx"]}


def train(name: str, folder: Path) -> dict:
    flavour, arch, size, epochs = MODELS[name]
    out = subprocess.run([sys.executable, "-m", "tests.trained_build", flavour, arch, str(size), str(folder),
                          str(epochs)], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compress(edgekit: Path, built: dict, folder: Path, flags: list[str], out: Path) -> dict:
    """One compress in a child; its exit code, wall time, peak RSS and report."""
    started = time.perf_counter()
    with open(folder / f"{out.name}.stderr", "w+") as stderr:  # a file: TensorFlow's logs would fill a pipe
        child = subprocess.Popen([str(edgekit), "compress", built["model"], "--data", str(folder / "train.npz"),
                                  "--val", str(folder / "val.npz"), "-o", str(out), "-q", "--no-bench", *flags],
                                 stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        stderr.seek(0)
        error = stderr.read().strip().splitlines()
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else None
    return {"exit": os.waitstatus_to_exitcode(status), "seconds": seconds, "peak_mib": usage.ru_maxrss / 1024,
            "report": report, "error": next((l for l in error if l.startswith("error:")), "")}


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def row(model: str, run: str, result: dict) -> str:
    report = result["report"]
    if report is None:
        return f"| {model} | {run} | exit {result['exit']} | | | | {result['seconds']:.0f} | {result['peak_mib']:,.0f} | {result['error'][:120]} |"
    original = report["reference"]["accuracy"]["top1"]
    stages = report.get("stages") or {}
    stage = next((stages[k]["keras_accuracy"]["top1"] for k in ("qat", "prune") if k in stages), None)
    int8 = [a for a in report["artifacts"] if a["precision"] == "int8"]
    files = ", ".join(f"{a['format']} {_pct(a['accuracy']['top1'])}" for a in int8)
    agree = ", ".join(f"{a['format']} {_pct(a['agreement'])}" for a in int8
                      if a["verification"].get("against") == "qat_model") or "—"
    aware = [a["accuracy_aware"] for a in int8 if a.get("accuracy_aware")]
    notes = "; ".join(f"{len(r.get('float_layers', []))} layers float" if r.get("needed") else "plain within budget"
                      for r in aware)
    return (f"| {model} | {run} | exit {result['exit']} | {_pct(original)} | {_pct(stage)} | {files} | {agree} | "
            f"{result['seconds']:.0f} | {result['peak_mib']:,.0f} | {notes} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", type=Path, default=HERE / "results.md")
    args = parser.parse_args()
    edgekit = Path(sys.executable).parent / "edgekit"
    lines = ["| model | run | exit | original top-1 % | stage model top-1 % | int8 files top-1 % | QAT files agree % "
             "| wall s | peak MiB | notes |", "|---|---|---|---|---|---|---|---|---|---|"]
    trained = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            folder = Path(tmp) / name
            folder.mkdir()
            built = train(name, folder)
            flavour, arch, size, epochs = MODELS[name]
            trained.append(f"{name}: {arch} ({flavour}) {size}×{size}, {epochs} epochs, val top-1 "
                           f"{100 * built['top1']:.2f}%, {built['train_s']:.0f} s")
            for i, (run, flags) in enumerate(RUNS.items()):
                if "slow tier" in run:
                    if PRUNE_EPOCHS[name] == 2:
                        continue  # the same as the default run
                    flags = [*flags, "--epochs", str(PRUNE_EPOCHS[name])]
                    run = f"prune 0.5 + int8, {PRUNE_EPOCHS[name]} epochs"
                result = compress(edgekit, built, folder, flags, folder / f"run{i}")
                lines.append(row(name, run, result))
                print(lines[-1], flush=True)
    begin, end = markers("trained_stages.py")
    section = "\n".join([
        begin, "## Pruning, QAT and accuracy-aware int8 on trained architectures (benchmarks/trained_stages.py)", "",
        "Models trained for real on digits upscaled (tests/trained_build.py, the slow test tier's models); "
        "each run is one `edgekit compress` process with default settings (learning rate from the file's "
        "optimizer, BatchNorm frozen, distillation 0.5). Peak memory: the run and its children.", "",
        *[f"- {t}" for t in trained], "", *lines, "", end])
    write_section("trained_stages.py", section, args.out)


if __name__ == "__main__":
    main()
