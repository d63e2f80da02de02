"""`edgekit inspect`: what a model file is and what edgekit can do with it."""

from __future__ import annotations

from pathlib import Path

from edgekit.intake.model import LoadedModel, load_model

# tfmot folds a BatchNormalization into the layer before it when that layer is one of these,
# has a linear activation and feeds nothing else (its layout transforms match exactly that);
# anywhere else a BatchNormalization has no quantized implementation (docs/architecture.md, pitfalls).
_FOLDS_INTO = {"Conv2D", "DepthwiseConv2D", "Dense"}
# Not in tfmot's registry, but rewritten by its layout transforms before quantization
# (SeparableConv2D → DepthwiseConv2D + Conv2D).
_TRANSFORMED = {"SeparableConv2D"}


def qat_unsupported_layers(keras_model) -> list[str]:
    """Layers edgekit's 8-bit QAT scheme (tfmot's, corrected) cannot quantize, as "name (Class)"."""
    from edgekit.compression.stages.qat_scheme import qat_scheme

    registry = qat_scheme(False)[1].get_quantize_registry()
    unsupported = []
    for layer in keras_model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer" or kind in _TRANSFORMED or registry.supports(layer):
            continue
        if kind == "BatchNormalization" and _folds(_producer(layer)):
            continue
        unsupported.append(f"{layer.name} ({kind})")
    return unsupported


def _folds(producer) -> bool:
    """Whether tfmot's Conv/Dense + BatchNormalization transform matches: a Conv2D(activation=
    "relu") → BatchNormalization is not folded, and quantizing that BN fails."""
    if producer is None or type(producer).__name__ not in _FOLDS_INTO:
        return False
    activation = getattr(producer, "activation", None)
    if getattr(activation, "__name__", None) != "linear":
        return False
    return len(producer.outbound_nodes) == 1


def _producer(layer):
    """The layer feeding a single-input layer, or None."""
    try:
        node = layer.inbound_nodes[0]
        inbound = node.inbound_layers
    except (AttributeError, IndexError):
        return None
    return inbound if not isinstance(inbound, list) else (inbound[0] if len(inbound) == 1 else None)


def describe(model: LoadedModel) -> dict:
    info = model.file
    bridge = model.bridge
    untranslatable: list[str] = []
    if bridge and not bridge["bridged"]:
        from edgekit.intake.bridge import unbridgeable_layers

        untranslatable = unbridgeable_layers(info.config) or [bridge["reason"]]
    qat = qat_unsupported_layers(model.keras_model) if model.keras_model is not None else None
    return {
        "path": str(info.path),
        "format": info.format,
        "keras": info.keras,
        "keras_version": info.keras_version or None,
        "size_bytes": info.size_bytes,
        "sha256": info.sha256,
        "input_shape": list(model.input_shape),
        "output_shape": [None, model.num_classes],
        "num_classes": model.num_classes,
        "params": model.params,
        "macs": model.macs,
        "layers": len(model.scan.layers) - 1 if model.scan and model.scan.layers else None,
        "bridge": bridge,
        "bridge_untranslatable": untranslatable,
        "trainable_path": model.keras_model is not None,  # pruning and QAT need tf_keras
        "qat_unsupported": qat,
        "notes": model.notes,
    }


def inspect_file(path: Path, trust: bool = False, custom_objects: str | None = None) -> dict:
    return describe(load_model(path, trust=trust, custom_objects=custom_objects))
