"""`edgekit compress`: load → read data → (prune) → (QAT) → export per format → verify → report.

Everything is checked that can be checked before the slow work starts (options, output
folder, model file, data), and every output is staged so a failure leaves nothing behind.
"""

from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edgekit.compression.config import Recipe
from edgekit.intake.data import Dataset, check_data_path, check_labels, check_varied, load_dataset
from edgekit.errors import (ConversionError, GateFailure, InputError, ModelError, StageFailure,
                            first_line)
from edgekit.quality.evaluation import accuracy
from edgekit.formats import exporter_for, get_format
from edgekit.formats.exporter import ExportRequest, artifact_names, freeze
from edgekit.formats.source import forget_live, keras_source, write_graph
from edgekit.reports.assembly import add_latencies, build_report
from edgekit.reports.html_report import render_html
from edgekit.intake.model import LoadedModel, load_model
from edgekit.support.output_folders import check_output_folder, scratch_folder, staged
from edgekit.support.progress import StepLog
from edgekit.reports.report import render_markdown, write_json
from edgekit.quality.verify import Evidence, verify

RANDOM_CHECK_SAMPLES = 64
STAGE_FLAGS = {"channels": "--prune-channels", "prune": "--prune", "qat": "--qat"}


@dataclass
class CompressOptions:
    model: Path
    recipe: Recipe = field(default_factory=Recipe)
    data: Path | None = None
    val: Path | None = None
    outdir: Path | None = None
    force: bool = False
    seed: int = 0
    trust_model: bool = False
    custom_objects: str | None = None
    quiet: bool = False
    bench: bool = True  # measure every artifact's latency on this host
    # --prune-channels-target-latency measured on USER@HOST over SSH (compression/measured_target.py)
    remote: str | None = None
    remote_python: str = "python3"
    ssh_options: list[str] = field(default_factory=list)

    @property
    def precisions(self) -> list[str]:
        if self.recipe.fp16:
            return ["fp32", "fp16"]
        wider = ["int16x8"] if self.recipe.int16x8 else []  # TFLite only: formats without it skip it
        if not self.recipe.int8:
            return ["fp32", *wider]
        return ["fp32", "int8" if self.data or self.recipe.qat else "int8w", *wider]

    def resolved_outdir(self) -> Path:
        return Path(self.outdir) if self.outdir else Path(f"{Path(self.model).stem}-edgekit")


def validate_options(opts: CompressOptions) -> None:
    """Option errors that need no file: fail before anything is loaded."""
    recipe = opts.recipe
    if not 0 <= opts.seed < 2 ** 32:
        raise InputError(f"--seed {opts.seed}: choose a whole number from 0 to {2 ** 32 - 1}")
    if recipe.repairs.bias_correction and not opts.data:
        raise InputError("--bias-correction measures the int8 rounding error on calibration data: pass --data CALIB")
    if recipe.repairs.adaround and not opts.data:
        raise InputError("--adaround learns each weight's rounding on calibration data: pass --data CALIB")
    if recipe.ranges != "default" and not opts.data and not recipe.qat:
        raise InputError(f"--ranges {recipe.ranges} chooses ranges from calibration data: pass --data CALIB "
                         "(without it int8 is weight-only, with no activation ranges)")
    if recipe.int16x8 and not opts.data:
        raise InputError("--int16x8 calibrates its 16-bit activations: pass --data CALIB")
    if (recipe.target or recipe.integer_only) and not opts.data:
        what = f"--target {recipe.target}" if recipe.target else "--integer-only"
        raise InputError(f"{what} builds full int8 files, calibrated: pass --data CALIB")
    if recipe.io_dtype != "float32" and not (recipe.int8 and (opts.data or recipe.qat)):
        raise InputError(f"--io-dtype {recipe.io_dtype} needs full int8: pass --int8 with --data CALIB")
    if recipe.stages and not opts.data:
        names = " and ".join(STAGE_FLAGS[s.type] for s in recipe.stages)
        raise InputError(f"{names}: fine-tuning needs labelled training data: pass --data (image folder or .npz with x, y)")
    if recipe.accuracy_aware:
        _check_accuracy_aware(opts)
    _check_latency_target(opts)


def _check_latency_target(opts: CompressOptions) -> None:
    """A latency target is estimated on --device or measured on --remote; --remote measures nothing else."""
    channels = opts.recipe.channels
    latency = channels is not None and channels.target_latency_ms is not None
    if opts.remote is not None:
        from edgekit.measure.remote import parse_destination

        parse_destination(opts.remote)
        if not latency:
            raise InputError("--remote measures the --prune-channels-target-latency MS target on that machine; to "
                             "measure the written files there: edgekit bench --remote USER@HOST <files>")
    elif latency and not channels.device:
        raise InputError("--prune-channels-target-latency MS is estimated on a device: add --device NAME "
                         "(`edgekit devices` lists them), or measured on one: add --remote USER@HOST")
    if channels and channels.device:
        from edgekit.measure.devices import load_profile

        load_profile(channels.device)  # an unknown device fails here, before the model loads


def _check_accuracy_aware(opts: CompressOptions) -> None:
    """--max-accuracy-drop measures every int8 file on labelled data and re-quantizes it."""
    flag = "--max-accuracy-drop (recipe accuracy_aware)"
    if not opts.data:
        raise InputError(f"{flag} re-quantizes full int8: pass --data CALIB")
    if not opts.val:
        raise InputError(f"{flag} measures top-1 on labelled data: pass --val VAL")
    if opts.recipe.io_dtype != "float32":
        raise InputError(f"{flag} keeps some layers in float, so the file's input and output stay float32: "
                         f"leave out --io-dtype {opts.recipe.io_dtype}")


