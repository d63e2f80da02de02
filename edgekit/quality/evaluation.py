"""Accuracy, agreement and confusion from class scores, and `edgekit eval` over artifacts.

Only numpy here and in the runners it opens: `edgekit eval` runs on a device with just one
runtime installed.
"""

from __future__ import annotations

import numpy as np

from edgekit.support.scores import ranked, top1, top_classes  # noqa: F401 - top1 is part of this module's surface


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, scores.shape[1])
    top = ranked(scores)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def accuracy(scores: np.ndarray, labels: np.ndarray | None) -> dict | None:
    """{"top1", "top5"} or None when there are no labels."""
    if labels is None:
        return None
    return {"top1": round(top_k_accuracy(scores, labels, 1), 6),
            "top5": round(top_k_accuracy(scores, labels, 5), 6)}


def agreement(scores: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of samples whose top-1 class equals the reference's."""
    return float(np.mean(top1(scores) == top1(reference)))


def agreement_up_to_ties(scores: np.ndarray, reference: np.ndarray) -> tuple[float, int]:
    """(fraction of samples whose top classes overlap the reference's, how many of them agree
    only through a tie). Where either side's highest score is shared by two classes exactly,
    it has no single top-1: the lower class that `agreement` takes is a convention, and a file
    that picks the other tied class computes the same answer."""
    overlap = np.any(top_classes(scores) & top_classes(reference), axis=1)
    strict = top1(scores) == top1(reference)
    return float(np.mean(overlap)), int(np.sum(overlap & ~strict))


def confusion(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> list[list[int]]:
    """rows: true class, columns: predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, top1(scores)), 1)
    return matrix.tolist()


def evaluate_artifacts(paths, data_path, preprocess: str | None = None, threads: int | None = None,
                       timeout_s: float = 600.0) -> dict:
    """`edgekit eval`: options checked here, the artifacts run in a child interpreter with a
    timeout (an ONNX Loop that never ends, or a runtime that crashes, is exit 2, not a hang)."""
    import json
    import sys
    from pathlib import Path

    from edgekit.support.children import check_seconds, check_threads, run_child
    from edgekit.intake.data import check_data_path
    from edgekit.formats.runner import artifact_format

    check_threads(threads)
    check_seconds("--timeout", timeout_s)
    for path in paths:
        artifact_format(Path(path))
    check_data_path(Path(data_path), "--data")
    job = {"paths": [str(p) for p in paths], "data_path": str(data_path), "preprocess": preprocess, "threads": threads}
    command = [sys.executable, "-I", "-m", "edgekit.quality.evaluation", json.dumps(job)]  # -I: see bench_local
    return run_child(command, timeout_s, ", ".join(str(p) for p in paths), work="evaluation")


def evaluate_here(paths, data_path, preprocess: str | None = None, threads: int | None = None) -> dict:
    """Run every artifact on the same labelled data: accuracy, confusion, agreement."""
    from pathlib import Path

    from edgekit.intake.data import check_labels, load_dataset
    from edgekit.errors import InputError
    from edgekit.formats.runner import open_runner

    runners = [open_runner(Path(p), threads) for p in paths]
    shapes = {r.input_shape for r in runners}
    if len(shapes) != 1:
        raise InputError(f"the artifacts take different inputs ({', '.join(map(str, sorted(shapes)))}); "
                         "evaluate models of one input shape together")
    data = load_dataset(Path(data_path), runners[0].input_shape, preprocess, "--data", need_labels=True)
    results, all_scores = [], []
    names = unique_names([Path(p) for p in paths])
    for path, name, runner in zip(paths, names, runners):
        scores = runner.predict(data.x)
        check_labels(data, scores.shape[1], f"--data (for {path})")
        all_scores.append(scores)
        results.append({"name": name, "path": str(path), "format": runner.format, "input": runner.input_spec,
                        "accuracy": accuracy(scores, data.y),
                        "confusion": confusion(scores, data.y, scores.shape[1])})
    pairs = {f"{names[i]} vs {names[j]}": round(agreement(all_scores[i], all_scores[j]), 6)
             for i in range(len(paths)) for j in range(i + 1, len(paths))}
    return {"data": {"path": str(data.source), "samples": len(data), "preprocess": data.preprocess},
            "artifacts": results, "agreement": pairs}


def unique_names(paths: list) -> list[str]:
    """Each artifact's file name, with as many parent folders as it takes to tell apart
    files of the same name (a/digits.int8.tflite, b/digits.int8.tflite)."""
    for depth in range(1, max(len(p.parts) for p in paths) + 1):
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]  # the same file given twice: its path, twice


def main(argv: list[str]) -> int:
    """The child of evaluate_artifacts (see edgekit.support.children.child_main)."""
    from edgekit.support.children import child_main

    return child_main(lambda job: evaluate_here(**job), argv)


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
