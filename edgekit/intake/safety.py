"""Refuse dangerous model files before anything is deserialized.

A Keras model file is a program: `Lambda` layers carry Python bytecode, custom classes run
their own code, `TFSMLayer` loads another model from a path, and tf_keras' `TFOpLambda`
names a TensorFlow function that is called on load. The config is read as plain JSON and
scanned here; only Keras' built-in layers, and `TFOpLambda` calls to pure math/nn
functions, pass without --trust-model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator

from edgekit.errors import ModelError

# Keras' built-in layers (tf_keras and Keras 3) whose configs hold only data. Left out on
# purpose: Lambda (bytecode), Layer (a bare base class), TFSMLayer (loads files),
# TorchModuleWrapper (pickle), JaxLayer/FlaxLayer (arbitrary callables).
BUILTIN_LAYERS = frozenset("""
Activation ActivityRegularization Add AdditiveAttention AlphaDropout Attention Average
AveragePooling1D AveragePooling2D AveragePooling3D AvgPool1D AvgPool2D AvgPool3D
BatchNormalization Bidirectional CategoryEncoding CenterCrop Concatenate Conv1D
Conv1DTranspose Conv2D Conv2DTranspose Conv3D Conv3DTranspose ConvLSTM1D ConvLSTM2D
ConvLSTM3D Convolution1D Convolution2D Convolution3D Cropping1D Cropping2D Cropping3D Dense
DepthwiseConv1D DepthwiseConv2D Discretization Dot Dropout ELU EinsumDense Embedding Flatten
GRU GRUCell GaussianDropout GaussianNoise GlobalAveragePooling1D GlobalAveragePooling2D
GlobalAveragePooling3D GlobalAvgPool1D GlobalAvgPool2D GlobalAvgPool3D GlobalMaxPool1D
GlobalMaxPool2D GlobalMaxPool3D GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D
GroupNormalization Hashing Identity InputLayer IntegerLookup LSTM LSTMCell LayerNormalization
LeakyReLU LocallyConnected1D LocallyConnected2D Masking MaxPool1D MaxPool2D MaxPool3D
MaxPooling1D MaxPooling2D MaxPooling3D Maximum Minimum MultiHeadAttention Multiply
Normalization PReLU Permute RNN RandomBrightness RandomContrast RandomCrop RandomFlip
RandomHeight RandomRotation RandomTranslation RandomWidth RandomZoom ReLU RepeatVector
Rescaling Reshape Resizing SeparableConv1D SeparableConv2D SeparableConvolution1D
SeparableConvolution2D SimpleRNN SimpleRNNCell Softmax SpatialDropout1D SpatialDropout2D
SpatialDropout3D StackedRNNCells Subtract ThresholdedReLU TimeDistributed UnitNormalization
UpSampling1D UpSampling2D UpSampling3D ZeroPadding1D ZeroPadding2D ZeroPadding3D
Functional Sequential Model
""".split())

# tf_keras writes TFOpLambda when a model calls TensorFlow ops directly; `function` names
# the op. Pure tensor math only: nothing that touches files, Python or the runtime.
TF_OP_ALLOWLIST = frozenset("""
__operators__.add __operators__.getitem __operators__.sub __operators__.mul __operators__.truediv
math.add math.add_n math.subtract math.multiply math.divide math.truediv math.negative
math.maximum math.minimum math.abs math.square math.sqrt math.rsqrt math.pow math.exp
math.log math.sigmoid math.tanh math.reduce_mean math.reduce_sum math.reduce_max
math.reduce_min math.scalar_mul math.sign math.floor math.round
nn.relu nn.relu6 nn.leaky_relu nn.elu nn.selu nn.gelu nn.silu nn.swish nn.sigmoid nn.softmax
nn.log_softmax nn.bias_add nn.avg_pool2d nn.max_pool2d nn.depth_to_space nn.space_to_depth
reshape transpose compat.v1.transpose concat stack squeeze expand_dims identity
clip_by_value pad image.resize compat.v1.image.resize split tile cast zeros_like ones_like
""".split())

OPAQUE_CLASSES = {"Lambda": "runs stored Python bytecode",
                  "TFSMLayer": "loads another model from a path",
                  "TorchModuleWrapper": "unpickles a PyTorch module",
                  "JaxLayer": "calls an arbitrary function", "FlaxLayer": "calls an arbitrary module"}

# Packages whose own classes are Keras' code, not the file's (e.g. keras.src.applications.
# convnext.LayerScale): a class defined in one of them is as trusted as the built-in layers.
KERAS_PACKAGES = ("keras", "tf_keras", "tensorflow")


@dataclass(frozen=True)
class LayerRef:
    name: str
    class_name: str
    module: str | None
    config: dict


@dataclass
class Scan:
    layers: list[LayerRef] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # "name (Class: why)"


def group_layers(items: list[str], shown: int = 3) -> str:
    """["a (X)", "b (X)", "c (Y)"] → "X: a, b; Y: c" — long lists of like layers stay readable."""
    groups: dict[str, list[str]] = {}
    for item in items:
        name, _, kind = item.partition(" (")
        groups.setdefault(kind.rstrip(")") or "?", []).append(name)
    parts = []
    for kind, names in groups.items():
        listed = ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
        parts.append(f"{kind}: {listed}")
    return "; ".join(parts)


def _malformed(why: str) -> ModelError:
    return ModelError(f"the model config is malformed ({why}); the file is corrupted or not a Keras model")


def iter_layers(config: Any, depth: int = 0) -> Iterator[LayerRef]:
    """Every layer in a (possibly nested) Keras config, the model itself first."""
    if depth > 64:
        raise _malformed("nesting deeper than 64 levels")
    if not isinstance(config, dict):
        raise _malformed(f"expected an object, found {type(config).__name__}")
    class_name = config.get("class_name")
    inner = config.get("config", {})
    if not isinstance(class_name, str) or not isinstance(inner, dict):
        raise _malformed("a layer without class_name or config")
    module = config.get("module")
    name = inner.get("name", config.get("name", "?"))
    yield LayerRef(str(name), class_name, module if isinstance(module, str) else None, inner)
    children = inner.get("layers", [])
    if not isinstance(children, list):
        raise _malformed(f"`layers` of {name} is not a list")
    for child in children:
        yield from iter_layers(child, depth + 1)
    for key in ("layer", "cell", "backward_layer"):  # wrappers: TimeDistributed, RNN, Bidirectional
        if isinstance(inner.get(key), dict) and "class_name" in inner[key]:
            yield from iter_layers(inner[key], depth + 1)
    cells = inner.get("cells")
    if isinstance(cells, list):  # StackedRNNCells
        for cell in cells:
            yield from iter_layers(cell, depth + 1)


def scan(config: Any) -> Scan:
    """Classify every layer: refused when it would run code that is not Keras' own."""
    result = Scan()
    for ref in iter_layers(config):
        result.layers.append(ref)
        why = _refusal(ref)
        if why:
            result.refused.append(f"{ref.name} ({ref.class_name}: {why})")
    return result


