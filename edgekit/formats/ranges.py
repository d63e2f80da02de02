"""Activation ranges for int8 calibration other than min/max: percentile and MSE.

Min/max lets one extreme value (a corrupt calibration image, a rare spike) set a tensor's
int8 step for every input; percentile drops the rarest values, MSE picks the range whose
expected squared error (rounding inside, clipping outside) is smallest. Both are chosen from a
histogram of each activation tensor over the calibration data, streamed so that memory stays
one batch of activations (ONNX Runtime's own histogram calibrators keep every batch's outputs).
TFLite and ONNX use these functions; OpenVINO uses NNCF's own estimators (openvino/export.py).
"""

from __future__ import annotations

import numpy as np

# --ranges (edgekit/compression/config.py): "default" is each library's own calibration (TFLite and
# ONNX Runtime: min/max; NNCF: its own), then "minmax", "percentile", "mse"
FROM_HISTOGRAMS = ("percentile", "mse")  # what edgekit computes for TFLite and ONNX
PERCENTILE = 99.99  # of each tensor's values over the calibration data, on each side
BINS = 32_768  # fine enough that a value 500× the rest still leaves the real ones some 65 bins
LEVELS = 256  # an 8-bit activation grid
MSE_CANDIDATES = 96  # per end, geometric and linear: about 190² pairs


def describe(method: str) -> str:
    """How report.json's artifact settings name the ranges."""
    return {"default": "min/max", "minmax": "min/max", "percentile": f"percentile {PERCENTILE} (edgekit histograms)",
            "mse": "MSE (edgekit histograms)"}[method]


class Histograms:
    """Per-tensor value histograms on fixed edges spanning each tensor's observed min/max (and 0)."""

    def __init__(self, limits: dict[str, tuple[float, float]]):
        self.limits = {name: (min(float(lo), 0.0), max(float(hi), 0.0)) for name, (lo, hi) in limits.items()}
        self.counts = {name: np.zeros(BINS, np.int64) for name in self.limits}

    def add(self, name: str, values: np.ndarray) -> None:
        lo, hi = self.limits[name]
        if hi <= lo:
            return
        index = ((np.asarray(values, np.float32).ravel() - lo) * (BINS / (hi - lo))).astype(np.int64)
        self.counts[name] += np.bincount(np.clip(index, 0, BINS - 1), minlength=BINS)

    def ranges(self, method: str) -> dict[str, tuple[float, float]]:
        return {name: choose_range(self.counts[name], *self.limits[name], method) for name in self.limits}

    def narrowed(self, chosen: dict[str, tuple[float, float]]) -> dict:
        """report.json's count: the tensors whose chosen range is narrower than min/max by over 1%."""
        count = sum((high - low) < 0.99 * (self.limits[n][1] - self.limits[n][0]) for n, (low, high) in chosen.items())
        return {"tensors": len(chosen), "narrowed": int(count)}


def choose_range(counts: np.ndarray, lo: float, hi: float, method: str) -> tuple[float, float]:
    """The (low, high) to quantize a tensor to, from its histogram over [lo, hi]; 0 always inside."""
    if method in ("default", "minmax") or hi <= lo or counts.sum() == 0:
        return lo, hi
    edges = np.linspace(lo, hi, len(counts) + 1)
    if method == "percentile":
        return _percentile_range(counts, edges)
    if method == "mse":
        return _mse_range(counts, edges)
    raise ValueError(f"unknown range method {method!r}")


def _percentile_range(counts: np.ndarray, edges: np.ndarray) -> tuple[float, float]:
    cumulative = np.cumsum(counts) / counts.sum()
    tail = 1 - PERCENTILE / 100
    low = edges[int(np.searchsorted(cumulative, tail, side="right"))]
    high = edges[int(np.searchsorted(cumulative, 1 - tail, side="left")) + 1]
    return min(float(low), 0.0), max(float(high), 0.0)


def _mse_range(counts: np.ndarray, edges: np.ndarray) -> tuple[float, float]:
    """The (low, high) of least expected error over a grid of candidates: each end shrunk by up to
    1000×, geometrically (a hot pixel 500× the rest needs the fine end), every pair tried."""
    centers = (edges[:-1] + edges[1:]) / 2
    lo, hi = float(edges[0]), float(edges[-1])
    shrink = np.unique(np.concatenate([np.geomspace(1, 1e-3, MSE_CANDIDATES),
                                       np.linspace(1, 0, MSE_CANDIDATES, endpoint=False)]))
    lows = lo * shrink if lo < 0 else np.zeros(1)
    highs = hi * shrink if hi > 0 else np.zeros(1)
    errors = expected_error(counts, centers, lows[:, None], highs[None, :])
    i, j = np.unravel_index(int(np.argmin(errors)), errors.shape)
    return float(lows[i]), float(highs[j])


def expected_error(counts, centers, low, high):
    """Sum of squared quantization error over the histogram for the 8-bit grid on [low, high]
    (arrays broadcast): step²/12 for each value inside, its distance to the edge squared outside.
    Prefix sums of n, n·c and n·c² make each candidate O(1)."""
    n = counts.astype(np.float64)
    c = centers.astype(np.float64)
    p0, p1, p2 = (np.concatenate([[0.0], np.cumsum(v)]) for v in (n, n * c, n * c * c))
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    below = np.searchsorted(c, low, side="left")  # centers under low
    upto = np.searchsorted(c, high, side="right")  # centers at or under high
    clip_low = p2[below] - 2 * low * p1[below] + low * low * p0[below]
    clip_high = (p2[-1] - p2[upto]) - 2 * high * (p1[-1] - p1[upto]) + high * high * (p0[-1] - p0[upto])
    step = (high - low) / (LEVELS - 1)
    inside = np.maximum(p0[upto] - p0[below], 0) * step * step / 12
    return np.maximum(clip_low, 0) + np.maximum(clip_high, 0) + inside