@dataclass
class _Data:
    train: Dataset | None  # all of --data: fine-tuning
    calibration: Dataset | None  # the seeded subset of --data: PTQ
    validation: Dataset | None


def compress(opts: CompressOptions, log: StepLog) -> dict:
    """Run the whole pipeline; return the report (already written to the output folder)."""
    validate_options(opts)
    recipe = opts.recipe
    outdir = opts.resolved_outdir()
    stem = Path(opts.model).stem
    check_output_folder(outdir, artifact_names(stem, recipe.formats, opts.precisions), opts.force)
    for option, path in (("--data", opts.data), ("--val", opts.val)):
        if path is not None:
            check_data_path(Path(path), option)
    started = time.perf_counter()

    with log.step(f"Load {opts.model}"):
        model = load_model(Path(opts.model), trust=opts.trust_model, custom_objects=opts.custom_objects)
    _describe_model(model, log)
    if recipe.accuracy_aware and model.keras_model is None:
        what = model.notes[0] if model.notes else model.file.format
        raise ModelError(f"{opts.model}: --max-accuracy-drop ranks the layers of a tf_keras model (or of a Keras 3 "
                         f"model edgekit can rebuild), and this one has none ({what})")
    if recipe.stages and model.keras_model is None:
        raise ModelError(f"{opts.model}: pruning and QAT need a tf_keras model, and this one is not ({model.notes[0]})")
    data = _load_data(opts, model, log)
    if recipe.int8 and data.calibration is None and not recipe.qat:
        log.note("no --data: writing weight-only int8 (int8w); full int8 (weights and activations) needs --data CALIB")
    for fmt in recipe.formats if recipe.fp16 else []:
        if "fp16" not in get_format(fmt).precisions:
            log.note(f"{get_format(fmt).label} has no fp16 export here: {fmt} gets fp32 only")
    evidence = _evidence(model, data, opts.seed, log)
    original_accuracy = accuracy(evidence.reference, evidence.labels)  # before any stage changes the model
    staged_model = _run_stages(opts, model, data, evidence, log)
    stages = staged_model.report

    with staged(outdir) as staging, scratch_folder() as scratch:
        try:
            if recipe.integer_only and recipe.accuracy_aware:
                built, repair_search = _search_repairs(opts, model, staged_model, data, evidence, original_accuracy,
                                                       staging, scratch, log)
            else:
                built, repair_search = _build(opts, model, staged_model, data, evidence, staging, scratch, log), None
            exported, evidence, request = built.exported, built.evidence, built.request
            verdicts, skipped = _drop_slow_weight_only(built.verdicts, log)
            artifacts = [v.artifact for v in verdicts]
            target_checks = _check_target(recipe, artifacts, log)
            diagnostics = _diagnose(exported, artifacts, evidence, request.from_qat, log)
            # the search re-converts from request.source: in-process, that is the live model
            searched = _accuracy_aware(opts, exported, request, verdicts, diagnostics, evidence, log)
        finally:
            forget_live()
        original = _original_fp32(opts, model, data, scratch, log) if opts.bench and "channels" in (stages or {}) else None
        extra = [s.plain for s in searched.values() if s.plain] + ([original] if original else [])
        latencies = _benchmark(artifacts + extra, log) if opts.bench else None
        if original:
            _add_channels_latency(stages["channels"], original, latencies.pop(), artifacts, latencies)
        report = build_report(replace(opts, recipe=built.recipe), model, exported, data, original_accuracy, verdicts,
                              stages, log)
        report["repairs"] = built.repairs
        if repair_search is not None:
            report["repair_search"] = repair_search
        report["target"] = ({"device": recipe.target, "integer_only": recipe.integer_only,
                             "per_tensor": recipe.per_tensor, "checked": target_checks}
                            if recipe.target or recipe.integer_only or recipe.per_tensor else None)
        report["diagnostics"] = diagnostics
        report["failed_checks"] = built.failed
        report["skipped"] = skipped
        add_latencies(report, latencies)
        _add_accuracy_aware(report, searched, latencies)
        report["timings_s"]["total"] = round(time.perf_counter() - started, 3)
        report["peak_rss_mb"]["largest step"] = max(log.peaks.values(), default=None)
        with log.step("Write report.json, report.md and report.html"):
            write_json(report, staging / "report.json")
            (staging / "report.md").write_text(render_markdown(report))
            samples = {entry["id"]: t["samples_ms"] for entry, t in zip(report["artifacts"], latencies or [])}
            (staging / "report.html").write_text(render_html(report, samples))
    report["output"] = str(outdir)
    _check_failed_checks(report)
    _check_accuracy_reached(report)
    _check_repairs_reached(report)
    _check_tolerance(report, recipe)
    return report


@dataclass
class _Built:
    """Every format exported from the recipe's repaired model, and verified."""

    recipe: Recipe
    exported: LoadedModel
    evidence: Evidence
    repairs: dict | None
    request: ExportRequest
    verdicts: list
    failed: list


