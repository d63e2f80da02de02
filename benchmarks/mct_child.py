"""Sony MCT's Keras PTQ or GPTQ to int8 TFLite, for benchmarks/vs_mct.py. Runs in MCT's own virtual
environment (MCT pins TensorFlow below 2.16, so it cannot share edgekit's):

    python3 -m venv .mct && .mct/bin/pip install "tensorflow==2.15.*" model-compression-toolkit scikit-learn
    .mct/bin/python benchmarks/mct_child.py MODEL.h5 CALIB.npz VAL.npz OUT.tflite ptq|gptq

Uses MCT's default target platform (IMX500: per-channel symmetric int8 weights, int8 activations
with power-of-two ranges; its TFLite platform fails in MCT 2.6.1, see below) with its default
quantization config (MSE ranges, bias correction, shift-negative correction).
Prints one JSON line: the int8 file's top-1 on VAL, and the seconds MCT took (quantize + export).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def main(model_path: str, calib: str, val: str, out: str, mode: str) -> None:
    import model_compression_toolkit as mct
    import tensorflow as tf

    model = _load(tf, model_path)
    x = np.load(calib)["x"].astype(np.float32)
    batch = 16

    def representative():
        for start in range(0, len(x), batch):
            yield [x[start:start + batch]]

    # MCT 2.6.1's own TFLite platform stops with "An OpQuantizationConfig can't have both
    # enable_activation_quantization and quantization_preserving enabled": its default (IMX500) it is
    tpc = mct.get_target_platform_capabilities()
    started = time.perf_counter()
    if mode == "gptq":
        config = mct.gptq.get_keras_gptq_config(n_epochs=5)
        quantized, _ = mct.gptq.keras_gradient_post_training_quantization(
            model, representative, gptq_config=config, target_platform_capabilities=tpc)
    else:
        quantized, _ = mct.ptq.keras_post_training_quantization(model, representative,
                                                                 target_platform_capabilities=tpc)
    mct.exporter.keras_export_model(model=quantized, save_model_path=out,
                                    serialization_format=mct.exporter.KerasExportSerializationFormat.TFLITE,
                                    quantization_format=mct.exporter.QuantizationFormat.INT8)
    seconds = time.perf_counter() - started
    data = np.load(val)
    interpreter = tf.lite.Interpreter(out)
    inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], [len(data["x"]), *data["x"].shape[1:]])
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], data["x"].astype(inp["dtype"]))
    interpreter.invoke()
    scores = interpreter.get_tensor(outp["index"])
    top1 = float(np.mean(np.argmax(scores, axis=1) == data["y"]))
    ops = sorted({d["op_name"] for d in interpreter._get_ops_details()})  # noqa: SLF001
    print(json.dumps({"top1": top1, "seconds": round(seconds, 1), "ops": ops,
                      "input_dtype": np.dtype(inp["dtype"]).name}))


def _load(tf, path: str):
    """The .h5 tf_keras 2.21 wrote, in TensorFlow 2.15's Keras: the architecture from the file's
    JSON without the keys 2.15 does not know (InputLayer's `optional`), then the weights."""
    import h5py

    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
    for layer in config["config"]["layers"]:
        layer["config"].pop("optional", None)
    model = tf.keras.models.model_from_json(json.dumps(config))
    model.load_weights(path)
    return model


if __name__ == "__main__":
    main(*sys.argv[1:6])
