"""The fp32 check scales with the outputs: a correct export of a model with large logits passes,
a wrong one (of any size) is still refused (issue 22: RegNetX002, logits ±1,500, Δ 0.0029)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import VerificationError
from edgekit.quality.verify import FLOAT_TOLERANCE, Evidence, _verify_float, float_tolerance


class _Artifact:
    path, format = Path("m.fp32.tflite"), "tflite"


class _Runner:
    def __init__(self, outputs):
        self.outputs = outputs

    def predict(self, x):
        return self.outputs[:len(x)]


def _logits(scale: float, n: int = 32) -> np.ndarray:
    return (np.random.default_rng(0).normal(0, 1, (n, 10)) * scale).astype(np.float32)


def _check(reference, got):
    evidence = Evidence(x=np.zeros((len(reference), 1)), labels=None, reference=reference, source="validation")
    return _verify_float(_Artifact, _Runner(got), evidence)


def test_probabilities_keep_the_absolute_floor():
    assert float_tolerance(np.full((4, 10), 0.1, np.float32)) == pytest.approx(FLOAT_TOLERANCE, rel=0.02)


def test_large_logits_within_float32_rounding_pass():
    reference = _logits(500.0)  # |logits| up to ~1,500
    verdict = _check(reference, reference + np.float32(0.0029))
    assert verdict.check["max_abs_diff"] == pytest.approx(0.0029, rel=0.05)  # float32 spacing at 1,500: 1.2e-4
    assert verdict.check["tolerance"] > 0.0029


@pytest.mark.parametrize("scale", [1.0, 500.0])
def test_a_wrong_export_is_refused_at_any_scale(scale):
    reference = _logits(scale)
    wrong = reference * np.float32(1.001) + np.float32(0.01)  # 0.1% off: a different model, not rounding
    with pytest.raises(VerificationError, match="export is wrong"):
        _check(reference, wrong)


def test_non_finite_outputs_are_refused():
    reference = _logits(1.0)
    got = reference.copy()
    got[0, 0] = np.nan
    with pytest.raises(VerificationError):
        _check(reference, got)
