"""tfmot's 8-bit QAT schemes with a layout rule and three quantizers corrected, so a QAT model
computes what its int8 files compute.

tfmot's `LayerReLUQuantize` matches ReLU after Add, Conv2D, DepthwiseConv2D or Dense and
gives the layer before it a no-op quantize config. For an Add that only removes the fake
quantization between Add and ReLU, as meant; for a conv it also removes the *weight*
quantization, so QAT trains float kernels that every converter then quantizes (MobileNetV2
with folded BatchNorms: 52 convs, 95% agreement between the QAT model and its int8 files).
Here a conv before a ReLU keeps its weight quantizers and loses only its output fake-quant
(a no-op activation, what tfmot itself does for Conv → BatchNorm → ReLU); the ReLU's output
is quantized once, as the converters' fused conv+ReLU writes it.

And one quantizer: tfmot quantizes a DepthwiseConv2D kernel (kh, kw, in, multiplier) "per
axis" over its last axis, the multiplier (1 in MobileNets): one range for the whole kernel,
while TFLite, ONNX Runtime and OpenVINO quantize depthwise kernels per output channel. Here
the range is per output channel (in × multiplier), as the files hold it.

And the gates of EfficientNet-style blocks: the files compute swish as LOGISTIC, whose int8
output is fixed to 1/256 steps, then MUL; tfmot fake-quantizes only the product, and a conv's
fused swish without rounding the conv's output. With the fused gates split off first
(edgekit.compression.stages.fold.split_gates), the conv's output is rounded, the gate on LOGISTIC's grid and
the product on its own range; a sigmoid gate likewise. Rescaling, Normalization and Multiply,
which tfmot leaves float but the files quantize (from calibration), are quantized at their output.
On a squeeze-excite block the QAT model and its TFLite file then give the same logits to the bit
(tests/compression/test_qat_gates.py; 0.9% apart before).
"""

from __future__ import annotations

from edgekit.compression.stages.fold import GATES  # Activations whose int8 kernels round inside (LOGISTIC)
from edgekit.errors import require

WEIGHTED = "Conv2D|DepthwiseConv2D|Dense"
# No weights, not in tfmot's registry; the int8 files quantize their output (calibrated), so QAT does too
OUTPUT_ONLY = ("Rescaling", "Normalization", "Multiply")
# What report.json's stages.qat.corrections lists: how this scheme differs from tfmot's.
CORRECTIONS = ["conv/dense before a ReLU keeps its weight quantizers (tfmot drops them)",
               "depthwise kernels quantized per output channel (tfmot: one range per kernel)",
               "swish and sigmoid gates rounded as int8 LOGISTIC (1/256 steps) then MUL, a conv's fused gate split off",
               "Rescaling, Normalization and Multiply quantized at their output (tfmot leaves them float)",
               "the classifier's logits quantized over the range that decides top-1 (stages.qat.logit_range)"]


