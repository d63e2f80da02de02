"""The recipe's repairs, in order, on the float tf_keras model every format is exported from:
BatchNorm channels of ~0 variance silenced (repairs.dead_channels), BatchNorms that do not fold
made 1×1 depthwise convolutions (repairs.batchnorm_as_conv), ReLU6 made ReLU (repairs.relu6),
cross-layer equalization (repairs.equalize), bias correction (repairs.bias_correction) or learned
rounding (repairs.adaround). Each is reported; each that must keep the function is checked to.

The BatchNorm rewrite and equalization must not change the outputs (beyond float rounding:
REPAIRED_TOLERANCE, or it is edgekit's bug, exit 3, nothing written). Unclipping ReLU6 and bias
correction and learned rounding change them by design: the report says by how much, on the evidence inputs, against the model before the repairs.
"""

from __future__ import annotations

import numpy as np

from edgekit.compression.config import Repairs
from edgekit.errors import EdgekitError
from edgekit.support.progress import StepLog

# Equalization keeps the float function: outputs on the evidence inputs may move by float
# rounding only (the tests see ≤ 1e-5; this leaves room for deep models)
REPAIRED_TOLERANCE = 1e-3
CHECK_SAMPLES = 64
# Below this top-1 agreement on the evidence inputs, unclipping ReLU6 has changed what the model
# predicts, not just a few activations past 6 (a MobileNetV2 trained with SGD: 3%): said loudly
RELU6_AGREEMENT = 0.97


def apply_repairs(repairs: Repairs, per_tensor: bool, model, calibration_x: np.ndarray | None,
                  evidence_x: np.ndarray, log: StepLog) -> tuple[object, dict, dict[str, np.ndarray]]:
    """(the repaired model, or `model` itself where nothing changed; report.json's `repairs`; the
    int8 kernels learned rounding chose, by layer, which the written files must hold)."""
    from edgekit.compression.stages.fold import fold_batchnorm

    sample = evidence_x[:CHECK_SAMPLES]
    original = _outputs(model, sample)
    record: dict = {}
    current = model
    sqnr = _LayerSQNR(fold_batchnorm(model)[0], sample, per_tensor)
    if repairs.dead_channels:
        current = _silence_dead_channels(current, original, sample, record, log)
        if current is not model:  # a stage of the SQNR table only where it changed a kernel
            sqnr.keeps_function("dead_channels", fold_batchnorm(current)[0])
    if repairs.batchnorm_as_conv:
        current = _batchnorm_as_conv(current, original, sample, record, log)
        sqnr.keeps_function("batchnorm_as_conv", current)
    if repairs.equalize:
        current = _equalize(current, current is not model, repairs.relu6, original, sample, record, log)
        sqnr.keeps_function("equalize", current)
    if repairs.bias_correction:
        current = _correct_biases(current, current is not model, per_tensor, calibration_x, record, log)
        sqnr.moves_weights("bias_correction", current)
    chosen = {}
    if repairs.adaround:
        current, chosen = _learn_rounding(current, current is not model, per_tensor, calibration_x, record, log)
        sqnr.moves_weights("adaround", current)
    record["layer_sqnr_db"] = sqnr.record(log)
    if current is not model:
        moved = _outputs(current, sample)
        record["change"] = {"max_abs_change": float(np.max(np.abs(moved - original))),
                            "top1_agreement": float(np.mean(np.argmax(moved, -1) == np.argmax(original, -1))),
                            "inputs": len(sample)}
    return current, record, chosen


class _LayerSQNR:
    """Each layer's int8 SQNR after each repair (repairs/sqnr.py), measured on the evidence inputs."""

    def __init__(self, folded, sample: np.ndarray, per_tensor: bool):
        from edgekit.compression.repairs.sqnr import layer_sqnr

        self.sample, self.per_tensor, self.reference = sample, per_tensor, folded
        self.stages = [("before", layer_sqnr(folded, folded, sample, per_tensor))]

    def keeps_function(self, repair: str, model) -> None:
        from edgekit.compression.repairs.sqnr import layer_sqnr

        self.reference = model  # the float function from here on (ReLU6 unclipped included)
        self.stages.append((repair, layer_sqnr(model, model, self.sample, self.per_tensor)))

    def moves_weights(self, repair: str, model) -> None:
        from edgekit.compression.repairs.sqnr import layer_sqnr

        self.stages.append((repair, layer_sqnr(model, self.reference, self.sample, self.per_tensor)))

    def record(self, log: StepLog) -> dict:
        from edgekit.compression.repairs.sqnr import table
        from edgekit.reports.text import sqnr_summary

        found = table(self.stages)
        line = sqnr_summary(found)
        if line:
            log.info(f"repairs: {line}")
        return found


