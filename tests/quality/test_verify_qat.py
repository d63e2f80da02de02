"""The QAT agreement check: 98%, and on few inputs one rounding flip is not an export bug."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.quality.verify import QATMismatch
from edgekit.quality.verify import Evidence, _verify_qat


class _Artifact:
    path, format, id = Path("m.int8.tflite"), "tflite", "tflite-int8"


def _flipped(reference: np.ndarray, count: int) -> np.ndarray:
    scores = reference.copy()
    scores[:count] = np.roll(scores[:count], 1, axis=1)  # another top-1 class for the first `count`
    return scores


@pytest.mark.parametrize("n, flips, passes", [(16, 1, True), (16, 2, False), (200, 4, True), (200, 5, False)])
def test_allowed_disagreements_scale_with_the_inputs(n, flips, passes):
    reference = np.eye(10, dtype=np.float32)[np.arange(n) % 10]
    evidence = Evidence(x=np.zeros((n, 1)), labels=None, reference=reference, source="validation",
                        int8_reference=reference)
    scores = _flipped(reference, flips)
    if passes:
        assert _verify_qat(_Artifact, scores, evidence).check["against"] == "qat_model"
    else:
        with pytest.raises(QATMismatch, match=f"{flips} differ"):
            _verify_qat(_Artifact, scores, evidence)


def _tied(n: int, ties: int) -> np.ndarray:
    """Scores of n samples; the first `ties` give classes 3 and 7 exactly the same highest score."""
    scores = np.full((n, 10), 0.01, dtype=np.float32)
    scores[np.arange(n), np.arange(n) % 10] = 0.9
    scores[:ties] = 0.01
    scores[:ties, 3] = scores[:ties, 7] = 0.45
    return scores


def test_an_exact_tie_in_the_qat_model_agrees_with_either_tied_class():
    """A QAT model's logits sit on a quantization grid, so two classes can share the top step
    (issue 22: 6 of OpenVINO's 8 disagreements on a trained EfficientNetB0): the file that
    picks class 7 where the model ties 3 and 7 computes the same answer."""
    n, ties = 200, 10
    reference = _tied(n, ties)
    scores = reference.copy()
    scores[:ties, 7] += 0.01  # the file breaks each tie towards the higher class
    evidence = Evidence(x=np.zeros((n, 1)), labels=None, reference=reference, source="validation",
                        int8_reference=reference)
    verdict = _verify_qat(_Artifact, scores, evidence)
    assert verdict.agreement == 1.0 and verdict.check["agreeing_through_ties"] == ties
    # The tie rule counts exact ties only: a class one step below the top is still a disagreement.
    evidence.int8_reference = reference.copy()
    evidence.int8_reference[:ties, 7] -= 1e-6
    with pytest.raises(QATMismatch, match=f"{ties} differ"):
        _verify_qat(_Artifact, scores, evidence)


def test_agreement_up_to_ties_is_symmetric_and_counts_what_the_ties_added():
    from edgekit.quality.evaluation import agreement, agreement_up_to_ties

    tied, decided = _tied(20, 5), _tied(20, 0)
    decided[:5] = 0.01
    decided[:5, 7] = 0.9  # the other side decides each tie for class 7
    assert agreement(decided, tied) == 0.75  # the lower-class convention picks 3 for the tied side
    assert agreement_up_to_ties(decided, tied) == agreement_up_to_ties(tied, decided) == (1.0, 5)
    decided[:5, 7], decided[:5, 1] = 0.01, 0.9  # class 1 is not among the tied ones
    assert agreement_up_to_ties(decided, tied) == (0.75, 0)


def test_a_failure_says_how_sensitive_the_qat_model_itself_is_to_rounding():
    """The measured reason a file can fall short with no export bug (issue 22): the QAT model's own
    top-1 moves when its inputs move by a millionth of their range."""
    from edgekit.quality.verify import NUDGE, rounding_sensitivity

    n = 200
    x = np.linspace(0.0, 1.0, n * 4, dtype=np.float32).reshape(n, 4)
    # Class 0 against a fixed class 1 equal to the unmoved input: any nudge down flips the top-1.
    on_a_knife_edge = lambda inputs: np.stack([inputs[:, 0], x[:, 0]], axis=1)  # noqa: E731
    scores = np.stack([x[:, 0], x[:, 0] - 1.0], axis=1)
    measured = rounding_sensitivity(on_a_knife_edge, x, scores, seed=0)
    assert measured["nudge"] == NUDGE and measured["inputs"] == n and 0.3 < measured["top1_changed"] < 0.7
    steady = rounding_sensitivity(lambda inputs: np.eye(2, dtype=np.float32)[np.arange(len(inputs)) % 2], x,
                                  np.eye(2, dtype=np.float32)[np.arange(n) % 2], seed=0)
    assert steady["top1_changed"] == 0.0
    reference = np.eye(10, dtype=np.float32)[np.arange(n) % 10]
    evidence = Evidence(x=x, labels=None, reference=reference, source="validation", int8_reference=reference,
                        int8_reference_sensitivity=measured)
    with pytest.raises(QATMismatch, match=r"the QAT model itself changes its top-1 on \d+\.\d% of these inputs") as error:
        _verify_qat(_Artifact, _flipped(reference, 10), evidence)
    assert error.value.check["qat_model_top1_changed_by_nudge"] == measured["top1_changed"]
