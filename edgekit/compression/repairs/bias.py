"""Empirical bias correction (after Nagel et al., "Data-Free Quantization", 2019, section 4.2).

Rounding a layer's weights to int8 adds an error ΔW = Q(W) − W to every output, and its mean over
real inputs, E[ΔW · x], is not zero: a per-tensor grid that rounds a narrow channel's weights
mostly to zero shifts that channel's output by a constant. That constant is measured here on the
calibration data and subtracted from the layer's bias, so the int8 file's outputs are centred
where the float model's are.

Q is the grid every converter edgekit drives puts conv/dense weights on: symmetric int8, scale
max|w| / 127, one scale per output channel or (per-tensor) one per layer. The inputs each layer
sees are the float model's. BatchNormalization is folded first (edgekit.compression.stages.fold),
so a conv's bias is the one the converter's folded kernel will use; a conv/dense layer with no
bias to carry the correction is left alone and named.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgekit.compression.repairs.equalize import EQUALIZABLE, _along, _out_axis, folded_working_copy

INT8_STEPS = 127  # symmetric narrow range: weights in [-127, 127]
BATCH = 16
MAX_SAMPLES = 256  # the mean settles long before: more samples only cost time


@dataclass
class BiasResult:
    model: object
    corrected: list[dict] = field(default_factory=list)  # {"layer", "largest_shift", "shift_over_bias_range"}
    left_alone: list[dict] = field(default_factory=list)  # {"layer", "why"}
    folded: list[str] = field(default_factory=list)


def quantize_weights(kernel: np.ndarray, axis: int, per_tensor: bool) -> np.ndarray:
    """The kernel on the converters' symmetric int8 grid, back in float."""
    moved = np.moveaxis(kernel, axis, 0)
    reach = np.abs(moved).max() if per_tensor else np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
    scale = np.where(np.asarray(reach) > 0, np.asarray(reach) / INT8_STEPS, 1.0)
    step = scale if per_tensor else _along(scale, kernel.ndim, axis)
    return (np.clip(np.round(kernel / step), -INT8_STEPS, INT8_STEPS) * step).astype(np.float32)


def correct_biases(model, x: np.ndarray, per_tensor: bool, owned: bool = False) -> BiasResult:
    """A model (BatchNorm folded) whose conv/dense biases cancel the mean int8 weight-rounding error
    on `x`; the model passed in is not changed unless `owned` (the caller's own copy)."""
    working, folded = folded_working_copy(model, owned)
    targets, left_alone = _targets(working)
    if not targets:
        return BiasResult(working, [], left_alone, folded)
    shifts = _mean_errors(working, targets, x[:MAX_SAMPLES], per_tensor)
    corrected = []
    for layer, shift in zip(targets, shifts):
        weights = layer.get_weights()
        spread = float(np.ptp(weights[1])) or 1.0
        weights[1] = (weights[1] - shift).astype(np.float32)
        layer.set_weights(weights)
        corrected.append({"layer": layer.name, "largest_shift": round(float(np.max(np.abs(shift))), 6),
                          "shift_over_bias_range": round(float(np.max(np.abs(shift))) / spread, 4)})
    return BiasResult(working, corrected, left_alone, folded)


def _targets(model) -> tuple[list, list[dict]]:
    targets, left_alone = [], []
    for layer in model.layers:
        if type(layer).__name__ not in EQUALIZABLE:
            continue
        if len(layer._inbound_nodes) != 1:  # noqa: SLF001
            left_alone.append({"layer": layer.name, "why": "it is called more than once"})
        elif not layer.use_bias:
            left_alone.append({"layer": layer.name, "why": "it has no bias to carry the correction"})
        elif type(layer).__name__ == "DepthwiseConv2D" and layer.depth_multiplier != 1:
            left_alone.append({"layer": layer.name, "why": "a depthwise layer with a channel multiplier"})
        else:
            targets.append(layer)
    return targets, left_alone


def _mean_errors(model, targets: list, x: np.ndarray, per_tensor: bool) -> list[np.ndarray]:
    """E[ΔW · input] per output channel of each target layer, over the batch and every position."""
    import tensorflow as tf

    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    taps = keras.Model(model.inputs, [layer.input for layer in targets])
    errors = []
    for layer in targets:
        kernel = layer.get_weights()[0]
        errors.append(quantize_weights(kernel, _out_axis(layer), per_tensor) - kernel)
    sums = [np.zeros(layer.get_weights()[1].shape, np.float64) for layer in targets]
    for start in range(0, len(x), BATCH):
        inputs = taps(x[start:start + BATCH], training=False)
        inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        for i, (layer, value, delta) in enumerate(zip(targets, inputs, errors)):
            out = _linear_part(layer, value, tf.constant(delta))
            sums[i] += tf.reduce_sum(tf.reshape(out, (-1, out.shape[-1])), axis=0).numpy() / _positions(out)
    return [(total / len(x)).astype(np.float32) for total in sums]


def _positions(out) -> int:
    return int(np.prod(out.shape[1:-1])) if len(out.shape) > 2 else 1


def _linear_part(layer, inputs, kernel):
    """The layer's kernel applied to its input, without bias or activation."""
    import tensorflow as tf

    kind = type(layer).__name__
    if kind == "Dense":
        return tf.tensordot(inputs, kernel, [[-1], [0]])
    if kind == "DepthwiseConv2D":
        strides = (1, *layer.strides, 1)
        return tf.nn.depthwise_conv2d(inputs, kernel, strides, layer.padding.upper(), dilations=layer.dilation_rate)
    return layer.convolution_op(inputs, kernel)
