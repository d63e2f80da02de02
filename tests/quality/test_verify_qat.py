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