def _build(opts: CompressOptions, model: LoadedModel, staged_model: _Staged, data: _Data, evidence: Evidence,
           outdir: Path, scratch: Path, log: StepLog) -> _Built:
    recipe = opts.recipe
    exported, repairs, chosen = _repair(recipe, staged_model.exported, data, evidence, log)
    if exported is not model:
        evidence = _reference_outputs(exported, evidence, log, "the fine-tuned or repaired model")
    # QAT int8 files are checked against the QAT model's own forward, the rest against the float model
    evidence = replace(evidence, int8_reference=staged_model.qat_scores,
                       int8_reference_sensitivity=(staged_model.report or {}).get("qat", {}).get("rounding_sensitivity"))
    request = _export_request(opts, model, exported, staged_model.qat_forward, data, outdir, scratch, log)
    artifacts = _export_all(request, log)
    verdicts, failed = _verify_all(artifacts, evidence, log)
    _check_rounding(chosen, [v.artifact for v in verdicts], repairs, log)
    return _Built(recipe, exported, evidence, repairs, request, verdicts, failed)


def _search_repairs(opts: CompressOptions, model: LoadedModel, staged_model: _Staged, data: _Data,
                    evidence: Evidence, original_accuracy: dict, staging: Path, scratch: Path,
                    log: StepLog) -> tuple[_Built, dict]:
    """--max-accuracy-drop for integer-only files (edgekit/compression/repair_search.py): each
    attempt is built in its own scratch folder; the first within the budget, or else the one with
    the smallest worst drop, is moved into the output."""
    from edgekit.compression.repair_search import attempt_record, attempts, worst_drop

    max_drop, reference = opts.recipe.accuracy_aware.max_drop, original_accuracy["top1"]
    tried, best, best_drop, best_index = [], None, float("inf"), 0
    for i, attempt in enumerate(attempts(opts.recipe)):
        log.info(f"integer-only accuracy search, attempt {i + 1}: {attempt.label}")
        folder = scratch / f"attempt-{i + 1}"
        folder.mkdir()
        built = _build(replace(opts, recipe=attempt.recipe), model, staged_model, data, evidence, folder, scratch, log)
        drop = worst_drop(built.verdicts, reference)
        tried.append(attempt_record(attempt, built.verdicts, drop, max_drop))
        log.info(f"attempt {i + 1} ({attempt.label}): worst int8 top-1 drop {drop:.2f} points "
                 f"(budget {max_drop:g})")
        if drop < best_drop:
            best, best_drop, best_index = built, drop, i
        if drop <= max_drop:
            break
    for verdict in best.verdicts:
        verdict.artifact.files = [Path(shutil.move(str(f), staging / f.name)) for f in verdict.artifact.files]
    return best, {"max_drop": max_drop, "reference_top1": reference, "attempts": tried, "chosen": best_index,
                  "reached": best_drop <= max_drop}


def _check_repairs_reached(report: dict) -> None:
    """--max-accuracy-drop with integer-only files: exit 1 when no repair attempt met the budget (the best was written)."""
    search = report.get("repair_search")
    if not search or search["reached"]:
        return
    best = search["attempts"][search["chosen"]]
    raise GateFailure(f"no repair attempt brought every int8 file within {search['max_drop']:g} top-1 points of the "
                      f"float model: the best, {best['attempt']}, lost {best['worst_drop_points']:.2f} "
                      f"({len(search['attempts'])} attempt(s), report.json repair_search); its files and the report "
                      "were written. Integer-only files cannot keep layers in float: calibrate on more "
                      "representative --data, or fine-tune with --qat", report=report)


def _verify_all(artifacts, evidence: Evidence, log: StepLog):
    """Verdicts of the files that pass; a QAT int8 file that computes something else than the
    QAT model is removed and recorded (exit 1 once the rest is written), any other failed check
    stops the run (a wrong export: exit 2, nothing written)."""
    from edgekit.quality.verify import QATMismatch

    verdicts, failed = [], []
    for artifact in artifacts:
        with log.step(f"Verify {artifact.path.name}"):
            try:
                verdicts.append(verify(artifact, evidence))
            except QATMismatch as mismatch:
                for file in artifact.files:
                    file.unlink(missing_ok=True)
                failed.append(mismatch.check | {"message": str(mismatch)})
    return verdicts, failed


# Weight-only int8 dequantizes its weights at run time (ONNX Runtime's ConvInteger, LiteRT's
# hybrid kernels): on x86 it ran 16× (ONNX) and 2× (TFLite) slower than fp32 on a trained
# MobileNetV2. A file slower than its fp32 twin by more than this is not written.
INT8W_MAX_SLOWDOWN = 1.1
SPEED_CHECK = {"runs": 20, "min_time_s": 0.2, "warmup_runs": 2, "warmup_time_s": 0.05}


