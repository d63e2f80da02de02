"""TFLite export with tf.lite.TFLiteConverter: fp32, fp16, full-integer int8, weight-only int8.

Each precision is one step (`convert`) that starts from the Keras model where there is one,
saved with its variables (see save_forward): that needs far less memory than converting the
frozen graph (VGG16: 4.8 vs 16.6 GiB). SavedModels, Keras 3 models without a tf_keras
rebuild and the QAT graph convert from their frozen graph. Full-integer int8 uses per-channel
weights (the converter's default) and calibrates the activations on the representative dataset:
min/max, or percentile / MSE ranges set between calibration and quantization (tflite/ranges.py).
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager

from edgekit.errors import ConversionError, first_line
from edgekit.formats.exporter import Artifact, ExportRequest, ranges_setting, weight_scales
from edgekit.formats.tflite.ranges import activation_ranges
from edgekit.support.keras_compat import tensorflow
from edgekit.support.progress import StepLog


class TFLiteExporter:
    format = "tflite"

    def export(self, request: ExportRequest, log: StepLog) -> list[Artifact]:
        artifacts = []
        for precision in request.precisions_for(self.format):
            qat = precision == "int8" and request.from_qat
            (path,) = request.files(self.format, precision)
            ranges = request.ranges if precision == "int8" and not qat else "default"
            done = request.run(
                "tflite-convert", f"TFLite: convert {precision}{' from the QAT model' if qat else ''}",
                "edgekit.formats.tflite.export:convert",
                {"source": request.qat_source if qat else request.source, "precision": precision, "out": str(path),
                 "calibration": request.calibration, "io_dtype": request.io_dtype, "qat": qat,
                 "per_tensor": request.per_tensor, "ranges": ranges}, log)
            settings = self._settings(precision, qat, request.per_tensor)
            if precision == "int8" and not qat:
                settings["ranges"] = ranges_setting(ranges, done["ranges"])
            artifacts.append(Artifact(self.format, precision, [path], io_dtype=done["io_dtype"], settings=settings))
        return artifacts

    @staticmethod
    def _settings(precision: str, qat: bool = False, per_tensor: bool = False) -> dict:
        if precision == "int8" and qat:
            return {"method": "QAT (learned ranges)", "weights": "int8 per-channel", "activations": "int8"}
        if precision == "int8":
            return {"method": "full-integer PTQ", "weights": f"int8 {weight_scales(per_tensor)}",
                    "activations": "int8"}
        if precision == "fp16":
            return {"method": "float16 weights", "weights": "float16"}
        if precision == "int16x8":
            return {"method": "16x8 PTQ", "weights": f"int8 {weight_scales(per_tensor)}", "activations": "int16",
                    "ranges": "min/max"}
        if precision == "int8w":
            return {"method": "dynamic-range", "weights": "int8 per-channel", "activations": "float32"}
        return {}


def convert(source: dict, precision: str, out: str, calibration: str | None, io_dtype: str, qat: bool,
            per_tensor: bool = False, ranges: str = "default") -> dict:
    """A step: convert `source` to one .tflite file; return the file's I/O dtype and what the
    activation ranges changed."""
    with converter_for(source) as converter, activation_ranges(ranges, calibration) as ranges_summary:
        io_dtype = configure(converter, precision, calibration, io_dtype, qat, per_tensor)
        try:
            flatbuffer = converter.convert()
        except Exception as exc:  # noqa: BLE001 - the converter's errors have no common base
            if type(exc).__name__ != "ConverterError":
                raise
            raise ConversionError(f"tflite: the TFLite converter cannot convert this model ({first_line(exc)})") from None
    with open(out, "wb") as f:
        f.write(flatbuffer)
    return {"io_dtype": io_dtype, "ranges": ranges_summary}


@contextmanager
def converter_for(source: dict):
    """A TFLiteConverter for `source`; what it was saved to for converting is removed after."""
    from edgekit.formats.source import frozen_graph, keras_model

    tf = tensorflow()
    if source["kind"] != "keras":
        yield tf.lite.TFLiteConverter.from_concrete_functions([frozen_graph(source).function], tf.Module())
        return
    model = keras_model(source)
    with tempfile.TemporaryDirectory(prefix="forward-", dir=".") as folder:
        if save_forward(model, source["image_shape"], folder):
            yield tf.lite.TFLiteConverter.from_saved_model(folder)
        else:
            yield tf.lite.TFLiteConverter.from_keras_model(model)


def save_forward(model, image_shape, folder: str) -> bool:
    """Save the model's inference forward pass alone as a SavedModel in `folder`; False when
    TensorFlow cannot save it.

    `from_keras_model` saves the whole Keras object first, tracing every layer's call for
    Keras' own reloading: on MobileNetV2 that is 12 of its 14 s, against 1.6 s for this. The
    converter then reads the same kind of SavedModel (variables, not frozen constants: VGG16
    peaks at 4.8 GiB, below from_keras_model's 5.4) and writes the same file, bit for bit on
    MobileNetV2 in fp32 and int8 (measured).
    """
    tf = tensorflow()
    # the signature keeps the Keras model's input and output names, as from_keras_model's does
    names = getattr(model, "input_names", None) or ["input"]
    outputs = getattr(model, "output_names", None) or ["output_0"]
    try:
        spec = tf.TensorSpec((None, *image_shape), tf.float32, name=names[0])
        module = tf.Module()
        module.weights = list(model.variables)  # tracked, so the SavedModel holds them
        module.forward = tf.function(lambda x: {outputs[0]: model(x, training=False)}, input_signature=[spec],
                                       autograph=False)  # nothing to convert: no temporary .py files
        tf.saved_model.save(module, folder, signatures={"serving_default": module.forward.get_concrete_function()})
    except Exception:  # noqa: BLE001 - as the converter itself does, fall back to saving the Keras model
        return False
    return True


def configure(converter, precision: str, calibration: str | None, io_dtype: str, qat: bool,
              per_tensor: bool = False) -> str:
    import numpy as np

    tf = tensorflow()
    if precision == "fp32":
        return "float32"
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
        return "float32"
    if precision == "int8w":  # dynamic-range quantization: int8 weights, float activations
        return "float32"
    if calibration is not None:  # int8 and int16x8
        samples = np.load(calibration)

        def representative_dataset():
            for i in range(len(samples)):
                yield [samples[i:i + 1]]

        # With QAT the learned fake-quant ranges win; calibration fills in the tensors tfmot put
        # no fake-quant on (after the float Multiply of a squeeze-excite block, say), which the
        # converter otherwise leaves in float (EfficientNetB0: 33 of 82 conv ops).
        converter.representative_dataset = representative_dataset
    if precision == "int16x8":  # no integer I/O: the 16x8 file takes and gives float
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        converter._experimental_disable_per_channel = per_tensor  # noqa: SLF001
        return "float32"
    if not qat:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if per_tensor:  # the converter's only switch for it (TFLite's own tests use it); checked in the file
        converter._experimental_disable_per_channel = True  # noqa: SLF001
    return _integer_io(converter, io_dtype)


def _integer_io(converter, io_dtype: str) -> str:
    if io_dtype != "float32":
        tf = tensorflow()
        io_type = {"int8": tf.int8, "uint8": tf.uint8}[io_dtype]
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
    return io_dtype
