"""Class scores → classes, with one tie rule for accuracy, agreement, confusion and the
accuracy-aware searches (numpy only: it runs on devices with just one runtime)."""

from __future__ import annotations

import numpy as np


def ranked(scores: np.ndarray) -> np.ndarray:
    """Classes from most to least likely; among equal scores the lower class first (as
    np.argmax picks), so accuracy, agreement and confusion all break ties the same way."""
    return np.argsort(-scores, axis=1, kind="stable")


def top1(scores: np.ndarray) -> np.ndarray:
    return ranked(scores)[:, 0]


def top_classes(scores: np.ndarray) -> np.ndarray:
    """(samples, classes) mask of every class that reaches the sample's highest score: more
    than one where scores tie exactly, as int8 outputs (and a QAT model's quantized logits) do
    when two classes land on the same step."""
    return scores == np.max(scores, axis=1, keepdims=True)