def _drop_slow_weight_only(verdicts, log: StepLog):
    """Measure each int8w file beside its fp32 twin (interleaved, best p50 of two rounds); remove
    the ones slower than INT8W_MAX_SLOWDOWN × fp32, with a note saying why and what to do."""
    fp32 = {v.artifact.format: v.artifact for v in verdicts if v.artifact.precision == "fp32"}
    pairs = [(v.artifact, fp32[v.artifact.format]) for v in verdicts
             if v.artifact.precision == "int8w" and v.artifact.format in fp32]
    if not pairs:
        return verdicts, []
    from edgekit.measure.latency import BenchSettings, bench_local

    files = [p for pair in pairs for p in (pair[1].path, pair[0].path)]
    with log.step(f"Time {len(pairs)} weight-only int8 file(s) against fp32 on this host"):
        timings = bench_local(files * 2, BenchSettings(**SPEED_CHECK))  # two rounds: ABAB, ABAB
    best = {}
    for timing in timings:
        best[timing["path"]] = min(best.get(timing["path"], float("inf")), timing["p50"])
    skipped, slow_ids = [], set()
    for int8w, twin in pairs:
        ratio = best[str(int8w.path)] / best[str(twin.path)]
        if ratio <= INT8W_MAX_SLOWDOWN:
            continue
        slow_ids.add(int8w.id)
        for file in int8w.files:
            file.unlink(missing_ok=True)
        record = {"id": int8w.id, "path": int8w.path.name, "p50_ms": round(best[str(int8w.path)], 4),
                  "fp32_p50_ms": round(best[str(twin.path)], 4), "slowdown": round(ratio, 2),
                  "reason": "weight-only int8 ran slower than fp32 on this host"}
        skipped.append(record)
        log.note(f"{int8w.path.name} not written: weight-only int8 ran {ratio:.1f}× slower than {twin.path.name} "
                 f"on this host ({record['p50_ms']:.3g} vs {record['fp32_p50_ms']:.3g} ms p50); pass --data CALIB "
                 "for full int8, which is faster")
    return [v for v in verdicts if v.artifact.id not in slow_ids], skipped


def _check_failed_checks(report: dict) -> None:
    failed = report.get("failed_checks") or []
    if failed:
        raise GateFailure(f"{'; '.join(f['message'] for f in failed)}: left out; the files that passed and the report "
                          "were written. More QAT --epochs settle the learned ranges; report it with --debug output "
                          "if it persists", report=report)


def _export_request(opts: CompressOptions, model: LoadedModel, exported: LoadedModel, qat_forward, data: _Data,
                    staging: Path, scratch: Path, log: StepLog) -> ExportRequest:
    """Everything the converters need, as files they can open in a child process."""
    from edgekit.support.isolated_steps import isolate_steps

    shape, weight_bytes = exported.image_shape, 4 * exported.params
    isolate = isolate_steps(weight_bytes)
    request = ExportRequest(
        source=_export_source(opts, model, exported, scratch, isolate, log), image_shape=shape,
        stem=Path(opts.model).stem, outdir=staging, scratch=scratch, precisions=opts.precisions,
        io_dtype=opts.recipe.io_dtype, per_tensor=opts.recipe.per_tensor, ranges=opts.recipe.ranges,
        weight_bytes=weight_bytes, formats=opts.recipe.formats, isolate=isolate)
    calibrated = {"int8", "int16x8"} & set(opts.precisions)
    if data.calibration is not None and calibrated:  # QAT too: see formats/tflite/export.py
        request.calibration = str(scratch / "calibration.npy")
        np.save(request.calibration, data.calibration.x)
        request.calibration_samples = len(data.calibration)
    if qat_forward is not None:
        with log.step("Trace and freeze the QAT model"):
            request.qat_source = write_graph(freeze(qat_forward, shape), scratch / "qat.pb", shape)
    return request


