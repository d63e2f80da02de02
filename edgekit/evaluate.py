"""Accuracy and agreement from class scores. No runtime here: runners produce the scores."""

from __future__ import annotations

import numpy as np


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def accuracy(scores: np.ndarray, labels: np.ndarray | None) -> dict | None:
    """{"top1", "top5"} or None when there are no labels."""
    if labels is None:
        return None
    return {"top1": round(top_k_accuracy(scores, labels, 1), 6),
            "top5": round(top_k_accuracy(scores, labels, 5), 6)}


def agreement(scores: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of samples whose top-1 class equals the reference's."""
    return float(np.mean(np.argmax(scores, axis=1) == np.argmax(reference, axis=1)))
