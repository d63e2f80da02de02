"""`edgekit compress`: load → read data → export per format → verify → report.

Everything is checked that can be checked before the slow work starts (options, output
folder, model file, data), and every output is staged so a failure leaves nothing behind.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.data import PREPROCESS_CHOICES, Dataset, load_dataset
from edgekit.errors import InputError
from edgekit.export import FORMATS, exporter_for
from edgekit.export.base import ExportRequest, artifact_names
from edgekit.model import LoadedModel, load_model
from edgekit.outputs import check_output_folder, staged
from edgekit.progress import StepLog
from edgekit.report import artifact_entry, base_report, environment, render_markdown, write_json
from edgekit.verify import Evidence, verify

IO_DTYPES = ("float32", "int8", "uint8")
RANDOM_CHECK_SAMPLES = 64


@dataclass
class CompressOptions:
    model: Path
    int8: bool = False
    data: Path | None = None
    val: Path | None = None
    formats: list[str] = field(default_factory=lambda: list(FORMATS))
    preprocess: str | None = None
    calib_samples: int = 200
    io_dtype: str = "float32"
    outdir: Path | None = None
    force: bool = False
    seed: int = 0
    trust_model: bool = False
    custom_objects: str | None = None

    @property
    def precisions(self) -> list[str]:
        if not self.int8:
            return ["fp32"]
        return ["fp32", "int8" if self.data else "int8w"]

    def resolved_outdir(self) -> Path:
        return Path(self.outdir) if self.outdir else Path(f"{Path(self.model).stem}-edgekit")


def parse_formats(text: str) -> list[str]:
    names = [f.strip().lower() for f in text.split(",") if f.strip()]
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise InputError(
            f"--formats: unknown format {', '.join(unknown) or repr(text)}; choose from {','.join(FORMATS)}"
        )
    return list(dict.fromkeys(names))  # keep order, drop repeats


def validate_options(opts: CompressOptions) -> None:
    """Option errors that need no file: fail before anything is loaded."""
    parse_formats(",".join(opts.formats))
    if opts.preprocess is not None and opts.preprocess not in PREPROCESS_CHOICES:
        raise InputError(f"--preprocess {opts.preprocess!r} is not one of: {', '.join(PREPROCESS_CHOICES)}")
    if opts.io_dtype not in IO_DTYPES:
        raise InputError(f"--io-dtype {opts.io_dtype!r} is not one of: {', '.join(IO_DTYPES)}")
    if opts.io_dtype != "float32" and not (opts.int8 and opts.data):
        raise InputError(f"--io-dtype {opts.io_dtype} needs full int8: pass --int8 with --data CALIB")
    if opts.calib_samples < 1:
        raise InputError(f"--calib-samples must be at least 1 (got {opts.calib_samples})")


def compress(opts: CompressOptions, log: StepLog) -> dict:
    """Run the whole pipeline; return the report (already written to the output folder)."""
    validate_options(opts)
    outdir = opts.resolved_outdir()
    stem = Path(opts.model).stem
    check_output_folder(outdir, artifact_names(stem, opts.formats, opts.precisions), opts.force)
    started = time.perf_counter()

    with log.step(f"Load {opts.model}"):
        model = load_model(Path(opts.model), trust=opts.trust_model, custom_objects=opts.custom_objects)
    _describe_model(model, log)
    calibration, validation = _load_data(opts, model, log)
    if opts.int8 and calibration is None:
        log.note("no --data: writing weight-only int8 (int8w); full int8 (weights and activations) needs --data CALIB")
    evidence = _evidence(model, calibration, validation, opts.seed, log)

    with staged(outdir) as staging, tempfile.TemporaryDirectory(prefix="edgekit-scratch-") as scratch:
        request = ExportRequest(
            model=model, stem=stem,
            outdir=staging, scratch=Path(scratch), precisions=opts.precisions,
            calibration=None if calibration is None else calibration.x, io_dtype=opts.io_dtype,
        )
        artifacts = [a for fmt in opts.formats for a in exporter_for(fmt).export(request, log)]
        verdicts = []
        for artifact in artifacts:
            with log.step(f"Verify {artifact.path.name}"):
                verdicts.append(verify(artifact, evidence))
        report = _build_report(opts, model, calibration, validation, evidence, verdicts, log)
        report["timings_s"]["total"] = round(time.perf_counter() - started, 3)
        write_json(report, staging / "report.json")
        (staging / "report.md").write_text(render_markdown(report))
    report["output"] = str(outdir)
    return report


def _load_data(opts: CompressOptions, model: LoadedModel, log: StepLog):
    calibration = validation = None
    if opts.data and opts.int8:
        with log.step(f"Read calibration data {opts.data}"):
            full = load_dataset(opts.data, model.image_shape, opts.preprocess, "--data")
            calibration = full.subset(opts.calib_samples, opts.seed)
    elif opts.data:
        log.note("--data is used for int8 calibration; without --int8 it is ignored")
    if opts.val:
        with log.step(f"Read validation data {opts.val}"):
            validation = load_dataset(opts.val, model.image_shape, opts.preprocess, "--val", need_labels=True)
        _check_labels(validation, model.num_classes)
    return calibration, validation


def _check_labels(ds: Dataset, num_classes: int) -> None:
    if ds.y is not None and len(ds.y) and (ds.y.min() < 0 or ds.y.max() >= num_classes):
        raise InputError(
            f"--val {ds.source}: labels run from {ds.y.min()} to {ds.y.max()} but the model has {num_classes} classes"
        )


def _evidence(model: LoadedModel, calibration, validation, seed: int, log: StepLog) -> Evidence:
    """Inputs to verify on: validation data, else calibration data, else seeded random images."""
    if validation is not None:
        x, labels, source = validation.x, validation.y, "validation"
    elif calibration is not None:
        x, labels, source = calibration.x, None, "calibration"
    else:
        rng = np.random.default_rng(seed)
        x = rng.uniform(0.0, 1.0, (RANDOM_CHECK_SAMPLES, *model.image_shape)).astype(np.float32)
        labels, source = None, "random"
        log.note("no --val or --data: artifacts are checked on random inputs, accuracy is not measured")
    from edgekit.runtime.reference import ReferenceRunner

    with log.step(f"Run the reference model on {len(x)} {source} inputs"):
        reference = ReferenceRunner(model.forward).predict(x)
    return Evidence(x=x, labels=labels, reference=reference, source=source)


def _describe_model(model: LoadedModel, log: StepLog) -> None:
    bridge = model.bridge
    if bridge and bridge["bridged"]:
        log.note(f"Keras {model.file.keras_version} model rebuilt as tf_keras, outputs equal "
                 f"(max |Δ| {bridge['max_abs_diff']:.1e} on random input)")
    for note in model.notes:
        log.note(note)


def weight_sparsity(model: LoadedModel) -> float:
    """Fraction of exact zeros in the conv/dense kernels: what pruning would raise."""
    variables = getattr(model.trackable, "weights", None) or getattr(model.trackable, "variables", [])
    kernels = [np.asarray(w) for w in variables if "kernel" in w.name]
    total = sum(k.size for k in kernels)
    return round(float(sum(np.count_nonzero(k == 0) for k in kernels)) / total, 6) if total else 0.0


def _data_entry(ds: Dataset | None) -> dict | None:
    return None if ds is None else {"path": str(ds.source), "samples": len(ds), "preprocess": ds.preprocess}


def _build_report(opts, model: LoadedModel, calibration, validation, evidence, verdicts, log) -> dict:
    from edgekit.evaluate import accuracy

    fp32_sizes = {v.artifact.format: v.artifact.size_bytes for v in verdicts if v.artifact.precision == "fp32"}
    sparsity = weight_sparsity(model)
    artifacts = [artifact_entry(v, fp32_sizes, sparsity) for v in verdicts]
    report = base_report()
    report.update({
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": {
            "path": str(opts.model), "sha256": model.file.sha256, "keras": model.file.keras,
            "keras_version": model.file.keras_version, "format": model.file.format, "bridge": model.bridge,
            "size_bytes": model.file.size_bytes, "params": model.params, "macs": model.macs,
            "input_shape": list(model.input_shape), "num_classes": model.num_classes,
        },
        "recipe": {
            "int8": opts.int8, "precisions": opts.precisions, "formats": list(opts.formats),
            "preprocess": next((d.preprocess for d in (calibration, validation) if d is not None),
                               opts.preprocess),
            "calib_samples": opts.calib_samples, "io_dtype": opts.io_dtype, "seed": opts.seed,
        },
        "data": {"calibration": _data_entry(calibration), "validation": _data_entry(validation)},
        "reference": {"accuracy": accuracy(evidence.reference, evidence.labels)},
        "artifacts": artifacts,
        "timings_s": dict(log.times),
        "environment": environment(),
    })
    return report
