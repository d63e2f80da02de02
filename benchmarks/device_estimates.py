"""A spot check of `edgekit bench --device` estimates against a few published latencies, on
files made here. The estimates now come from the per-layer model fitted on
devices/data/published_latencies.md, which includes these rows: for its error on architectures
it never saw, run benchmarks/device_fit.py (leave-one-model-out).

Builds MobileNet v1, v2 and v3-Large (224x224, random weights), converts them to fp32 and
full-int8 TFLite, estimates each on a profile, and prints estimate / published.

    python benchmarks/device_estimates.py

Published numbers (same sources as the profiles):
  rpi4 fp32, XNNPACK 4 threads: v1 75 ms, v2 44 ms, v3-Large 41 ms
      https://github.com/google/XNNPACK/blob/master/README.md
  coral-edgetpu int8: v1 2.4 ms, v2 2.6 ms   https://coral.ai/docs/edgetpu/benchmarks/
  hailo8 int8, batch 1: mobilenet_v1 3305 FPS, mobilenet_v2_1.0 2597 FPS
      https://github.com/hailo-ai/hailo_model_zoo/blob/master/docs/public_models/HAILO8/HAILO8_classification.rst
  jetson-nano GPU, ncnn Vulkan: mobilenet (v1) 40.26 ms, mobilenet_v2 32.93 ms
      https://github.com/Tencent/ncnn/issues/3485
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

PUBLISHED = {  # (device, model, precision) -> ms
    ("rpi4", "v1", "fp32"): 75, ("rpi4", "v2", "fp32"): 44, ("rpi4", "v3-large", "fp32"): 41,
    ("coral-edgetpu", "v1", "int8"): 2.4, ("coral-edgetpu", "v2", "int8"): 2.6,
    ("hailo8", "v1", "int8"): 1000 / 3305, ("hailo8", "v2", "int8"): 1000 / 2597,
    ("jetson-nano", "v1", "fp16"): 40.26, ("jetson-nano", "v2", "fp16"): 32.93,
}


def build(name: str):
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    apps = keras.applications
    make = {"v1": apps.MobileNet, "v2": apps.MobileNetV2, "v3-large": apps.MobileNetV3Large}[name]
    # batch fixed to 1, as on the devices: a dynamic batch leaves SHAPE ops the Edge TPU cannot run
    return make(input_tensor=keras.Input(batch_shape=(1, 224, 224, 3)), weights=None)


def convert(model, precision: str) -> bytes:
    from edgekit.support.keras_compat import tensorflow

    tf = tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    if precision == "int8":
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)]
                                                    for _ in range(8))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.uint8
    return converter.convert()


def main() -> None:
    from edgekit.measure.devices import load_profile
    from edgekit.measure.estimate import estimate_all

    folder = Path(tempfile.mkdtemp(prefix="edgekit-estimates-"))
    files = {}
    for name in ("v1", "v2", "v3-large"):
        model = build(name)
        for precision in ("fp32", "fp16", "int8"):
            if name == "v3-large" and precision != "fp32":
                continue  # no published fp16/int8 number to compare with
            path = folder / f"mobilenet-{name}.{precision}.tflite"
            path.write_bytes(convert(model, precision))
            files[name, precision] = path
    print("| device | model | precision | MMACs | estimate ms | published ms | estimate/published | note |")
    print("|---|---|---|---|---|---|---|---|")
    for (device, name, precision), published in PUBLISHED.items():
        profile = load_profile(device)
        (est,) = estimate_all([files[name, precision]], profile)
        note = "calibration point" if name == "v2" else "held out"
        ms = est["latency_ms"]["estimate"]
        print(f"| {device} | MobileNet {name} | {precision} (computes {est['computes_in']}) | {est['macs'] / 1e6:.0f} "
              f"| {ms:.3g} | {published:.3g} | {ms / published:.2f} | {note} |")


if __name__ == "__main__":
    main()
