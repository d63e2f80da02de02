"""The cost model a calibrated profile carries, per runtime, precision and thread count:

    time(file) = overhead + streamed × s + Σ_layers  MACs_l × a_k + elements_l × b_k + weights_l × c_k + d_k

k is the layer's kind (conv, pointwise, depthwise, dense: edgekit/measure/layer_work.py), or for a
layer without MACs its group (elementwise, activation, pool, move, fallback: edgekit/formats/facts.py), elements_l its
activations read and written, weights_l its parameters. Each kind is priced on its
own because the kernels differ: an int8 conv over 32 channels costs several times more per MAC than
one over 256 (the per-element term), a depthwise layer is bound by the activations it streams, a
batch-1 dense layer by its weights. streamed: the file's weight bytes past the measuring machine's
largest cache, which come from memory on every run (ONNX Runtime's profile of ResNet50-96 fp32,
100 MB of weights against a 32 MB cache here: its 3×3 convs with more than 2 MB of weights each ran
at 32 GMAC/s where the suite's, in files that fit the cache, ran at 48-58).

The model is linear in its non-negative prices, so the fit is a non-negative least squares on
relative error (each row divided by its measured time: a 20 µs layer counts as much as a 20 ms
network): one global optimum, no starting point, milliseconds to solve.
"""

from __future__ import annotations

import math

import numpy as np

MAC_KINDS = ("conv", "pointwise", "depthwise", "dense")
# layers without MACs, by edgekit.formats.facts.other_group; fallback: ops the runtime's fast path
# leaves to slower kernels (int8 average pools and lone ReLUs outside LiteRT's XNNPACK delegate:
# edgekit/formats/tflite/facts.py)
OP_GROUPS = ("elementwise", "activation", "pool", "move", "fallback")
# A profile calibrated before a group existed prices that group's ops as this one
STANDS_IN = {"fallback": "pool"}
KINDS = (*MAC_KINDS, *OP_GROUPS)
MAC_TERMS = ("ns_per_mac", "ns_per_element", "ns_per_weight", "us_per_layer")
OP_TERMS = ("ns_per_element", "us_per_layer")
UNIT = {"ns_per_mac": 1e-6, "ns_per_element": 1e-6, "ns_per_weight": 1e-6, "us_per_layer": 1e-3}  # in ms
COLUMNS = [(kind, term) for kind in KINDS for term in (MAC_TERMS if kind in MAC_KINDS else OP_TERMS)]


def streamed_bytes(weight_bytes: int, cache_bytes: int | None) -> float:
    """The weight bytes that do not stay in the cache between runs (0 where the cache is unknown)."""
    return float(max(0, weight_bytes - cache_bytes)) if cache_bytes else 0.0


def features(work, streamed: float = 0.0) -> np.ndarray:
    """A file's row: per kind, its MACs, elements, weights and layers in each price's unit, then its
    streamed weight bytes and the overhead's 1 µs."""
    totals = {kind: {"ns_per_mac": 0.0, "ns_per_element": 0.0, "ns_per_weight": 0.0, "us_per_layer": 0.0}
              for kind in KINDS}
    for layer in work.layers:
        kind = layer.kind if layer.kind in MAC_KINDS else (layer.group or "elementwise")
        counts = totals[kind]
        counts["ns_per_mac"] += layer.macs
        counts["ns_per_element"] += layer.activations
        counts["ns_per_weight"] += layer.weights
        counts["us_per_layer"] += 1
    return np.array([totals[kind][term] * UNIT[term] for kind, term in COLUMNS] + [streamed * 1e-6, 1e-3])


def to_costs(theta: np.ndarray) -> dict:
    """The fitted vector as the profile YAML holds it."""
    costs: dict = {"overhead_us": _round(theta[-1]), "ns_per_streamed_byte": _round(theta[-2])}
    for (kind, term), value in zip(COLUMNS, theta[:-2]):
        costs.setdefault(kind, {})[term] = _round(value)
    return costs


def from_costs(costs: dict) -> np.ndarray:
    def prices(kind: str) -> dict:
        return costs[kind] if costs.get(kind) is not None else costs[STANDS_IN[kind]]
    # a profile calibrated before streaming was priced (suite v1, v2) has no such price: 0
    return np.array([prices(kind)[term] for kind, term in COLUMNS]
                    + [costs.get("ns_per_streamed_byte") or 0.0, costs["overhead_us"]])


def predict_ms(costs: dict, work, streamed: float = 0.0) -> float:
    return float(features(work, streamed) @ from_costs(costs))


def fit(rows: np.ndarray, measured_ms: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """weights: how much each file's relative error counts (the suite's whole networks count more:
    whole networks are what estimates are asked about; held-out keras.applications within ±20%:
    58% → 61%, benchmarks/calibration_check.py)."""
    from scipy.optimize import nnls

    _check(measured_ms)
    weights = np.ones_like(measured_ms) if weights is None else np.asarray(weights, dtype=np.float64)
    scale = weights / measured_ms
    # a term no file exercises gets 0 from nnls; columns are rescaled so each is seen at unit size
    norms = np.abs(rows * scale[:, None]).max(axis=0)
    norms[norms == 0] = 1.0
    solution, _ = nnls(rows * scale[:, None] / norms, weights, maxiter=50 * rows.shape[1])
    return solution / norms


def _check(measured_ms: np.ndarray) -> None:
    bad = [v for v in measured_ms if not (math.isfinite(v) and v > 0)]
    if bad:
        raise ValueError(f"a measured latency of {bad[0]!r} ms is not a positive number")


def leave_one_out(rows: np.ndarray, measured_ms: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """measured / predicted for each file, predicted by a fit without it: the band of an estimate."""
    weights = np.ones_like(measured_ms) if weights is None else np.asarray(weights, dtype=np.float64)
    ratios = np.empty(len(measured_ms))
    for i in range(len(measured_ms)):
        keep = np.arange(len(measured_ms)) != i
        predicted = rows[i] @ fit(rows[keep], measured_ms[keep], weights[keep])
        ratios[i] = measured_ms[i] / predicted if predicted > 0 else np.inf
    return ratios


def _round(value: float) -> float:
    return float(f"{value:.6g}")
