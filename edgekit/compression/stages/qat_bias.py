"""Round a QAT model's biases to the int32 grid its int8 files store them on.

An int8 conv/dense file keeps each bias as an int32 in steps of (input scale × weight scale
of that channel): TFLite always, and edgekit's ONNX QDQ export too (formats/onnx/qdq.py).
tfmot trains float biases and never rounds them, so each file rounds them itself, by up to half
a step. That is ~1e-3 of an output step, yet it moves a layer's result across a rounding
boundary for ~0.1% of activations; the one-step differences compound block by block.
Measured on a trained MobileNetV2 (tests/trained): TFLite and ONNX agreed with the QAT model
on 98.0% of 539 inputs with float biases, 99.6% with biases rounded here. Rounding changes
each bias by under half a step; the QAT model, its accuracy and the files then share one
arithmetic.
"""

from __future__ import annotations

import numpy as np

# Layers whose output is their input's values rearranged or subsampled: the grid passes through.
GRID_PRESERVING = {"ZeroPadding2D", "Cropping2D", "Reshape", "Flatten", "Dropout", "SpatialDropout2D",
                   "MaxPooling2D", "Permute"}
# tfmot's names for a layer's output range: wrapper output, fused activation (a QuantizeLayer at
# the model input names its range after itself: "quantize_layer_1_min" in a second model).
OUTPUT_RANGES = ("output", "post_activation")
INT8_LEVELS, NARROW_LEVELS = 255, 254  # activations use all 256 values, weights −127..127


def round_biases_to_int32_grid(qat_model) -> int:
    """Round each quantized conv/dense bias whose input range is known; returns how many."""
    rounded = 0
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", None)
        bias = getattr(inner, "bias", None) if getattr(inner, "use_bias", False) else None
        kernel_steps = _kernel_steps(layer, inner) if bias is not None else None
        input_step = _input_step(layer) if kernel_steps is not None else None
        if input_step is None:
            continue
        grid = input_step * kernel_steps
        values = bias.numpy()
        safe = np.where(grid > 0, grid, 1.0)
        bias.assign(np.where(grid > 0, np.round(values / safe) * safe, values).astype(values.dtype))
        rounded += 1
    return rounded


def _kernel_steps(wrapper, inner) -> np.ndarray | None:
    """The weight quantizer's step per output channel (or one step): symmetric, narrow range."""
    name = "depthwise_kernel" if hasattr(inner, "depthwise_kernel") else "kernel"
    low, high = _range(wrapper, name)
    if low is None:
        return None
    steps = (high - low) / NARROW_LEVELS
    return steps if steps.size in (1, int(inner.bias.shape[0])) else None  # ranges that map onto no channel


def _input_step(layer) -> float | None:
    """The step of the activation grid this layer reads: the output range of the nearest
    quantizing layer upstream, through layers that keep the grid; None when unknown."""
    source = _single_inbound(layer)
    while source is not None:
        for kind in (*OUTPUT_RANGES, source.name):
            low, high = _range(source, kind)
            if low is not None and low.size == 1:
                return float(high - low) / INT8_LEVELS
        inner = getattr(source, "layer", source)
        if type(inner).__name__ not in GRID_PRESERVING:
            return None
        source = _single_inbound(source)
    return None


def _single_inbound(layer):
    nodes = getattr(layer, "_inbound_nodes", None) or []
    if len(nodes) != 1:
        return None  # a layer called more than once reads more than one grid
    inbound = nodes[0].inbound_layers
    if isinstance(inbound, (list, tuple)):
        return inbound[0] if len(inbound) == 1 else None
    return inbound


def _range(layer, kind: str):
    """(min, max) arrays of the quantizer variables `{kind}_min`/`{kind}_max`, or (None, None)."""
    found = {}
    for weight in layer.weights:
        short = weight.name.split(":")[0].split("/")[-1]
        if short in (f"{kind}_min", f"{kind}_max"):
            found[short.rsplit("_", 1)[1]] = np.asarray(weight.numpy(), dtype=np.float64)
    if set(found) != {"min", "max"}:
        return None, None
    return found["min"], found["max"]