def _silence_dead_channels(model, original: np.ndarray, sample: np.ndarray, record: dict, log: StepLog):
    """repairs/dead.py, kept only where the evidence inputs find those channels constant too."""
    from edgekit.compression.repairs.dead import silence_dead_channels

    result = silence_dead_channels(model)
    record["dead_channels"] = {"silenced": result.silenced, "left_alone": result.left_alone}
    if not result.silenced:
        log.note("dead_channels: no BatchNorm channel of ~0 variance; nothing to silence")
        return model
    moved = float(np.max(np.abs(_outputs(result.model, sample) - original)))
    record["dead_channels"]["max_abs_change"] = moved
    channels = sum(len(s["channels"]) for s in result.silenced)
    if not moved <= REPAIRED_TOLERANCE:
        record["dead_channels"]["silenced"] = []
        log.note(f"dead_channels: {channels} channel(s) the BatchNorms saw constant vary on the evidence inputs "
                 f"(outputs would move by up to {moved:.3g}): left as they are")
        return model
    widest = max(result.silenced, key=lambda s: s["fold_over_median"])
    log.note(f"dead_channels: {channels} channel(s) of ~0 BatchNorm variance in {len(result.silenced)} layer(s) "
             f"silenced (γ = 0; folded, the widest would have scaled its kernel {widest['fold_over_median']:g}× the "
             f"median channel's, in {widest['layer']}); outputs unchanged on the evidence inputs")
    return result.model


def _batchnorm_as_conv(model, original: np.ndarray, sample: np.ndarray, record: dict, log: StepLog):
    from edgekit.compression.repairs.batchnorm import batchnorm_as_conv

    with log.step("Fold BatchNorms, and make those that do not fold 1×1 depthwise convolutions"):
        result = batchnorm_as_conv(model)
    record["batchnorm_as_conv"] = {"converted": result.converted, "left_alone": result.left_alone,
                                   "batchnorm_folded": result.folded}
    if result.converted:
        log.note(f"batchnorm_as_conv: {len(result.converted)} BatchNorm(s) that do not fold made 1×1 depthwise "
                 "convolutions, which every converter quantizes")
    else:
        log.note("batchnorm_as_conv: every BatchNorm folds into the layer before it (or there is none)")
    if result.model is not model:  # folding alone is a new model too: checked the same way
        _check_unchanged("batchnorm_as_conv", result.model, original, sample, record["batchnorm_as_conv"])
    return result.model


def _check_unchanged(repair: str, model, reference: np.ndarray, sample: np.ndarray, record: dict) -> None:
    moved = float(np.max(np.abs(_outputs(model, sample) - reference)))
    record["max_abs_change"] = moved
    if not moved <= REPAIRED_TOLERANCE:
        raise EdgekitError(f"{repair} changed the model's outputs by up to {moved:.3g} on the evidence inputs; "
                           "that is a bug in edgekit, please report it with --debug output (nothing was written)")