def qat_scheme(preserve_sparsity: bool):
    """(name, scheme): the default or prune-preserving 8-bit scheme with the corrected layout."""
    require("tensorflow_model_optimization", "compress")
    from tensorflow_model_optimization.python.core.quantization.keras import quantize_aware_activation
    from tensorflow_model_optimization.python.core.quantization.keras import quantize_config as quantize_config_module
    from tensorflow_model_optimization.python.core.quantization.keras import utils as quantize_utils
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_layout_transform as layout, default_8bit_quantize_registry, default_8bit_quantize_scheme,
        default_8bit_transforms as t)
    from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import (
        model_transformer, transforms)
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (
        default_8bit_prune_preserve_quantize_scheme as prune_preserve)

    pattern = transforms.LayerPattern
    from tensorflow_model_optimization.python.core.quantization.keras import quantizers

    from edgekit.support.keras_compat import tensorflow, tf_keras

    tf, keras = tensorflow(), tf_keras()

    class DepthwiseWeightsQuantizer(quantizers.LastValueQuantizer):
        """Symmetric int8 per output channel of a depthwise kernel (kh, kw, in, multiplier)."""

        def __init__(self):
            super().__init__(num_bits=8, per_axis=True, symmetric=True, narrow_range=True)

        def build(self, tensor_shape, name, layer):
            channels = int(tensor_shape[-2]) * int(tensor_shape[-1])
            return {key: layer.add_weight(f"{name}_{key[:3]}", shape=(channels,), trainable=False,
                                          initializer=keras.initializers.Constant(value))
                    for key, value in (("min_var", -6.0), ("max_var", 6.0))}

        def __call__(self, inputs, training, weights, **kwargs):
            shape = tf.shape(inputs)
            flat = tf.reshape(inputs, [shape[0], shape[1], 1, shape[2] * shape[3]])
            return tf.reshape(super().__call__(flat, training, weights, **kwargs), shape)

        def get_config(self):
            return {}

    def sigmoid_on_the_int8_grid(x):
        """sigmoid(x) rounded as int8 LOGISTIC writes it: output scale 1/256, zero point -128."""
        return tf.quantization.fake_quant_with_min_max_args(tf.sigmoid(x), min=0.0, max=255.0 / 256.0, num_bits=8)

    class SwishQuantizer(quantizers.MovingAverageQuantizer):
        """x · sigmoid(x) as the int8 files compute it: the gate on LOGISTIC's fixed grid, then
        the product on its own moving-average range (MUL's output)."""

        def __init__(self):
            super().__init__(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)

        def __call__(self, inputs, training, weights, **kwargs):
            return super().__call__(inputs * sigmoid_on_the_int8_grid(inputs), training, weights, **kwargs)

        def get_config(self):
            return {}

    class SigmoidQuantizer(quantizers.Quantizer):
        """sigmoid(x) on LOGISTIC's fixed output grid: nothing to learn."""

        def build(self, tensor_shape, name, layer):
            return {}

        def __call__(self, inputs, training, weights, **kwargs):
            return sigmoid_on_the_int8_grid(inputs)

        def get_config(self):
            return {}

    class GateConfig(quantize_config_module.QuantizeConfig):
        """An Activation whose function the quantizer itself computes (given a linear activation,
        tfmot applies the quantizer to the layer's input)."""

        def __init__(self, quantizer):
            self.quantizer = quantizer

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return [(keras.activations.linear, self.quantizer)]

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            layer.activation = quantize_activations[0]

        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {}

    class Registry:
        """The scheme's registry, with per-channel depthwise kernels, swish and sigmoid as the
        int8 files compute them, and the input's Rescaling/Normalization quantized at their output."""

        def __init__(self, inner):
            self.inner = inner

        def supports(self, layer):
            return type(layer).__name__ in OUTPUT_ONLY or self.inner.supports(layer)

        def get_quantize_config(self, layer):
            kind = type(layer).__name__
            if kind in OUTPUT_ONLY:
                return default_8bit_quantize_registry.Default8BitQuantizeConfig([], [], True)
            gate = getattr(getattr(layer, "activation", None), "__name__", None) if kind == "Activation" else None
            if gate in GATES:
                return GateConfig(SwishQuantizer() if gate == "swish" else SigmoidQuantizer())
            config = self.inner.get_quantize_config(layer)
            if type(layer).__name__ == "DepthwiseConv2D" and hasattr(config, "weight_quantizer"):
                config.weight_quantizer = DepthwiseWeightsQuantizer()
            return config

    class WeightedReLUQuantize(transforms.Transform):
        """Conv/Dense → ReLU: the conv keeps its weight quantizers, its output is not fake-quantized."""

        def pattern(self):
            return pattern("ReLU", inputs=[pattern(WEIGHTED, config={"activation": "linear"})])

        def replacement(self, match_layer):
            weighted = match_layer.input_layers[0]
            if weighted.metadata.get("quantize_config") is None and match_layer.metadata.get("quantize_config") is None:
                weighted.layer["config"]["activation"] = quantize_utils.serialize_activation(
                    quantize_aware_activation.NoOpActivation(), use_legacy_format=True)
            return match_layer

        def custom_objects(self):
            return {"NoOpActivation": quantize_aware_activation.NoOpActivation}

    class AddReLUQuantize(t.LayerReLUQuantize):
        def pattern(self):
            return pattern("ReLU", inputs=[pattern("Add")])

    class AddReluActivationQuantize(t.LayerReluActivationQuantize):
        def pattern(self):
            return pattern("Activation", config={"activation": "relu"}, inputs=[pattern("Add")])

    class Layout(layout.Default8BitQuantizeLayoutTransform):
        def apply(self, model, layer_quantize_map):
            rules = [t.InputLayerQuantize(), t.SeparableConv1DQuantize(), t.SeparableConvQuantize(),
                     t.Conv2DReshapeBatchNormReLUQuantize(), t.Conv2DReshapeBatchNormActivationQuantize(),
                     t.Conv2DBatchNormReLUQuantize(), t.Conv2DBatchNormActivationQuantize(),
                     t.Conv2DReshapeBatchNormQuantize(), t.Conv2DBatchNormQuantize(),
                     t.ConcatTransform6Inputs(), t.ConcatTransform5Inputs(), t.ConcatTransform4Inputs(),
                     t.ConcatTransform3Inputs(), t.ConcatTransform(), t.DenseBatchNormQuantize(),
                     t.DenseBatchNormReLUQuantize(), t.DenseBatchNormActivationQuantize(),
                     WeightedReLUQuantize(), AddReLUQuantize(), AddReluActivationQuantize()]
            return model_transformer.ModelTransformer(model, rules, set(layer_quantize_map.keys()),
                                                      layer_quantize_map).transform()

    if preserve_sparsity:
        class Scheme(prune_preserve.Default8BitPrunePreserveQuantizeScheme):
            def get_layout_transformer(self):
                return Layout()

            def get_quantize_registry(self):
                return Registry(super().get_quantize_registry())

        return "Default8BitPrunePreserveQuantizeScheme", Scheme()

    class Scheme(default_8bit_quantize_scheme.Default8BitQuantizeScheme):  # noqa: F811
        def get_layout_transformer(self):
            return Layout()

        def get_quantize_registry(self):
            return Registry(super().get_quantize_registry())

    return "Default8BitQuantizeScheme", Scheme()
