"""Quantization-aware training with tfmot's default 8-bit scheme.

Where every layer is supported, the whole model is quantized; otherwise only the supported
layers are annotated (the rest stay float and are reported by name) instead of failing the
run. After pruning, the prune-preserving scheme keeps the zeros through QAT.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.compression.stages.finetune import FinetuneSettings, finetune, outputs_probabilities, require_labelled
from edgekit.compression.config import QATStage
from edgekit.intake.data import Dataset
from edgekit.errors import require
from edgekit.compression.inspection import qat_unsupported_layers
from edgekit.support.keras_compat import tf_keras


@dataclass
class QATResult:
    model: object  # the QAT model (fake-quant ops with learned ranges)
    unquantized: list[str]  # "name (Class)" left in float
    scheme: str
    float_model: object  # the float model QAT started from: BatchNorms folded (edgekit.compression.stages.fold)
    folded: list[str]  # the BatchNorm layers folded into the layer before them
    biases_rounded: int = 0  # conv/dense biases put on the int32 grid of the int8 files
    logit_range: dict | None = None  # the classifier's logit range as narrowed (edgekit.compression.stages.qat_logits)


def quantize_aware(model, data: Dataset | None, stage: QATStage, preserve_sparsity: bool, settings: FinetuneSettings,
                   seed: int, targets=None, validation=None, quiet: bool = False) -> QATResult:
    from edgekit.compression.stages.fold import fold_batchnorm, split_gates
    from edgekit.compression.stages.qat_bias import round_biases_to_int32_grid
    from edgekit.compression.stages.qat_logits import tighten_classifier_range
    from edgekit.compression.stages.qat_scheme import qat_scheme

    data = require_labelled(data, "--qat")
    tfmot = require("tensorflow_model_optimization", "compress")
    keras = tf_keras()
    qk = tfmot.quantization.keras
    model, folded = fold_batchnorm(model)  # QAT then trains the kernels the converters write
    model, _ = split_gates(model)  # and rounds a conv's swish/sigmoid where the files do
    unsupported = qat_unsupported_layers(model)
    skip = {item.split(" (")[0] for item in unsupported}
    from_logits = not outputs_probabilities(model)
    if skip:
        annotated = keras.models.clone_model(
            model, clone_function=lambda layer: layer if layer.name in skip else qk.quantize_annotate_layer(layer))
    else:
        annotated = qk.quantize_annotate_model(model)
    scheme_name, scheme = qat_scheme(preserve_sparsity)
    with qk.quantize_scope():
        qat_model = qk.quantize_apply(annotated, scheme)
    calibrate_ranges(qat_model, data.x)
    finetune(qat_model, data, settings, seed, "qat", from_logits=from_logits, targets=targets, validation=validation,
             quiet=quiet)
    logit_range = tighten_classifier_range(qat_model, data.x[:CALIBRATION_BATCHES * CALIBRATION_BATCH])
    biases = round_biases_to_int32_grid(qat_model)  # after training: the grid moves with the ranges
    return QATResult(qat_model, unsupported, scheme_name, model, folded, biases, logit_range)


CALIBRATION_BATCHES, CALIBRATION_BATCH = 8, 32


def calibrate_ranges(qat_model, x, batches: int = CALIBRATION_BATCHES, batch_size: int = CALIBRATION_BATCH) -> None:
    """Start every activation range at what the data produces. tfmot's moving-average quantizers
    start at [-6, 6] and move with a decay of 0.999: after a short fine-tune (80 steps) a ReLU6
    output still spans [-5.8, 5.9], half its int8 levels unused, and the QAT model and its files,
    each rounding on that coarse grid, disagree (measured: 97.0% on trained MobileNetV2). Here the
    first batches set the ranges (decay k/(k+1): the mean of each batch's min and max), then
    training goes on with tfmot's own decay."""
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

    original = quant_ops.MovingAvgQuantize
    step = {"k": 0}

    def averaging(*args, **kwargs):
        kwargs["ema_decay"] = step["k"] / (step["k"] + 1)
        return original(*args, **kwargs)

    quant_ops.MovingAvgQuantize = averaging
    try:
        for k in range(min(batches, -(-len(x) // batch_size))):
            step["k"] = k
            qat_model(x[k * batch_size:(k + 1) * batch_size], training=True)  # eager: the patch is seen
    finally:
        quant_ops.MovingAvgQuantize = original


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
