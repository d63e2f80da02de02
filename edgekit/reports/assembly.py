"""Assembling the report.json of a `compress` run from what the pipeline produced.

The pipeline (edgekit/compression/pipeline.py) runs the steps; this module turns their results
into the report's entries: per-artifact sizes, gzip sizes, what each file really holds, the
source model, the recipe as resolved, the data used, timings and memory. The contract itself
(fields, schema version, Markdown) is in report.py and report_schema.py.
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import numpy as np

from edgekit.intake.data import Dataset
from edgekit.intake.model import LoadedModel
from edgekit.reports.report import artifact_entry, base_report, environment
from edgekit.support.progress import StepLog


def add_latencies(report: dict, latencies: list[dict] | None) -> None:
    if latencies is None:
        return
    for entry, timing in zip(report["artifacts"], latencies):
        entry["latency_ms"] = {k: timing[k] for k in ("mean", "std", "min", "p50", "p90", "p99", "max")}
        entry["benchmark"] = {k: timing[k] for k in ("runs", "threads", "init_ms", "first_inference_ms",
                                                      "throughput_per_s", "peak_rss_mb", "baseline_rss_mb")}
    report["host"] = latencies[0]["machine"] if latencies else None


def weight_sparsity(model: LoadedModel) -> float:
    """Fraction of exact zeros in the conv/dense kernels: what pruning raises."""
    variables = getattr(model.trackable, "weights", None) or getattr(model.trackable, "variables", [])
    kernels = [np.asarray(w) for w in variables if "kernel" in w.name]
    total = sum(k.size for k in kernels)
    return round(float(sum(np.count_nonzero(k == 0) for k in kernels)) / total, 6) if total else 0.0


GZIP_LEVEL = 6  # level 9 took ~145 s of a 239 s ResNet50 run for files 2% smaller


def gzip_size(files: list[Path]) -> int:
    """What pruning pays in: the compressed size (zeros compress, dense kernels do not),
    streamed in 1 MiB blocks so a large file is never held twice."""
    total = 0
    for file in files:
        packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: the gzip format
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                total += len(packer.compress(block))
        total += len(packer.flush())
    return total


def gzip_sizes(verdicts, log) -> dict:
    with log.step("Measure the compressed (gzip) size of each artifact"):
        return {v.artifact.path: gzip_size(v.artifact.files) for v in verdicts}


MOSTLY_FLOAT = 0.5  # an int8 artifact running less than this share of its MACs in int8 is flagged


def quantization_read_back(artifact, log: StepLog) -> dict:
    """What the file really holds (int8 share of weights and MACs, conv/dense ops left in
    float), read from the file: the recipe says what was asked, this says what happened."""
    from edgekit.formats.facts import read_facts

    facts = read_facts(artifact.path, artifact.format).quantization()
    share = facts["int8_mac_share"]
    facts["mostly_float"] = bool(artifact.precision == "int8" and share is not None and share < MOSTLY_FLOAT)
    if facts["mostly_float"]:
        log.note(f"{artifact.path.name} was asked to be int8 but runs only {share:.0%} of its MACs in int8 "
                 f"({facts['float_mac_ops']} of {facts['mac_ops']} conv/dense ops in float)")
    return facts


def data_entry(ds: Dataset | None) -> dict | None:
    return None if ds is None else {"path": str(ds.source), "samples": len(ds), "preprocess": ds.preprocess}


def build_report(opts, model: LoadedModel, exported: LoadedModel, data, original_accuracy, verdicts,
                 stages, log: StepLog) -> dict:
    """report.json of a `compress` run, but for what the pipeline adds after it (diagnostics,
    failed and skipped checks, latencies, the accuracy-aware search, the total time).
    `opts`: the run's CompressOptions; `data`: its calibration, validation and training sets."""
    fp32_sizes = {v.artifact.format: v.artifact.size_bytes for v in verdicts if v.artifact.precision == "fp32"}
    sparsity = weight_sparsity(exported)
    artifacts = []
    packed = gzip_sizes(verdicts, log) if stages and "prune" in stages else {}
    for verdict in verdicts:
        entry = artifact_entry(verdict, fp32_sizes, sparsity)
        entry["gzip_bytes"] = packed.get(verdict.artifact.path)
        entry["quantization"] = quantization_read_back(verdict.artifact, log)
        artifacts.append(entry)
    recipe = opts.recipe.model_dump(mode="json")
    recipe["precisions"] = opts.precisions
    if recipe["preprocess"] is None:
        recipe["preprocess"] = next((d.preprocess for d in (data.calibration, data.validation) if d is not None), None)
    report = base_report()
    report.update({
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": {
            "path": str(opts.model), "sha256": model.file.sha256, "keras": model.file.keras,
            "keras_version": model.file.keras_version, "format": model.file.format, "bridge": model.bridge,
            "size_bytes": model.file.size_bytes, "params": model.params, "macs": model.macs,
            "input_shape": list(model.input_shape), "num_classes": model.num_classes,
        },
        "recipe": recipe | {"seed": opts.seed},
        "data": {"calibration": data_entry(data.calibration), "validation": data_entry(data.validation),
                 "training": data_entry(data.train) if stages else None},
        "reference": {"accuracy": original_accuracy},
        "stages": stages,
        "artifacts": artifacts,
        "timings_s": dict(log.times),
        "peak_rss_mb": dict(log.peaks),  # per step: a child's own peak, or this process's during the step
        "environment": environment(),
    })
    return report
