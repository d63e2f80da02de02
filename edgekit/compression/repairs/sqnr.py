"""Per-layer int8 SQNR before and after each repair (report.json repairs.layer_sqnr_db).

Each conv/dense layer alone, on the evidence inputs: its int8 form (weights on the converters'
grid, repairs/bias.py quantize_weights, which is where learned rounding left them; input rounded
to 256 levels over its own min/max, as per-tensor activation quantization does) against its float
form, SQNR = 10·log10(Σy² / Σ(y − ŷ)²). The float form a stage is measured against is the model
after the last repair that keeps the function (BatchNorm rewrite, equalization): bias correction
and learned rounding change the float layer on purpose, to bring its int8 form closer to the one
before, so they are measured against that one. The inputs are the float model's, so a layer's
number is its own error, not the error it inherits.
"""

from __future__ import annotations

import numpy as np

SAMPLES = 32
BATCH = 8
KERNELS = ("Conv2D", "DepthwiseConv2D", "Dense")


def layer_sqnr(quantized, reference, x: np.ndarray, per_tensor: bool) -> dict[str, float]:
    """{layer: SQNR in dB} of `quantized`'s conv/dense layers in int8 against the same-named layers
    of `reference` in float (both BatchNorm-folded tf_keras models of the same function)."""
    import tensorflow as tf

    from edgekit.compression.repairs.bias import _linear_part, quantize_weights
    from edgekit.compression.repairs.equalize import _out_axis
    from edgekit.support.keras_compat import tf_keras

    names = {layer.name for layer in quantized.layers if type(layer).__name__ in KERNELS}
    pairs = [(layer, quantized.get_layer(layer.name)) for layer in reference.layers
             if layer.name in names and type(layer).__name__ in KERNELS and len(layer._inbound_nodes) == 1]  # noqa: SLF001
    if not pairs:
        return {}
    taps = tf_keras().Model(reference.inputs, [ref.input for ref, _ in pairs])
    rounded = [tf.constant(quantize_weights(q.get_weights()[0], _out_axis(q), per_tensor)) for _, q in pairs]
    signal, noise = np.zeros(len(pairs)), np.zeros(len(pairs))
    for start in range(0, min(len(x), SAMPLES), BATCH):
        inputs = taps(x[start:min(start + BATCH, SAMPLES)], training=False)
        inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        for i, ((ref, q), value, kernel) in enumerate(zip(pairs, inputs, rounded)):
            exact = _with_bias(ref, _linear_part(ref, value, ref.weights[0]))  # kernel or depthwise_kernel
            approx = _with_bias(q, _linear_part(q, _fake_quantized(value), kernel))
            signal[i] += float(tf.reduce_sum(tf.square(exact)))
            noise[i] += float(tf.reduce_sum(tf.square(exact - approx)))
    return {ref.name: round(10 * np.log10(s / n), 2) if n > 0 else None
            for (ref, _), s, n in zip(pairs, signal, noise)}


def _with_bias(layer, out):
    return out + layer.bias if getattr(layer, "use_bias", False) else out


def _fake_quantized(value):
    import tensorflow as tf

    low, high = tf.minimum(tf.reduce_min(value), 0.0), tf.maximum(tf.reduce_max(value), 0.0)
    step = tf.maximum((high - low) / 255.0, 1e-12)
    return tf.round((value - low) / step) * step + low


def table(stages: list[tuple[str, dict[str, float]]]) -> dict:
    """report.json's layer_sqnr_db: one row per layer, one number per stage (None where the layer
    does not exist at that stage, such as a BatchNorm before it became a conv)."""
    layers = list(dict.fromkeys(name for _, values in stages for name in values))
    return {"stages": [name for name, _ in stages], "inputs": SAMPLES,
            "layers": [{"layer": name, "sqnr_db": [values.get(name) for _, values in stages]} for name in layers]}
