"""Cross-layer equalization (after Nagel et al., "Data-Free Quantization", 2019).

Two layers A → B with only positively homogeneous operations between them (ReLU, max pooling,
zero padding: f(x / s) = f(x) / s for s > 0) compute the same function when A's output channel i
is divided by s_i and B's input channel i multiplied by it. Choosing s_i = sqrt(r_A,i / r_B,i),
where r is the channel's largest |weight|, gives both the same range: a channel that carries a
hundred times the others' values (an activation outlier) is scaled back into line, and a
per-tensor int8 grid over A's output or over B's weights no longer spends its 256 steps on it.

Pairs are equalized in turn, several sweeps, since a layer can be B of one pair and A of the
next (a MobileNet block's conv → depthwise → conv). BatchNormalization is folded first
(edgekit.compression.stages.fold): its scale sits between A and what follows. A ReLU6, a swish
or any other activation that does not commute with scaling ends a pair; those layers are left
alone and named, unless ReLU6 is first made ReLU (unclip_relu6, recipe repairs.relu6), which
changes the function where an activation passed 6.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

EQUALIZABLE = ("Conv2D", "DepthwiseConv2D", "Dense")
# ops between A and B through which a positive per-channel scale passes unchanged
HOMOGENEOUS = ("MaxPooling2D", "ZeroPadding2D", "Dropout", "SpatialDropout2D", "GlobalMaxPooling2D",
               "GlobalAveragePooling2D", "AveragePooling2D")
EXACT_ACTIVATIONS = ("linear", "relu")
SWEEPS = 20
SETTLED = 1e-4  # |log s| below which a sweep changed nothing worth another


@dataclass
class EqualizeResult:
    model: object
    pairs: list[dict] = field(default_factory=list)  # {"from", "to", "range_spread_before", "range_spread_after"}
    left_alone: list[dict] = field(default_factory=list)  # {"layer", "why"}
    folded: list[str] = field(default_factory=list)  # BatchNormalization layers folded first


def equalize(model, owned: bool = False) -> EqualizeResult:
    """A copy of the tf_keras model with BatchNorm folded and every eligible pair equalized; the
    float function is the same (up to float rounding). `owned`: the caller's own copy, changed in place."""
    working, folded = folded_working_copy(model, owned)
    pairs, left_alone = find_pairs(working)
    before = {(a.name, b.name): _spread(_out_ranges(a)) for a, b in pairs}
    for _ in range(SWEEPS):
        if max((_equalize_pair(a, b) for a, b in pairs), default=0.0) < SETTLED:
            break
    report = [{"from": a.name, "to": b.name, "range_spread_before": round(before[(a.name, b.name)], 3),
               "range_spread_after": round(_spread(_out_ranges(a)), 3)} for a, b in pairs]
    return EqualizeResult(working, report, left_alone, folded)


def unclip_relu6(model) -> tuple[object, list[str]]:
    """The model with every ReLU6 (a ReLU layer capped at 6, or a layer whose activation is relu6)
    made a plain ReLU, and the names of those layers; the model itself when it has none. Pairs
    then join through them (MobileNets), at the price of a different function wherever an
    activation passed 6: the caller measures that and reports it."""
    from edgekit.compression.stages.fold import _rebuilt

    config = model.get_config()
    changed = []
    for layer in config.get("layers", []):
        inner = layer["config"]
        if layer["class_name"] == "ReLU" and inner.get("max_value") is not None and float(inner["max_value"]) == 6 \
                and not inner.get("negative_slope") and not inner.get("threshold"):
            inner["max_value"] = None
            changed.append(inner["name"])
        elif inner.get("activation") == "relu6":
            inner["activation"] = "relu"
            changed.append(inner["name"])
    if not changed:
        return model, []
    rebuilt = _rebuilt(model, config, {})
    rebuilt.set_weights(model.get_weights())
    return rebuilt, changed


def find_pairs(model) -> tuple[list, list[dict]]:
    """(A, B) layer pairs joined by homogeneous ops only, and the conv/dense layers that end no
    pair because of what follows them."""
    consumers = _consumers(model)
    pairs, left_alone = [], []
    for layer in model.layers:
        if (type(layer).__name__ not in EQUALIZABLE or len(layer._inbound_nodes) != 1  # noqa: SLF001
                or layer.name not in consumers):  # the model's output: nothing follows to take a scale
            continue
        why = _not_a_start(layer)
        if why is None:
            follower, why = _next_weighted(layer, consumers)
            if follower is not None:
                pairs.append((layer, follower))
                continue
        if why:
            left_alone.append({"layer": layer.name, "why": why})
    return pairs, left_alone