def _refusal(ref: LayerRef) -> str | None:
    if ref.class_name in OPAQUE_CLASSES:
        return OPAQUE_CLASSES[ref.class_name]
    if ref.class_name == "TFOpLambda":
        function = ref.config.get("function")
        if not isinstance(function, str) or function not in TF_OP_ALLOWLIST:
            return f"calls tf.{function}, which is not on the allowlist of pure math/nn ops"
        return None
    if ref.class_name == "SlicingOpLambda":
        return None if ref.config.get("function") == "__operators__.getitem" else "calls an unknown function"
    if ref.module and not (ref.module == "keras" or ref.module.startswith(("keras.", "tf_keras."))):
        return f"defined in module {ref.module}, not in Keras"
    if ref.class_name not in BUILTIN_LAYERS and not shipped_with_keras(ref.module, ref.class_name):
        return "a custom class, not a Keras built-in layer"
    return None


def shipped_with_keras(module: str | None, class_name: str) -> bool:
    """A layer class that the installed keras/tf_keras/tensorflow package itself defines in
    `module`: importing that module runs only Keras' own code, and the class found there
    must be a Keras layer defined in it (a look-alike name elsewhere does not count)."""
    import importlib
    import importlib.util

    if not module or module.split(".")[0] not in KERAS_PACKAGES or class_name in OPAQUE_CLASSES:
        return False
    from edgekit.errors import MissingDependencyError
    from edgekit.support.keras_compat import tensorflow

    try:
        tensorflow()  # TF_USE_LEGACY_KERAS must be set before Keras 3 pulls TensorFlow in
    except MissingDependencyError:
        return False
    try:
        if importlib.util.find_spec(module) is None:
            return False
        cls = getattr(importlib.import_module(module), class_name, None)
    except (ImportError, ValueError, AttributeError):
        return False
    return (isinstance(cls, type) and cls.__module__ == module
            and any(base.__name__ == "Layer" and base.__module__.split(".")[0] in KERAS_PACKAGES
                    for base in cls.__mro__))


# --- graph references ----------------------------------------------------------------------
# tf_keras rebuilds a Functional graph by re-queueing nodes whose inputs do not exist yet; a
# reference to a missing layer or call loops forever. Configs are checked here first.

