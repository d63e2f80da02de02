"""Quantization-aware training with tfmot's default 8-bit scheme.

Where every layer is supported, the whole model is quantized; otherwise only the supported
layers are annotated (the rest stay float and are reported by name) instead of failing the
run. After pruning, the prune-preserving scheme keeps the zeros through QAT.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.stages.finetune import finetune, outputs_probabilities, require_labelled
from edgekit.config import QATStage
from edgekit.data import Dataset
from edgekit.errors import require
from edgekit.inspection import qat_unsupported_layers
from edgekit.keras_compat import tf_keras


@dataclass
class QATResult:
    model: object  # the QAT model (fake-quant ops with learned ranges)
    unquantized: list[str]  # "name (Class)" left in float
    scheme: str


def quantize_aware(model, data: Dataset | None, stage: QATStage, preserve_sparsity: bool, batch_size: int,
                   learning_rate: float, seed: int, quiet: bool = False) -> QATResult:
    data = require_labelled(data, "--qat")
    tfmot = require("tensorflow_model_optimization", "compress")
    keras = tf_keras()
    qk = tfmot.quantization.keras
    unsupported = qat_unsupported_layers(model)
    skip = {item.split(" (")[0] for item in unsupported}
    from_logits = not outputs_probabilities(model)
    if skip:
        annotated = keras.models.clone_model(
            model, clone_function=lambda layer: layer if layer.name in skip else qk.quantize_annotate_layer(layer))
    else:
        annotated = qk.quantize_annotate_model(model)
    if preserve_sparsity:
        scheme_name = "Default8BitPrunePreserveQuantizeScheme"
        scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    else:
        scheme_name, scheme = "Default8BitQuantizeScheme", qk.default_8bit.Default8BitQuantizeScheme()
    with qk.quantize_scope():
        qat_model = qk.quantize_apply(annotated, scheme)
    finetune(qat_model, data, stage.epochs, batch_size, learning_rate, seed, "qat", from_logits=from_logits,
             quiet=quiet)
    return QATResult(qat_model, unsupported, scheme_name)


def float_model_after_qat(qat_model, float_model):
    """The float model with the weights QAT trained (no fake quantization), and what the fp32
    artifacts are. tfmot's wrappers keep each layer's variables under their own names
    ("conv1/kernel", "bn1/gamma"); where a layout transform replaced a layer (SeparableConv2D
    → DepthwiseConv2D + Conv2D) they cannot be mapped back, and the fp32 files keep the model
    from before QAT."""
    keras = tf_keras()
    trained = {_variable_name(w): w for w in qat_model.weights}
    result = keras.models.clone_model(float_model)
    values = []
    for weight in float_model.weights:
        source = trained.get(_variable_name(weight))
        if source is None or tuple(source.shape) != tuple(weight.shape):
            return float_model, f"the model before QAT (QAT rewrote {_variable_name(weight)})"
        values.append(source.numpy())
    result.set_weights(values)
    return result, "the QAT-trained weights without fake quantization"


def _variable_name(weight) -> str:
    return weight.name.split(":")[0]