def _not_a_start(layer) -> str | None:
    activation = getattr(layer.activation, "__name__", "linear")
    if activation not in EXACT_ACTIVATIONS:
        return f"its activation {activation} does not commute with a per-channel scale"
    if type(layer).__name__ == "DepthwiseConv2D" and layer.depth_multiplier != 1:
        return "a depthwise layer with a channel multiplier"
    return None


def _next_weighted(layer, consumers) -> tuple[object | None, str | None]:
    """The conv/dense layer A's output reaches through homogeneous ops alone, or why none does.
    None as the reason: the output simply ends (the model's output)."""
    current = layer
    while True:
        following = consumers.get(current.name, [])
        if len(following) != 1:
            return None, (f"{current.name}'s output goes to {len(following)} layers" if following else None)
        nxt = following[0]
        kind = type(nxt).__name__
        if len(nxt._inbound_nodes) != 1 or len(_inbound(nxt)) != 1:  # noqa: SLF001
            return None, f"{nxt.name} is shared or joins several inputs"
        if kind in EQUALIZABLE:
            if kind == "Conv2D" and (getattr(nxt, "groups", 1) or 1) != 1:
                return None, f"{nxt.name} is a grouped convolution"
            return nxt, None
        if not (kind in HOMOGENEOUS or _is_exact_activation(nxt)):
            return None, f"{nxt.name} ({kind}) does not commute with a per-channel scale"
        current = nxt


def _is_exact_activation(layer) -> bool:
    kind = type(layer).__name__
    if kind == "ReLU":
        return layer.max_value is None and float(layer.negative_slope) == 0 and float(layer.threshold) == 0
    return kind == "Activation" and getattr(layer.activation, "__name__", "") in EXACT_ACTIVATIONS


def _consumers(model) -> dict[str, list]:
    found: dict[str, list] = {}
    for layer in model.layers:
        for source in _inbound(layer):
            found.setdefault(source.name, []).append(layer)
    return found


def _inbound(layer) -> list:
    nodes = getattr(layer, "_inbound_nodes", None) or []
    inbound = []
    for node in nodes:
        layers = node.inbound_layers
        inbound.extend(layers if isinstance(layers, (list, tuple)) else [layers])
    return inbound


def _out_axis(layer) -> int:
    return 2 if type(layer).__name__ == "DepthwiseConv2D" else -1  # (h, w, channels, 1) or (..., out)


def _in_axis(layer) -> int:
    return 0 if type(layer).__name__ == "Dense" else 2  # (in, out) or (h, w, in, out/multiplier)


def _channel_max(kernel: np.ndarray, axis: int) -> np.ndarray:
    moved = np.moveaxis(np.abs(kernel), axis, 0)
    return moved.reshape(moved.shape[0], -1).max(axis=1)


def _out_ranges(layer) -> np.ndarray:
    return _channel_max(layer.get_weights()[0], _out_axis(layer))


def _spread(ranges: np.ndarray) -> float:
    """The widest channel range over the median one: what a per-tensor grid pays for."""
    median = float(np.median(ranges))
    return float(ranges.max() / median) if median > 0 else float("inf")


def _equalize_pair(a, b) -> float:
    """Scale A's output channels and B's input channels to equal ranges; the largest |log s|."""
    a_weights, b_weights = a.get_weights(), b.get_weights()
    r_a = _channel_max(a_weights[0], _out_axis(a))
    r_b = _channel_max(b_weights[0], _in_axis(b))
    if r_a.shape != r_b.shape:
        return 0.0  # a reshape between them (not one of the homogeneous ops) would have ended the pair
    usable = (r_a > 0) & (r_b > 0)
    scale = np.ones_like(r_a)
    scale[usable] = np.sqrt(r_a[usable] / r_b[usable])
    a_weights[0] = a_weights[0] / _along(scale, a_weights[0].ndim, _out_axis(a))
    if a.use_bias:
        a_weights[1] = a_weights[1] / scale
    b_weights[0] = b_weights[0] * _along(scale, b_weights[0].ndim, _in_axis(b))
    a.set_weights(a_weights)
    b.set_weights(b_weights)
    return float(np.max(np.abs(np.log(scale))))


def _along(values: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = -1
    return values.reshape(shape).astype(np.float32)


def folded_working_copy(model, owned: bool) -> tuple[object, list[str]]:
    """(a model with BatchNorm folded that a repair may change, the BatchNorms folded). Folding
    builds a new model with its own weights where it folds anything; otherwise the model is copied,
    unless the caller owns it already: one copy at most (VGG16 is 528 MB of weights)."""
    from edgekit.compression.stages.fold import fold_batchnorm

    folded_model, folded = fold_batchnorm(model)
    if folded_model is not model or owned:
        return folded_model, folded
    return _copy(model), folded


def _copy(model):
    """A separate model with the same layers and weights: the caller's model is not changed."""
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy
