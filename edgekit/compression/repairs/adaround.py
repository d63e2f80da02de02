"""Learned weight rounding (after Nagel et al., "Up or Down? Adaptive Rounding for Post-Training
Quantization", 2020: AdaRound).

Rounding every weight to its nearest int8 step minimizes each weight's own error, not the layer's:
the errors of weights that read correlated inputs add up in the output. AdaRound chooses, weight by
weight, the step below or the step above so that the layer's output on real inputs moves least.

The output error of a kernel change ΔW is exact and cheap to evaluate here: over the calibration
inputs, E‖ΔWᵀp‖² = Σ_c ΔW_cᵀ G ΔW_c, where p is the input patch an output reads and G = E[p pᵀ]
(one G per channel for a depthwise conv, whose channels read only their own input). G and E[p]
are gathered in one streamed pass over the data; the optimization then runs no convolution at all,
so a layer costs K²·C multiply-adds per iteration (K patch length, C channels), not a pass over the data.

The grid is the one every converter edgekit drives computes from the kernel it is given
(repairs/bias.py quantize_weights): symmetric, step max|w| / 127 per output channel or per tensor.
Each channel's largest weight keeps ±127, so the converter computes the same step from the rounded
kernel; the kernel is stored as q × step in float, which the converter turns back into q exactly
(the written files are checked for it: edgekit.formats.weights). The mean shift the chosen rounding
leaves, ΔWᵀE[p], is subtracted from the bias, as bias correction does for nearest rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgekit.compression.repairs.bias import INT8_STEPS
from edgekit.compression.repairs.equalize import folded_working_copy

ITERATIONS = 1000
LEARNING_RATE = 0.03
REGULARIZATION = 10.0  # weight of the term that drives each soft choice to 0 or 1 (tuned: benchmarks/adaround.py)
WARMUP = 0.2  # share of the iterations run on the output error alone
BETA = (20.0, 2.0)  # the regularizer's exponent, annealed: loose at first, sharp at the end
ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch: h reaches exactly 0 and 1
MAX_SAMPLES = 256
BATCH = 16
MOMENT_FLOATS = 64 * 2 ** 20  # second moments gathered per pass over the data (256 MB)
# Input patches are far from full rank (a project conv reads an expansion of a few channels): G's
# eigenvectors past this share of its trace are dropped while searching, which cuts EfficientNetB0's
# search 5×; the kept choice is still measured with the whole G.
KEPT_ENERGY = 1 - 1e-6


@dataclass
class RoundingResult:
    model: object
    rounded: list[dict] = field(default_factory=list)  # {"layer", "weights", "changed", "error_nearest", "error_chosen"}
    left_alone: list[dict] = field(default_factory=list)  # {"layer", "why"}
    folded: list[str] = field(default_factory=list)
    chosen: dict[str, np.ndarray] = field(default_factory=dict)  # layer → its int8 kernel, Keras layout


@dataclass
class _Moments:
    second: np.ndarray  # (K, K), or (C, K, K) for a depthwise conv
    mean: np.ndarray  # (K,), or (K, C)


def learn_rounding(model, x: np.ndarray, per_tensor: bool, owned: bool = False) -> RoundingResult:
    """A model (BatchNorm folded) whose conv/dense kernels sit on the int8 grid where AdaRound
    chose; the model passed in is not changed unless `owned` (the caller's own copy)."""
    working, folded = folded_working_copy(model, owned)
    targets, left_alone = _targets(working)
    if not targets:
        return RoundingResult(working, [], left_alone, folded)
    moments: dict[str, _Moments] = {}
    for group in _groups(targets):  # every pass reads the float model: kernels change only after
        moments.update(zip((layer.name for layer in group), _gather(working, group, x[:MAX_SAMPLES])))
    result = RoundingResult(working, [], left_alone, folded)
    for layer in targets:
        q, record = _round_layer(layer, moments.pop(layer.name), per_tensor)
        result.chosen[layer.name] = q
        result.rounded.append(record)
    return result


def _targets(model) -> tuple[list, list[dict]]:
    targets, left_alone = [], []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in ("Conv2D", "DepthwiseConv2D", "Dense"):
            continue
        if len(layer._inbound_nodes) != 1:  # noqa: SLF001
            why = "it is called more than once"
        elif kind != "Dense" and getattr(layer, "data_format", "channels_last") != "channels_last":
            why = "channels-first data"
        elif kind == "DepthwiseConv2D" and layer.depth_multiplier != 1:
            why = "a depthwise layer with a channel multiplier"
        elif kind == "Conv2D" and getattr(layer, "groups", 1) != 1:
            why = "a grouped convolution"
        elif _moment_floats(layer) > MOMENT_FLOATS:  # VGG16's fc1: 25,088 inputs, a 2.5 GB second moment
            why = (f"its {_patch_length(layer):,}-value inputs would need a "
                   f"{4 * _moment_floats(layer) / 2 ** 30:.1f} GiB second moment (rounded to nearest)")
        else:
            targets.append(layer)
            continue
        left_alone.append({"layer": layer.name, "why": why})
    return targets, left_alone


def _kernel_shape(layer) -> tuple:
    return tuple(layer.weights[0].shape)  # a DepthwiseConv2D's is depthwise_kernel


def _patch_length(layer) -> int:
    kernel = _kernel_shape(layer)
    return int(np.prod(kernel[:-1])) if type(layer).__name__ != "DepthwiseConv2D" else int(kernel[0] * kernel[1])


def _moment_floats(layer) -> int:
    k = _patch_length(layer)
    return k * k * (int(_kernel_shape(layer)[2]) if type(layer).__name__ == "DepthwiseConv2D" else 1)


def _groups(targets: list) -> list[list]:
    """Targets in groups whose second moments fit MOMENT_FLOATS: one pass over the data each."""
    groups, size = [[]], 0
    for layer in targets:
        floats = _moment_floats(layer)
        if groups[-1] and size + floats > MOMENT_FLOATS:
            groups.append([])
            size = 0
        groups[-1].append(layer)
        size += floats
    return groups


def _gather(model, group: list, x: np.ndarray) -> list[_Moments]:
    from edgekit.support.keras_compat import tf_keras

    taps = tf_keras().Model(model.inputs, [layer.input for layer in group])
    sums = [None] * len(group)
    count = [0] * len(group)
    for start in range(0, len(x), BATCH):
        inputs = taps(x[start:start + BATCH], training=False)
        inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        for i, (layer, value) in enumerate(zip(group, inputs)):
            patches = _patches(layer, value)
            second, total = _batch_moments(layer, patches)
            sums[i] = (second, total) if sums[i] is None else (sums[i][0] + second, sums[i][1] + total)
            count[i] += int(patches.shape[0])
    return [_Moments((s / n).astype(np.float32), (t / n).astype(np.float32)) for (s, t), n in zip(sums, count)]


def _patches(layer, value):
    """Every input patch one output reads, one row each: (N, K), or (N, K, C) for a depthwise conv.
    A patch is ordered (row, column, channel), as the kernel reshapes to (K, C)."""
    import tensorflow as tf

    kind = type(layer).__name__
    if kind == "Dense":
        return tf.reshape(value, (-1, value.shape[-1]))
    kh, kw = layer.kernel_size
    if (kh, kw) == (1, 1) and tuple(layer.strides) == (1, 1):
        flat = value
    else:
        flat = tf.image.extract_patches(value, sizes=[1, kh, kw, 1], strides=[1, *layer.strides, 1],
                                        rates=[1, *layer.dilation_rate, 1], padding=layer.padding.upper())
    if kind == "DepthwiseConv2D":
        return tf.reshape(flat, (-1, kh * kw, value.shape[-1]))
    return tf.reshape(flat, (-1, flat.shape[-1]))


def _batch_moments(layer, patches) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow as tf

    if type(layer).__name__ == "DepthwiseConv2D":
        second = tf.einsum("nkc,nlc->ckl", patches, patches)
    else:
        second = tf.matmul(patches, patches, transpose_a=True)
    return second.numpy().astype(np.float64), tf.reduce_sum(patches, axis=0).numpy().astype(np.float64)


def _matrix(layer, kernel: np.ndarray) -> np.ndarray:
    """The kernel as (K, C): one column per output channel."""
    return kernel.reshape(-1, kernel.shape[-2] if type(layer).__name__ == "DepthwiseConv2D" else kernel.shape[-1])


def _round_layer(layer, moments: _Moments, per_tensor: bool) -> tuple[np.ndarray, dict]:
    weights = layer.get_weights()
    kernel = weights[0]
    w = _matrix(layer, kernel).astype(np.float32)
    reach = np.abs(w).max() if per_tensor else np.abs(w).max(axis=0)
    step = np.where(np.asarray(reach) > 0, np.asarray(reach) / INT8_STEPS, 1.0).astype(np.float32)
    scaled = w / step
    nearest = np.clip(np.round(scaled), -INT8_STEPS, INT8_STEPS)
    extreme = np.abs(scaled) >= INT8_STEPS - 1e-3  # keeps ±127, so the converter finds the same step
    depthwise = type(layer).__name__ == "DepthwiseConv2D"
    learned = _learn(scaled, step, w, moments.second, depthwise)
    q = np.where(extreme, nearest, np.clip(learned, -INT8_STEPS, INT8_STEPS))
    error_nearest = _output_error(nearest * step - w, moments.second, depthwise)
    error_chosen = _output_error(q * step - w, moments.second, depthwise)
    if error_chosen > error_nearest:  # the search is a heuristic: never worse than rounding to nearest
        q, error_chosen = nearest, error_nearest
    rounded = (q * step).astype(np.float32)
    shift = _mean_shift(rounded - w, moments.mean, depthwise)
    weights[0] = rounded.reshape(kernel.shape)
    if layer.use_bias:
        weights[1] = (weights[1] - shift).astype(np.float32)
    layer.set_weights(weights)
    energy = _output_error(w, moments.second, depthwise) or 1.0
    record = {"layer": layer.name, "weights": int(q.size), "changed": int(np.sum(q != nearest)),
              "error_nearest": round(error_nearest / energy, 8), "error_chosen": round(error_chosen / energy, 8),
              "bias_corrected": bool(layer.use_bias)}
    return q.reshape(kernel.shape).astype(np.int8), record


def _output_error(delta: np.ndarray, second: np.ndarray, depthwise: bool) -> float:
    """E over the calibration patches of Σ_c (ΔW_cᵀ p)²."""
    delta = delta.astype(np.float64)
    if depthwise:
        return float(np.einsum("ckl,kc,lc->", second, delta, delta))
    return float(np.sum((second @ delta) * delta))


def _mean_shift(delta: np.ndarray, mean: np.ndarray, depthwise: bool) -> np.ndarray:
    return np.sum(delta * mean, axis=0) if depthwise else delta.T @ mean


def _learn(scaled: np.ndarray, step: np.ndarray, w: np.ndarray, second: np.ndarray, depthwise: bool) -> np.ndarray:
    """The integer each weight rounds to: floor(w / step) plus AdaRound's learned 0 or 1."""
    import tensorflow as tf

    low = np.floor(scaled)
    rest = np.clip(scaled - low, 1e-4, 1 - 1e-4)
    start = -np.log((ZETA - GAMMA) / (rest - GAMMA) - 1)  # h(start) = rest: begins at the float weight
    # the output error is measured against rounding to nearest's: the sharpening term's weight then
    # means the same for every layer, whatever its scale
    nearest = np.clip(np.round(scaled), -INT8_STEPS, INT8_STEPS) * step - w
    energy = max(_output_error(nearest, second, depthwise), 1e-30)
    weighting = second if depthwise else _factor(second)
    up = _optimize(tf.constant(start, tf.float32), tf.constant(low * step, tf.float32),
                   tf.constant(np.broadcast_to(step, w.shape), tf.float32), tf.constant(w), tf.constant(weighting),
                   tf.constant(energy, tf.float32), depthwise)
    return low + (up.numpy() >= 0.5)


def _factor(second: np.ndarray) -> np.ndarray:
    """F with FᵀF ≈ G, (r, K): ‖F ΔW‖² is the output error, at r·K·C a step instead of K²·C."""
    values, vectors = np.linalg.eigh(second.astype(np.float64))
    values, vectors = np.clip(values[::-1], 0, None), vectors[:, ::-1]
    kept = int(np.searchsorted(np.cumsum(values) / max(values.sum(), 1e-30), KEPT_ENERGY)) + 1
    return (np.sqrt(values[:kept])[:, None] * vectors[:, :kept].T).astype(np.float32)


_SEARCHES: dict = {}
JIT_WEIGHTS = 20_000  # XLA halves a large layer's search; on a small one its compile costs more than it saves


def _optimize(start, low, step, w, weighting, energy, depthwise: bool):
    """`weighting`: the per-channel second moments of a depthwise conv, else the factor F of G.
    One traced search per (kind, compiled): layers of the same shapes reuse its trace."""
    jit = int(np.prod(start.shape)) >= JIT_WEIGHTS
    if (depthwise, jit) not in _SEARCHES:
        _SEARCHES[(depthwise, jit)] = _traced_search(depthwise, jit)
    return _SEARCHES[(depthwise, jit)](start, low, step, w, weighting, energy)


def _traced_search(depthwise: bool, jit: bool):
    import tensorflow as tf

    @tf.function(jit_compile=jit)
    def run(v, low, step, w, weighting, energy):
        m, s = tf.zeros_like(v), tf.zeros_like(v)
        warm = int(WARMUP * ITERATIONS)
        for i in tf.range(ITERATIONS):
            beta = BETA[1] + (BETA[0] - BETA[1]) * (1 - tf.cast(tf.maximum(i - warm, 0), tf.float32) / (ITERATIONS - warm))
            with tf.GradientTape() as tape:
                tape.watch(v)
                h = tf.clip_by_value(tf.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)
                delta = low + h * step - w
                if depthwise:
                    error = tf.einsum("ckl,kc,lc->", weighting, delta, delta)
                else:
                    error = tf.reduce_sum(tf.square(tf.matmul(weighting, delta)))
                sharpen = tf.reduce_mean(1 - tf.pow(tf.abs(2 * h - 1), beta))
                loss = error / energy + tf.where(i >= warm, float(REGULARIZATION), 0.0) * sharpen
            grad = tape.gradient(loss, v)
            t = tf.cast(i + 1, tf.float32)
            m = 0.9 * m + 0.1 * grad
            s = 0.999 * s + 0.001 * grad * grad
            v = v - LEARNING_RATE * (m / (1 - 0.9 ** t)) / (tf.sqrt(s / (1 - 0.999 ** t)) + 1e-8)
        return tf.clip_by_value(tf.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)

    return run
