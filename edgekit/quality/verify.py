"""Run every exported artifact and compare it with the Keras model on the same inputs.

fp32 artifacts must reproduce the Keras outputs (max |Δ| within float_tolerance: an absolute
floor plus a part of the outputs' magnitude) or the run fails: a float export that differs is
a wrong export. Quantized artifacts report top-1 agreement with Keras and accuracy on the
validation data; a QAT int8 file must agree with the QAT model it came from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.errors import QATMismatch, VerificationError
from edgekit.quality.evaluation import accuracy, agreement, agreement_up_to_ties
from edgekit.formats.exporter import Artifact
from edgekit.formats.runner import open_runner

FLOAT_TOLERANCE = 1e-4  # absolute floor, for outputs near 1 (probabilities)
# float32 carries ~7 digits, and converters reorder sums and fuse ops: a correct tf_keras
# RegNetX002 export whose logits reach ±1,500 differs from Keras by 0.0029 (2e-6 of them).
FLOAT_RELATIVE_TOLERANCE = 1e-5
FLOAT_CHECK_SAMPLES = 32
QAT_MIN_AGREEMENT = 0.98  # top-1 agreement of a QAT int8 file with the QAT model's own forward


@dataclass
class Evidence:
    """The inputs artifacts are checked on, with the Keras reference outputs for them."""

    x: np.ndarray
    labels: np.ndarray | None
    reference: np.ndarray
    source: str  # "validation" | "calibration" | "random"
    int8_reference: np.ndarray | None = None  # a QAT run: the QAT model's fake-quant outputs
    int8_reference_sensitivity: dict | None = None  # and how its top-1 moves with its inputs (rounding_sensitivity)


@dataclass
class Verdict:
    artifact: Artifact
    check: dict
    accuracy: dict | None
    agreement: float


def float_tolerance(reference: np.ndarray) -> float:
    """How far a correct float export may be from Keras: FLOAT_TOLERANCE, plus
    FLOAT_RELATIVE_TOLERANCE of the largest output magnitude."""
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    return FLOAT_TOLERANCE + FLOAT_RELATIVE_TOLERANCE * scale if np.isfinite(scale) else FLOAT_TOLERANCE


# How far the QAT model's inputs move to measure its sensitivity to rounding, as a part of their
# range: far under one input step (1/255 of it), so only values sitting within a hair of a
# rounding boundary change, about one per image on 32×32 RGB.
NUDGE = 1e-6


def rounding_sensitivity(forward, x: np.ndarray, scores: np.ndarray, seed: int) -> dict:
    """How often the QAT model's top-1 changes when its inputs move by NUDGE of their range: a
    network that amplifies single rounding flips (a trained EfficientNetB0: 2-3% of inputs)
    cannot be reproduced to the input by any runtime that rounds its ties its own way."""
    span = float(np.max(x) - np.min(x)) if x.size else 0.0
    noise = np.random.default_rng(seed).uniform(-1.0, 1.0, x.shape).astype(np.float32)
    nudged_scores = forward(x + (NUDGE * span * noise).astype(x.dtype))
    agree, _ = agreement_up_to_ties(nudged_scores, scores)
    return {"nudge": NUDGE, "inputs": len(x), "top1_changed": round(1.0 - agree, 6)}


def verify(artifact: Artifact, evidence: Evidence) -> Verdict:
    runner = open_runner(artifact.path)
    if artifact.precision == "fp32":
        return _verify_float(artifact, runner, evidence)
    scores = runner.predict(evidence.x)
    if artifact.precision == "int8" and evidence.int8_reference is not None:
        return _verify_qat(artifact, scores, evidence)
    agree = agreement(scores, evidence.reference)
    check = {"kind": "agreement", "inputs": evidence.source, "samples": len(evidence.x),
             "agreement": round(agree, 6)}
    return Verdict(artifact, check, accuracy(scores, evidence.labels), agree)


def _verify_qat(artifact: Artifact, scores: np.ndarray, evidence: Evidence) -> Verdict:
    """An int8 file from QAT must compute what the QAT model computes: it holds the same
    weights and ranges, so disagreement beyond rounding is an export bug, not a result.
    Where the QAT model's quantized logits put two classes on the same step it has no single
    top-1, and a file that picks either tied class agrees (measured on a trained EfficientNetB0:
    6 of OpenVINO's 8 disagreements were such ties)."""
    agree, through_ties = agreement_up_to_ties(scores, evidence.int8_reference)
    n = len(evidence.x)
    allowed = max(1, int((1 - QAT_MIN_AGREEMENT) * n))  # on 16 inputs one rounding flip is 94%, not a bug
    differ = round((1 - agree) * n)
    check = {"kind": "agreement", "inputs": evidence.source, "samples": len(evidence.x),
             "agreement": round(agree, 6), "agreeing_through_ties": through_ties, "against": "qat_model",
             "min_agreement": QAT_MIN_AGREEMENT}
    if evidence.int8_reference_sensitivity:
        check["qat_model_top1_changed_by_nudge"] = evidence.int8_reference_sensitivity["top1_changed"]
    if differ > allowed:
        raise QATMismatch(
            f"{artifact.path.name} agrees with the QAT model it was exported from on only {agree:.1%} of "
            f"{n} {evidence.source} inputs ({differ} differ, at most {allowed} expected: "
            f"{QAT_MIN_AGREEMENT:.0%}; exact top-1 ties count as agreeing)" + _sensitivity_said(evidence),
            check | {"path": artifact.path.name, "id": artifact.id, "passed": False})
    return Verdict(artifact, check, accuracy(scores, evidence.labels), agree)


def _sensitivity_said(evidence: Evidence) -> str:
    """Why a file may fall short with no export bug: the QAT model's own rounding sensitivity."""
    measured = evidence.int8_reference_sensitivity
    if not measured or measured["top1_changed"] <= 0:
        return ""
    return (f"; the QAT model itself changes its top-1 on {measured['top1_changed']:.1%} of these inputs when they "
            f"move by {measured['nudge']:g} of their range: it amplifies single rounding flips, which each runtime "
            f"breaks its own way (more training steadies it)")


def _verify_float(artifact: Artifact, runner, evidence: Evidence) -> Verdict:
    n = min(FLOAT_CHECK_SAMPLES, len(evidence.x))
    got = runner.predict(evidence.x[:n])
    diff = float(np.max(np.abs(got - evidence.reference[:n])))
    tolerance = float_tolerance(evidence.reference[:n])
    if not np.isfinite(diff) or diff > tolerance:
        raise VerificationError(
            f"{artifact.path.name} does not match the Keras model: max |Δ| = {diff:.3g} on {n} "
            f"{evidence.source} inputs (tolerance {tolerance:.3g}: {FLOAT_TOLERANCE:g} + {FLOAT_RELATIVE_TOLERANCE:g} "
            f"× the largest output); the {artifact.format} export is wrong")
    check = {"kind": "max_abs_diff", "inputs": evidence.source, "samples": n,
             "max_abs_diff": diff, "tolerance": round(tolerance, 9)}
    # Beyond the numeric check, fp32 accuracy and agreement are measured like the rest.
    scores = got if n == len(evidence.x) else runner.predict(evidence.x)
    return Verdict(artifact, check, accuracy(scores, evidence.labels),
                   agreement(scores, evidence.reference))
