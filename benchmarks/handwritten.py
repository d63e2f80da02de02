"""The hand-written path a user would take without edgekit, from each library's own docs.

    python benchmarks/handwritten.py MODEL.h5 CALIB.npz OUTDIR [FORMAT]

Writes OUTDIR/model.{fp32,int8}.{tflite,onnx,xml}:
- TFLite: TFLiteConverter.from_keras_model; int8 with Optimize.DEFAULT, a representative
  dataset and TFLITE_BUILTINS_INT8 (float input/output, like edgekit's default).
- ONNX: tf2onnx.convert.from_keras (opset 17); int8 with onnxruntime.quantization.quantize_static
  in QDQ format, as in ONNX Runtime's quantization example (its default types and per-tensor).
- OpenVINO: openvino.convert_model on the Keras model, save_model; int8 with nncf.quantize.
No verification: that is the work edgekit adds, and the comparison counts it against edgekit.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def tflite(model, calib, out: Path) -> None:
    import tensorflow as tf

    (out / "model.fp32.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in calib)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    (out / "model.int8.tflite").write_bytes(converter.convert())


class Reader:
    def __init__(self, name, calib):
        self.items = iter([{name: x[None]} for x in calib])

    def get_next(self):
        return next(self.items, None)


def onnx(model, calib, out: Path) -> None:
    import tensorflow as tf
    import tf2onnx
    from onnxruntime.quantization import QuantFormat, quantize_static

    spec = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="input")]
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(out / "model.fp32.onnx"))
    quantize_static(str(out / "model.fp32.onnx"), str(out / "model.int8.onnx"), Reader("input", calib),
                    quant_format=QuantFormat.QDQ)


def openvino(model, calib, out: Path) -> None:
    import nncf
    import openvino as ov

    ov_model = ov.convert_model(model)
    ov.save_model(ov_model, str(out / "model.fp32.xml"))
    quantized = nncf.quantize(ov_model, nncf.Dataset([x[None] for x in calib]), subset_size=len(calib))
    ov.save_model(quantized, str(out / "model.int8.xml"))


def main(model_path: str, calib_path: str, outdir: str, fmt: str | None = None) -> None:
    """Every format in this one process, or only FORMAT (tflite, onnx or openvino)."""
    import tf_keras

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    model = tf_keras.models.load_model(model_path)
    calib = np.load(calib_path)["x"].astype(np.float32)
    converters = {"tflite": tflite, "onnx": onnx, "openvino": openvino}
    for name, convert in converters.items():
        if fmt in (None, name):
            convert(model, calib, out)


if __name__ == "__main__":
    main(*sys.argv[1:5])