def has_own_input(layer: dict) -> bool:
    """A nested model built on its own Input: tf_keras numbers its calls from 1, not 0."""
    if layer.get("class_name") not in ("Functional", "Model", "Sequential"):
        return False
    children = layer.get("config", {}).get("layers") or []
    return layer["class_name"] != "Sequential" or (
        isinstance(children[0], dict) and children[0].get("class_name") == "InputLayer")


def check_node_references(config: dict, source: str) -> None:
    """Every inbound reference of a tf_keras-style Functional config names an existing call."""
    inner = config.get("config", {})
    layers = inner.get("layers", [])
    if not isinstance(layers, list):
        return
    if config.get("class_name") not in ("Functional", "Model"):
        for layer in layers:  # a Sequential (or wrapper) can hold Functional models at any depth
            if isinstance(layer, dict):
                check_node_references(layer, source)
        return
    try:
        calls = {_layer_name(layer): (layer["class_name"], len(layer.get("inbound_nodes", [])), has_own_input(layer))
                 for layer in layers}
        for layer in layers:
            check_node_references(layer, source)
            for node in layer.get("inbound_nodes", []):
                # A node lists its inputs; TFOpLambda writes its single input unnested.
                for ref in ([node] if node and isinstance(node[0], str) else node):
                    _check_reference(ref, calls, _layer_name(layer), source)
        for key in ("input_layers", "output_layers"):
            refs = inner.get(key, [])
            for ref in ([refs] if refs and isinstance(refs[0], str) else refs):
                _check_reference(ref, calls, key, source)
    except (KeyError, TypeError, IndexError, AttributeError):
        raise _malformed("unreadable layer connections") from None


def _layer_name(layer: dict) -> str:
    return layer.get("name") or layer["config"]["name"]


def _check_reference(ref, calls, user: str, source: str) -> None:
    name, node_index = ref[0], ref[1]
    if name not in calls:
        raise ModelError(f"{source}: {user} takes input from layer {name!r}, which the model does not have; "
                         "the file is corrupted")
    class_name, count, skips_first = calls[name]
    first = 1 if skips_first else 0
    if class_name != "InputLayer" and not first <= node_index < count + first:
        raise ModelError(f"{source}: {user} takes call {node_index} of layer {name!r}, which is called "
                         f"{count} time(s); the file is corrupted")


def check_safe(found: Scan, source: str, trust: bool, what: str = "layers that run code on load") -> None:
    if found.refused and not trust:
        raise ModelError(
            f"{source} holds {what} — {group_layers(found.refused)}; refused — pass --trust-model "
            "(with --custom-objects module.path for custom classes) only if you trust where the file came from"
        )


# --- declared sizes --------------------------------------------------------------------------
# Keras allocates every weight when it builds a layer: a config declaring Dense(units=10**12)
# would take the machine down before any weight is read. The least number of parameters each
# layer must have (input sizes unknown: taken as 1) is summed from the config first.

def _positive_ints(*values) -> list[int] | None:
    flat = []
    for value in values:
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items):
            return None
        flat.extend(items)
    return flat


def _least_parameters(ref: LayerRef) -> int:
    c = ref.config
    counts = {
        "units": lambda: _positive_ints(c.get("units")),
        "filters": lambda: _positive_ints(c.get("filters"), c.get("kernel_size", 1)),
        "depthwise": lambda: _positive_ints(c.get("kernel_size", 1), c.get("depth_multiplier", 1)),
        "embedding": lambda: _positive_ints(c.get("input_dim"), c.get("output_dim")),
    }
    kind = ("embedding" if ref.class_name == "Embedding" else
            "depthwise" if ref.class_name.startswith("DepthwiseConv") else
            "filters" if "filters" in c else "units" if "units" in c else None)
    factors = counts[kind]() if kind else None
    return math.prod(factors) if factors else 0


def declared_parameters(config: Any) -> int:
    """A lower bound on the model's parameter count, from its config alone."""
    return sum(_least_parameters(ref) for ref in iter_layers(config))


def check_declared_parameters(config: Any, file_bytes: int, source) -> None:
    from edgekit.support.memory import available_mb

    least = declared_parameters(config)
    room = available_mb() * (1 << 20)
    if least * 4 > room:
        raise ModelError(f"{source} declares layers with at least {least:,} parameters "
                         f"({least * 4 / (1 << 30):,.1f} GiB as float32) in a {file_bytes / (1 << 20):,.1f} MiB file, "
                         f"more than the {room / (1 << 30):,.1f} GiB of memory available; the file is corrupted or "
                         "hostile, refused before building it")