def _export_source(opts: CompressOptions, model: LoadedModel, exported: LoadedModel, scratch: Path, isolate: bool,
                   log: StepLog) -> dict:
    """The model to export as a file: the user's tf_keras file when it is exported unchanged,
    the working model saved to scratch when a child must load it, or the frozen graph of a
    model with no tf_keras form (SavedModel, Keras 3 without a rebuild)."""
    shape = exported.image_shape
    if exported.keras_model is None:
        with log.step("Trace and freeze the model's forward pass"):
            return write_graph(freeze(exported.forward, shape), scratch / "frozen.pb", shape)
    if exported is model and model.file.keras == "tf_keras":
        # a child reopens the user's file: it must still be the file that was scanned
        return keras_source(Path(opts.model).resolve(), shape, opts.custom_objects, opts.trust_model,
                            live=exported.keras_model, sha256=model.file.sha256)
    path = scratch / "working.h5"
    if isolate:
        with log.step("Save the working model for the conversion steps"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf_keras calls HDF5 "legacy": it is what tf_keras loads fastest
            exported.keras_model.save(path)
    return keras_source(path, shape, opts.custom_objects, opts.trust_model, live=exported.keras_model)


def _export_all(request: ExportRequest, log: StepLog) -> list:
    """Every format; one whose converter cannot express the model fails, and the error
    names its ops and the formats that did work, so the rerun is one flag away."""
    request.check_all_steps_fit()
    artifacts, failures = [], []
    for fmt in request.formats:
        try:
            artifacts += exporter_for(fmt).export(request, log)
        except ConversionError as exc:
            failures.append(str(exc))
    if failures:
        failed = [f.split(":")[0] for f in failures]
        worked = [f for f in request.formats if f not in failed]
        way_out = f"; the other formats worked: rerun with --formats {','.join(worked)}" if worked else ""
        raise ConversionError(f"{'; '.join(failures)}{way_out} (nothing was written)")
    return artifacts


def _original_fp32(opts: CompressOptions, model: LoadedModel, data: _Data, scratch: Path, log: StepLog):
    """The original model as an fp32 file of the first format, in its own scratch folder: what
    the channel-pruned model's host latency is measured against."""
    folder = scratch / "original-fp32"
    folder.mkdir()
    recipe = opts.recipe.model_copy(update={"int8": False, "fp16": False, "int16x8": False, "stages": [],
                                            "formats": opts.recipe.formats[:1]})
    request = _export_request(replace(opts, recipe=recipe), model, model, None, data, folder, folder, log)
    (artifact,) = [a for a in _export_all(request, log) if a.precision == "fp32"]
    return artifact


def _add_channels_latency(record: dict, original, timing: dict, artifacts, latencies: list[dict]) -> None:
    """stages.channels.host_latency_ms: p50 of the original's and the pruned model's fp32 file of one format."""
    pruned = [t for a, t in zip(artifacts, latencies) if a.precision == "fp32" and a.format == original.format]
    record["host_latency_ms"] = {"before": round(timing["p50"], 4),
                                 "after": round(pruned[0]["p50"], 4) if pruned else None,
                                 "file": f"{get_format(original.format).label} fp32",
                                 "how": "p50 at batch 1 on this host, measured as the artifacts are"}


def _describe_model(model: LoadedModel, log: StepLog) -> None:
    bridge = model.bridge
    if bridge and bridge["bridged"]:
        log.note(f"Keras {model.file.keras_version} model rebuilt as tf_keras, outputs equal "
                 f"(max |Δ| {bridge['max_abs_diff']:.1e} on random input)")
    for note in model.notes:
        log.note(note)


def _load_data(opts: CompressOptions, model: LoadedModel, log: StepLog) -> _Data:
    recipe = opts.recipe
    train = calibration = validation = None
    if opts.data and (recipe.int8 or recipe.stages):
        with log.step(f"Read training/calibration data {opts.data}"):
            train = load_dataset(opts.data, model.image_shape, recipe.preprocess, "--data")
        _say(train.notes, log)
        check_labels(train, model.num_classes, "--data")
        if recipe.int8 and recipe.calib_samples > len(train):
            log.note(f"--calib-samples {recipe.calib_samples}: --data holds {len(train)} samples; "
                     f"calibrating on all {len(train)}")
        calibration = train.subset(recipe.calib_samples, opts.seed)
        check_varied(calibration, "--data")
    elif opts.data:
        log.note("--data is used for int8 calibration and fine-tuning; without --int8 it is ignored")
    if opts.val:
        with log.step(f"Read validation data {opts.val}"):
            validation = load_dataset(opts.val, model.image_shape, recipe.preprocess, "--val", need_labels=True)
        _say(validation.notes, log)
        check_labels(validation, model.num_classes, "--val")
    return _Data(train, calibration, validation)


def _say(notes: list[str], log: StepLog) -> None:
    for note in notes:
        log.note(note)


def _evidence(model: LoadedModel, data: _Data, seed: int, log: StepLog) -> Evidence:
    """Inputs to verify on: validation data, else calibration data, else seeded random images."""
    if data.validation is not None:
        x, labels, source = data.validation.x, data.validation.y, "validation"
    elif data.calibration is not None:
        x, labels, source = data.calibration.x, None, "calibration"
    else:
        rng = np.random.default_rng(seed)
        x = rng.uniform(0.0, 1.0, (RANDOM_CHECK_SAMPLES, *model.image_shape)).astype(np.float32)
        labels, source = None, "random"
        log.note("no --val or --data: artifacts are checked on random inputs, accuracy is not measured")
    return _reference_outputs(model, Evidence(x=x, labels=labels, reference=None, source=source), log,
                              "the reference model")


def _reference_outputs(model: LoadedModel, evidence: Evidence, log: StepLog, what: str) -> Evidence:
    from edgekit.formats.reference import ReferenceRunner

    with log.step(f"Run {what} on {len(evidence.x)} {evidence.source} inputs"):
        reference = ReferenceRunner(model.forward).predict(evidence.x)
    return replace(evidence, reference=reference)


@dataclass
class _Staged:
    exported: LoadedModel  # the float model after the stages (the model itself when none ran)
    qat_forward: object = None  # the QAT model's fake-quant forward, traced for the int8 files
    qat_scores: np.ndarray | None = None  # its outputs on the evidence inputs
    report: dict | None = None


def _run_stages(opts: CompressOptions, model: LoadedModel, data: _Data, evidence: Evidence, log: StepLog):
    """Prune and/or QAT the tf_keras model.
    Each stage's accuracy is of the model that stage hands on: the pruned float model, then the
    QAT model's fake-quant forward; the fp32 artifacts are the float model after all stages."""
    recipe = opts.recipe
    working, qat_forward, qat_scores, stages = model.keras_model, None, None, {}
    if not recipe.stages:
        return _Staged(model)
    from edgekit.compression.stages.finetune import outputs_probabilities, require_labelled, teacher_targets

    require_labelled(data.train, STAGE_FLAGS[recipe.stages[0].type])  # before the teacher reads its labels
    validation = (evidence.x, evidence.labels) if evidence.labels is not None else None
    original = accuracy(evidence.reference, evidence.labels)
    targets = None
    if recipe.distillation > 0:
        with log.step(f"Run the original model on {len(data.train)} training inputs (distillation targets)"):
            targets = teacher_targets(model.keras_model, data.train, model.num_classes, recipe.distillation,
                                      from_logits=not outputs_probabilities(model.keras_model),
                                      temperature=recipe.distillation_temperature)
    if recipe.channels:
        working, stages["channels"] = _prune_channels(opts, model, data, evidence, targets, validation, original, log)
    if recipe.prune:
        from edgekit.compression.stages.prune import prune

        settings = _finetune_settings(recipe, recipe.prune.epochs, model, data)
        with log.step(f"Prune to {recipe.prune.sparsity:.0%} sparsity ({recipe.prune.structure}), "
                      f"fine-tune {recipe.prune.epochs} epoch(s) at learning rate {settings.learning_rate:g}"):
            result = prune(working, data.train, recipe.prune, settings, opts.seed, targets, validation,
                           quiet=opts.quiet)
        working = result.model
        stages["prune"] = {"schedule": result.schedule, "sparsity": result.overall, "per_layer": result.per_layer,
                           "keras_accuracy": _stage_accuracy(working, evidence)[1], "finetune": settings.to_json()}
        _check_stage_kept("pruning", stages["prune"]["keras_accuracy"], original, recipe, settings)
    if recipe.qat:
        from edgekit.compression.stages.qat import float_model_after_qat, quantize_aware
        from edgekit.quality.verify import rounding_sensitivity
        from edgekit.compression.stages.qat_scheme import CORRECTIONS as QAT_CORRECTIONS

        settings = _finetune_settings(recipe, recipe.qat.epochs, model, data)
        with log.step(f"Quantization-aware training, {recipe.qat.epochs} epoch(s) at learning rate "
                      f"{settings.learning_rate:g}"):
            result = quantize_aware(working, data.train, recipe.qat, recipe.prune is not None, settings, opts.seed,
                                    targets, validation, quiet=opts.quiet)
        qat_model = result.model
        qat_forward = lambda x: qat_model(x, training=False)  # noqa: E731
        if result.unquantized:
            from edgekit.intake.safety import group_layers

            log.note(f"QAT left these layers in float (tfmot cannot quantize them): {group_layers(result.unquantized)}")
        qat_scores, qat_accuracy = _stage_accuracy(qat_model, evidence)
        sensitivity = rounding_sensitivity(_scores_of(qat_model), evidence.x, qat_scores, opts.seed)
        working, fp32_from = float_model_after_qat(qat_model, result.float_model)
        stages["qat"] = {"scheme": result.scheme, "unquantized": result.unquantized, "keras_accuracy": qat_accuracy,
                         "fp32_artifacts": fp32_from, "batchnorm_folded": len(result.folded),
                         "biases_rounded": result.biases_rounded, "logit_range": result.logit_range,
                         "rounding_sensitivity": sensitivity,
                         "corrections": QAT_CORRECTIONS,
                         "finetune": settings.to_json()}
        _check_stage_kept("quantization-aware training", qat_accuracy, original, recipe, settings)
    exported = replace(model, keras_model=working, forward=lambda x: working(x, training=False), trackable=working)
    last = stages[[s.type for s in recipe.stages][-1]]
    stages["keras_accuracy_after"] = last["keras_accuracy"]
    return _Staged(exported, qat_forward, qat_scores, stages)


def _prune_channels(opts: CompressOptions, model: LoadedModel, data: _Data, evidence: Evidence, targets,
                    validation, original: dict | None, log: StepLog):
    """The channels stage (edgekit/compression/stages/channels.py): the smaller fine-tuned model and its record."""
    from edgekit.compression.stages.channels import prune_channels

    recipe, stage = opts.recipe, opts.recipe.channels
    profile = None
    if stage.device:
        from edgekit.measure.devices import load_profile

        profile = load_profile(stage.device)
    goal = (f"{stage.ratio:.0%} of each group's channels" if stage.ratio is not None else
            f"MACs to {stage.target_macs:.0%}" if stage.target_macs is not None else
            f"{stage.target_latency_ms:g} ms measured on {opts.remote}" if opts.remote else
            f"{stage.target_latency_ms:g} ms estimated on {stage.device}")
    settings = _finetune_settings(recipe, stage.epochs, model, data)
    precision = "int8" if recipe.int8 else "fp32"
    with log.step(f"Prune channels ({goal}), fine-tune {stage.epochs} epoch(s) with distillation at learning rate "
                  f"{settings.learning_rate:g}"), scratch_folder() as scratch:
        measured = _remote_latency(opts, model, data, profile, precision, scratch, log) if opts.remote else None
        result = prune_channels(model.keras_model, data.train, stage, settings, opts.seed, targets, validation,
                                quiet=opts.quiet, profile=profile, precision=precision, fmt=recipe.formats[0],
                                measured=measured)
    record = result.record
    macs, alone = record["macs"], record["left_alone"]
    log.info(f"channels: MACs {macs['before']:,} → {macs['after']:,} ({macs['after'] / macs['before']:.0%}), "
             f"parameters {record['params']['before']:,} → {record['params']['after']:,}; "
             f"{record['groups']['pruned']} of {record['groups']['prunable']} prunable groups pruned")
    if alone:
        log.note(f"channels: {len(alone)} conv/dense layer(s) keep all their channels: "
                 + "; ".join(f"{k}: {v}" for k, v in list(alone.items())[:4]) + (" …" if len(alone) > 4 else "")
                 + " (report.json stages.channels.left_alone)")
    scores, record["keras_accuracy"] = _stage_accuracy(result.model, evidence)
    record["agreement_with_original"] = round(float(np.mean(np.argmax(scores, axis=1)
                                                            == np.argmax(evidence.reference, axis=1))), 6)
    record["finetune"] = settings.to_json()
    _check_stage_kept("channel pruning", record["keras_accuracy"], original, recipe, settings)
    return result.model, record


def _remote_latency(opts: CompressOptions, model: LoadedModel, data: _Data, profile, precision: str, scratch: Path,
                    log: StepLog):
    """What measures each candidate of a latency target on --remote: the first format at the run's
    precision, with the --device profile's threads and providers where one is given (as bench does)."""
    from edgekit.compression.measured_target import SEARCH_BENCH, RemoteLatency
    from edgekit.measure.latency import BenchSettings

    settings = BenchSettings(**SEARCH_BENCH, threads=profile.threads if profile else None,
                             providers=profile.onnx_providers if profile else None,
                             openvino_device=profile.openvino_device if profile else None)
    calibration = (data.calibration if data.calibration is not None else data.train).x if precision == "int8" else None
    return RemoteLatency(opts.remote, opts.recipe.formats[0], precision, model.image_shape, scratch, log,
                         calibration=calibration, custom_objects=opts.custom_objects, trust=opts.trust_model,
                         remote_python=opts.remote_python,
                         ssh_options=list(opts.ssh_options), settings=settings)


def _repair(recipe: Recipe, exported: LoadedModel, data: _Data, evidence: Evidence,
            log: StepLog) -> tuple[LoadedModel, dict | None, dict]:
    """The recipe's repairs (edgekit/compression/repairs/apply.py), applied to the float model
    every format is exported from; a model they find nothing to change in is exported as it is,
    with a note. Also the int8 kernels learned rounding chose, by layer."""
    if not recipe.repairs.any:
        return exported, None, {}
    if exported.keras_model is None:
        why = f"no Keras layers to repair in this model ({exported.file.format})"
        log.note(f"repairs: {why}; exported as it is")
        return exported, {"not_applied": why}, {}
    from edgekit.compression.repairs.apply import apply_repairs

    calibration = data.calibration.x if data.calibration is not None else None
    working, record, chosen = apply_repairs(recipe.repairs, recipe.per_tensor, exported.keras_model, calibration,
                                    evidence.x, log)
    if working is exported.keras_model:
        return exported, record, chosen
    return replace(exported, keras_model=working, forward=lambda x: working(x, training=False),
                   trackable=working), record, chosen


def _check_rounding(chosen: dict, artifacts, repairs: dict, log: StepLog) -> None:
    """Each int8 file holds the int8 weights learned rounding chose (repairs.adaround.held); a
    converter that re-rounds them (another grid) is named."""
    if not chosen:
        return
    from edgekit.formats.held import layers_not_held

    held = repairs["adaround"]["held"] = {}
    with log.step("Check that each int8 file holds the int8 weights learned rounding chose"):
        for artifact in artifacts:
            if artifact.precision not in ("int8", "int16x8"):
                continue
            missing = layers_not_held(chosen, Path(artifact.path), artifact.format)
            name = Path(artifact.path).name
            held[name] = {"held": len(chosen) - len(missing), "of": len(chosen), "not_held": missing}
            if missing:
                log.note(f"adaround: {name} does not hold the rounding chosen for {len(missing)} of {len(chosen)} "
                         f"layer(s) ({', '.join(missing[:5])}{', …' if len(missing) > 5 else ''}): its converter "
                         "re-rounded them or kept them in float")


def _check_target(recipe: Recipe, artifacts, log: StepLog) -> list[dict]:
    if not (recipe.target or recipe.integer_only or recipe.per_tensor):
        return []
    from edgekit.compression.targets import check_written

    what = (f"{recipe.target}'s profile" if recipe.target
            else " and ".join(rule for rule, on in (("the integer-only rule", recipe.integer_only),
                                                    ("per-tensor weights", recipe.per_tensor)) if on))
    with log.step(f"Check each int8 file against {what}"):
        checked = check_written(recipe, artifacts)
    for entry in checked:
        if entry.get("float_at_edges"):
            edges = entry["float_at_edges"]
            log.note(f"{entry['file']}: {len(edges)} op(s) before the first or after the last quantized op run in "
                     f"float ({', '.join(edges[:3])}{', …' if len(edges) > 3 else ''}): its runtime runs them as "
                     "pre/post-processing; every op between is integer")
    return checked


def _finetune_settings(recipe: Recipe, epochs: int, model: LoadedModel, data: _Data):
    from edgekit.compression.stages.finetune import settings_for

    return settings_for(len(data.train), epochs, recipe.batch_size, recipe.learning_rate, model.file.learning_rate,
                        recipe.distillation, recipe.distillation_temperature)


def _check_stage_kept(stage: str, kept: dict | None, original: dict | None, recipe: Recipe, settings) -> None:
    """A fine-tuning stage that lost more top-1 than the tolerance stops the run (exit 1) before
    anything is exported, with the numbers and the options that help."""
    if not kept or not original:
        return
    from edgekit.quality.tolerance import signed_points, stage_tolerance

    tolerance = stage_tolerance(recipe)
    drop = 100 * (original["top1"] - kept["top1"])
    if drop <= tolerance:
        return
    epochs = ", ".join(f"{100 * t:.2f}%" for t in settings.val_top1_per_epoch) or "no epoch finished"
    diverged = (f"; it diverged {len(settings.backoffs)} time(s) and restarted at a lower rate"
                if settings.backoffs else "")
    raise StageFailure(
        f"{stage} kept top-1 {100 * kept['top1']:.2f}% of the original {100 * original['top1']:.2f}% "
        f"({signed_points(-drop)}, over the tolerance of {tolerance:g}; after each epoch: {epochs}{diverged}); nothing was "
        f"written. What helps: more --epochs (now {settings.epochs}), another --learning-rate (now "
        f"{settings.learning_rate:.2g})" + (", a lower --prune sparsity" if recipe.prune else "")
        + (", removing fewer channels (--prune-channels)" if recipe.channels else "")
        # benchmarks/distillation_temperature.py: T = 2 recovered a narrow MobileNetV2 4.5 points further
        + (", a softer teacher (recipe distillation_temperature: 2)"
           if recipe.channels and recipe.distillation > 0 and recipe.distillation_temperature == 1 else "")
        + ", or a wider --accuracy-tolerance")


def _stage_accuracy(keras_model, evidence: Evidence):
    """The model's scores on the evidence inputs, and its accuracy there (None without labels)."""
    scores = _scores_of(keras_model)(evidence.x)
    return scores, accuracy(scores, evidence.labels)


def _scores_of(keras_model):
    """x → the Keras model's class scores, batched as the reference outputs are."""
    from edgekit.formats.reference import ReferenceRunner

    return ReferenceRunner(lambda x: keras_model(x, training=False)).predict


# Per-layer SQNR sums over every element: on MobileNetV2, 32 inputs gave each layer's SQNR within
# 0.1 dB (median; 0.4 at most) of 200 (benchmarks/results.md), for 1.5× a verification's time.
DIAGNOSE_SAMPLES = 32


def _diagnose(exported: LoadedModel, artifacts, evidence: Evidence, from_qat: bool, log: StepLog) -> list[dict] | None:
    """Per-layer error of every post-training int8 file against the float model (edgekit.quality.diagnose).
    QAT files are left out: their reference is the QAT model, checked in verify."""
    targets = [a for a in artifacts if a.precision == "int8"]
    if not targets or from_qat:
        return None
    if exported.keras_model is None:
        log.note("per-layer int8 diagnostics need a tf_keras model (or a Keras 3 model edgekit can rebuild); "
                 "this one has none, so report.json has no diagnostics section")
        return None
    from edgekit.quality.diagnose import diagnose_files

    n = min(DIAGNOSE_SAMPLES, len(evidence.x))
    fp32 = {a.format: a for a in artifacts if a.precision == "fp32"}
    twins = [fp32[a.format] for a in targets if a.format in fp32]  # each tap is checked on the fp32 file
    try:
        with log.step(f"Diagnose int8 layer by layer against the float model ({n} {evidence.source} inputs)"):
            int8 = diagnose_files(exported.keras_model, [(a.id, a.path, a.format) for a in targets], evidence.x, n,
                                  checks={a.id: fp32[a.format].id for a in targets if a.format in fp32},
                                  twins=[(a.id, a.path, a.format) for a in twins])
    except Exception as exc:  # noqa: BLE001 - a report section must not cost the user the verified files
        from edgekit.support.quiet_libraries import debug

        if debug():
            raise
        log.note(f"per-layer diagnostics failed ({type(exc).__name__}: {first_line(exc)}); the artifacts are "
                 "verified and unaffected. This is a bug in edgekit: rerun with --debug and report the output")
        return None
    for entry in int8:
        entry["path"] = Path(entry["path"]).name  # not the staging folder's name
    return int8


def _accuracy_aware(opts: CompressOptions, exported: LoadedModel, request: ExportRequest, verdicts, diagnostics,
                    evidence: Evidence, log: StepLog) -> dict:
    aware = opts.recipe.accuracy_aware
    if aware is None or opts.recipe.integer_only:  # integer-only files search over repairs instead
        return {}
    from edgekit.quality.accuracy_aware import search_all

    return search_all(aware.max_drop, aware.max_steps, exported.keras_model, request, [v.artifact for v in verdicts],
                      verdicts, diagnostics, evidence, log)


def _add_accuracy_aware(report: dict, searched: dict, latencies) -> None:
    from edgekit.quality.accuracy_aware import add_to_report

    add_to_report(report, searched, latencies)


def _check_accuracy_reached(report: dict) -> None:
    """--max-accuracy-drop: exit 1 when some format found no mix within the budget (its best was written)."""
    from edgekit.quality.accuracy_aware import unreached

    missed = unreached(report)
    if missed:
        budget = report["recipe"]["accuracy_aware"]["max_drop"]
        raise GateFailure(f"no int8/float mix within {budget:g} top-1 points: {'; '.join(missed)}; "
                          "the best file of each format and the report were written", report=report)


def _benchmark(paths, log: StepLog) -> list[dict]:
    from edgekit.measure.latency import BenchSettings, bench_local

    with log.step(f"Benchmark {len(paths)} artifacts on this host (batch 1, ≥50 runs and ≥1 s each)"):
        return bench_local([getattr(p, "path", p) for p in paths], BenchSettings())


def _check_tolerance(report: dict, recipe: Recipe) -> None:
    """The accuracy tolerance (edgekit.quality.tolerance): exit 1 (like a gate) when a quantized artifact lost more."""
    from edgekit.quality.tolerance import over_tolerance, tolerance_message

    over = over_tolerance(report, recipe.accuracy_tolerance)
    if over:
        raise GateFailure(tolerance_message(over, recipe.accuracy_tolerance), report=report)