def _equalize(model, owned: bool, relu6: bool, original: np.ndarray, sample: np.ndarray, record: dict,
              log: StepLog):
    from edgekit.compression.repairs.equalize import equalize, unclip_relu6

    before, unclipped, reference = model, [], original
    if relu6:
        before, unclipped = unclip_relu6(model)
        if unclipped:
            reference = _outputs(before, sample)  # what equalization must keep
            moved = float(np.max(np.abs(reference - original)))
            agree = float(np.mean(np.argmax(reference, -1) == np.argmax(original, -1)))
            log.note(f"relu6: {len(unclipped)} ReLU6 layer(s) made ReLU, so that equalization passes through them; "
                     f"the float outputs moved by up to {moved:.3g} on {len(sample)} evidence inputs, top-1 "
                     f"agreement with the original {100 * agree:.1f}%"
                     + (": this model needs its ReLU6 clipping; leave out --relu6" if agree < RELU6_AGREEMENT else ""))
        else:
            log.note("relu6: the model has no ReLU6 layer; nothing to unclip")
    with log.step("Equalize the ranges of consecutive conv/dense layers (cross-layer equalization)"):
        result = equalize(before, owned=owned or before is not model)  # a copy made here is ours to change
    record["equalize"] = {"pairs": result.pairs, "left_alone": result.left_alone,
                          "batchnorm_folded": result.folded, "relu6_made_relu": unclipped}
    if not result.pairs:
        log.note("equalize: no pair of conv/dense layers joined only by ReLU, max pooling or padding; "
                 "exported as it is")
        return before
    widest = max(result.pairs, key=lambda p: p["range_spread_before"])
    log.note(f"equalize: {len(result.pairs)} layer pair(s); the widest channel range of {widest['from']} went from "
             f"{widest['range_spread_before']:g}× to {widest['range_spread_after']:g}× the median channel's")
    _check_unchanged("equalize", result.model, reference, sample, record["equalize"])
    return result.model


def _correct_biases(model, owned: bool, per_tensor: bool, calibration_x: np.ndarray, record: dict, log: StepLog):
    from edgekit.compression.repairs.bias import MAX_SAMPLES, correct_biases

    used = min(len(calibration_x), MAX_SAMPLES)
    grid = "per-tensor" if per_tensor else "per-channel"
    with log.step(f"Correct conv/dense biases for the mean int8 ({grid}) weight-rounding error on {used} samples"):
        result = correct_biases(model, calibration_x, per_tensor, owned)
    record["bias_correction"] = {"corrected": result.corrected, "left_alone": result.left_alone,
                                 "batchnorm_folded": result.folded, "samples": used, "weights": grid}
    if not result.corrected:
        log.note("bias correction: no conv/dense layer with a bias to correct; exported as it is")
        return model
    largest = max(result.corrected, key=lambda c: c["shift_over_bias_range"])
    log.note(f"bias correction: {len(result.corrected)} layer(s); the largest shift is {largest['layer']}'s, "
             f"{100 * largest['shift_over_bias_range']:.2g}% of its bias range")
    return result.model


def _learn_rounding(model, owned: bool, per_tensor: bool, calibration_x: np.ndarray, record: dict,
                    log: StepLog) -> tuple[object, dict[str, np.ndarray]]:
    from edgekit.compression.repairs.adaround import ITERATIONS, MAX_SAMPLES, learn_rounding

    used = min(len(calibration_x), MAX_SAMPLES)
    grid = "per-tensor" if per_tensor else "per-channel"
    with log.step(f"Learn each conv/dense weight's int8 ({grid}) rounding on {used} samples "
                  f"(AdaRound, {ITERATIONS} steps a layer)"):
        result = learn_rounding(model, calibration_x, per_tensor, owned)
    record["adaround"] = {"rounded": result.rounded, "left_alone": result.left_alone,
                          "batchnorm_folded": result.folded, "samples": used, "weights": grid}
    if not result.rounded:
        log.note("adaround: no conv/dense layer to round; exported as it is")
        return model, {}
    nearest = sum(r["error_nearest"] for r in result.rounded)
    chosen = sum(r["error_chosen"] for r in result.rounded)
    changed = sum(r["changed"] for r in result.rounded) / max(sum(r["weights"] for r in result.rounded), 1)
    log.note(f"adaround: {len(result.rounded)} layer(s), {100 * changed:.1f}% of the weights round the other way; "
             f"the layers' output error from rounding is {100 * chosen / max(nearest, 1e-30):.0f}% of rounding to "
             "nearest's (summed over layers)")
    return result.model, result.chosen


def _outputs(model, x: np.ndarray) -> np.ndarray:
    from edgekit.formats.reference import ReferenceRunner

    return ReferenceRunner(lambda batch: model(batch, training=False)).predict(x)
