"""Quantize a QAT classifier's logits over the range that decides its top-1.

tfmot's moving-average range for the last Dense's logits follows every batch's minimum, the
most negative logit of any wrong class: on a trained EfficientNetB0 it spanned ~245 logits, so
one int8 step was 0.96 (a factor of 2.6 between two classes' probabilities). 7% of the
validation inputs then had their top two classes on the same step, an exact tie that the QAT
model and each file broke their own way. Softmax cannot tell a class WINDOW logits below the
top from one further down (e^-16 ≈ 1e-7), so the range only needs to reach a little
below the lowest top logit seen; below that, logits are clipped with no effect on any
probability that int8 or top-1 can see; likewise at the top (_deciding_range). The range is
only ever narrowed, and it keeps 0 inside (a quantized range must hold zero exactly).
"""

from __future__ import annotations

import numpy as np

WINDOW = 16.0  # logits this far under a sample's top have probability < 1e-7 of the top's
# Under the lowest top logit of the calibration data the range reaches twice WINDOW: an unseen
# input only loses its top-1 to clipping if its top logit is WINDOW under all of those.
LOW_REACH = 2 * WINDOW
RANGE_KINDS = ("pre_activation", "post_activation", "output")  # tfmot's names, softmax first


def tighten_classifier_range(qat_model, x: np.ndarray, batch: int = 64) -> dict | None:
    """Narrow the last Dense layer's logit range to the part that decides any top-1 or
    probability on `x` (_deciding_range); returns what changed, or None when nothing narrows."""
    from edgekit.support.keras_compat import tf_keras

    wrapper = _classifier(qat_model.layers[-1])
    inner = getattr(wrapper, "layer", None)
    if type(inner).__name__ != "Dense" or not len(x):
        return None
    variables = _range_variables(wrapper)
    if variables is None:
        return None
    kind, low_var, high_var = variables
    features = tf_keras().Model(qat_model.inputs, wrapper.input)
    kernel, bias = _variable(wrapper, "kernel"), _variable(wrapper, "bias") if inner.use_bias else 0.0
    if kernel is None or bias is None:
        return None
    logits = np.concatenate([features(x[k:k + batch], training=False).numpy() @ kernel + bias
                             for k in range(0, len(x), batch)])
    low, high = float(low_var.numpy()), float(high_var.numpy())
    new_low, new_high = _deciding_range(logits)
    new_low, new_high = min(0.0, max(low, new_low)), max(0.0, min(high, new_high))
    if (new_high - new_low) >= (high - low) * 0.99:
        return None
    low_var.assign(new_low)
    high_var.assign(new_high)
    return {"layer": inner.name, "quantizer": kind, "before": [round(low, 4), round(high, 4)],
            "after": [round(new_low, 4), round(new_high, 4)], "window": WINDOW}


def _deciding_range(logits: np.ndarray) -> tuple[float, float]:
    """From LOW_REACH under the lowest top logit to the highest logit that still shows: a top logit
    more than WINDOW over its runner-up may be clipped to runner-up + WINDOW, which keeps its
    top-1 and moves no probability by more than e^-WINDOW (one confident outlier spread the range
    of a trained EfficientNetB0 to 85 where most top logits sat under 20)."""
    ordered = np.sort(logits, axis=1)
    top, runner_up = ordered[:, -1], ordered[:, -2] if logits.shape[1] > 1 else ordered[:, -1]
    return float(np.min(top)) - LOW_REACH, float(np.max(np.minimum(top, runner_up + WINDOW)))


def _classifier(last):
    """The Dense layer that writes the logits: the last layer, or the one before a separate softmax."""
    if type(getattr(last, "layer", last)).__name__ in ("Activation", "Softmax"):
        nodes = getattr(last, "_inbound_nodes", None) or []
        inbound = nodes[0].inbound_layers if len(nodes) == 1 else None
        return inbound if inbound is not None and not isinstance(inbound, (list, tuple)) else None
    return last


def _variable(wrapper, name: str):
    """The float value of the wrapped layer's variable (tfmot swaps `layer.kernel` for its
    fake-quantized tensor once the wrapper has been called in a graph)."""
    for weight in wrapper.weights:
        if weight.name.split(":")[0].split("/")[-1] == name:
            return weight.numpy()
    return None


def _range_variables(wrapper):
    """(kind, min variable, max variable) of the layer's activation range, or None."""
    by_name = {w.name.split(":")[0].split("/")[-1]: w for w in wrapper.weights}
    for kind in RANGE_KINDS:
        low, high = by_name.get(f"{kind}_min"), by_name.get(f"{kind}_max")
        if low is not None and high is not None and low.shape.num_elements() == 1:
            return kind, low, high
    return None
