"""The architectures of devices/data/published_latencies.md, rebuilt at their published input
sizes (random weights, nothing downloaded), and their layer work per kind written to
devices/data/network_work.json for the latency-model fit (benchmarks/device_fit.py).

    python benchmarks/published_architectures.py          # rebuild all, rewrite the JSON

keras.applications where it has the network; the rest (ResNet-18/34, SqueezeNet 1.1, GoogLeNet,
AlexNet, EfficientNet-Lite0) from their papers' layer tables, below. Architectures with no builder
here (Inception v4, the EfficientNet-EdgeTPU family) are listed in the JSON as missing.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT = ROOT / "devices" / "data" / "network_work.json"


def _keras():
    from edgekit.support.keras_compat import tf_keras

    return tf_keras()


def _application(name: str, **kwargs):
    def build(size: int, classes: int):
        keras = _keras()
        return getattr(keras.applications, name)(input_shape=(size, size, 3), weights=None, classes=classes, **kwargs)
    return build


def _conv(x, filters, kernel, strides=1, padding="same", name=None):
    L = _keras().layers
    return L.ReLU()(L.Conv2D(filters, kernel, strides=strides, padding=padding, name=name)(x))


def resnet_basic(depths):
    """ResNet-18 ([2, 2, 2, 2]) / ResNet-34 ([3, 4, 6, 3]): basic blocks, BatchNorm after each conv."""
    def build(size: int, classes: int):
        keras = _keras()
        L = keras.layers
        inputs = L.Input((size, size, 3))
        x = L.ReLU()(L.BatchNormalization()(L.Conv2D(64, 7, strides=2, padding="same")(inputs)))
        x = L.MaxPooling2D(3, strides=2, padding="same")(x)
        for stage, blocks in enumerate(depths):
            filters = 64 * 2 ** stage
            for block in range(blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                shortcut = x
                y = L.ReLU()(L.BatchNormalization()(L.Conv2D(filters, 3, strides=strides, padding="same")(x)))
                y = L.BatchNormalization()(L.Conv2D(filters, 3, padding="same")(y))
                if strides != 1 or int(x.shape[-1]) != filters:
                    shortcut = L.BatchNormalization()(L.Conv2D(filters, 1, strides=strides)(x))
                x = L.ReLU()(L.Add()([y, shortcut]))
        x = L.Dense(classes, activation="softmax")(L.GlobalAveragePooling2D()(x))
        return keras.Model(inputs, x)
    return build


def squeezenet_11(size: int, classes: int):
    """SqueezeNet 1.1: 3×3/64 stem, eight fire modules, a 1×1 conv classifier."""
    keras = _keras()
    L = keras.layers

    def fire(x, squeeze, expand):
        s = _conv(x, squeeze, 1)
        return L.Concatenate()([_conv(s, expand, 1), _conv(s, expand, 3)])

    inputs = L.Input((size, size, 3))
    x = L.MaxPooling2D(3, strides=2)(_conv(inputs, 64, 3, strides=2, padding="valid"))
    x = L.MaxPooling2D(3, strides=2)(fire(fire(x, 16, 64), 16, 64))
    x = L.MaxPooling2D(3, strides=2)(fire(fire(x, 32, 128), 32, 128))
    for squeeze, expand in ((48, 192), (48, 192), (64, 256), (64, 256)):
        x = fire(x, squeeze, expand)
    x = L.GlobalAveragePooling2D()(_conv(x, classes, 1))
    return keras.Model(inputs, L.Softmax()(x))


def googlenet(size: int, classes: int):
    """Inception v1 (GoogLeNet) without the auxiliary heads."""
    keras = _keras()
    L = keras.layers

    def inception(x, c1, c3r, c3, c5r, c5, pool):
        branches = [_conv(x, c1, 1), _conv(_conv(x, c3r, 1), c3, 3), _conv(_conv(x, c5r, 1), c5, 5),
                    _conv(L.MaxPooling2D(3, strides=1, padding="same")(x), pool, 1)]
        return L.Concatenate()(branches)

    inputs = L.Input((size, size, 3))
    x = L.MaxPooling2D(3, strides=2, padding="same")(_conv(inputs, 64, 7, strides=2))
    x = L.MaxPooling2D(3, strides=2, padding="same")(_conv(_conv(x, 64, 1), 192, 3))
    x = inception(x, 64, 96, 128, 16, 32, 32)
    x = inception(x, 128, 128, 192, 32, 96, 64)
    x = L.MaxPooling2D(3, strides=2, padding="same")(x)
    for args in ((192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
                 (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128)):
        x = inception(x, *args)
    x = L.MaxPooling2D(3, strides=2, padding="same")(x)
    x = inception(inception(x, 256, 160, 320, 32, 128, 128), 384, 192, 384, 48, 128, 128)
    x = L.Dense(classes, activation="softmax")(L.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, x)


def alexnet(size: int, classes: int):
    """AlexNet as torchvision builds it (64-192-384-256-256 filters, 6×6 pooled, 4096-wide FCs)."""
    keras = _keras()
    L = keras.layers
    inputs = L.Input((size, size, 3))
    x = L.MaxPooling2D(3, strides=2)(_conv(inputs, 64, 11, strides=4))
    x = L.MaxPooling2D(3, strides=2)(_conv(x, 192, 5))
    x = L.MaxPooling2D(3, strides=2)(_conv(_conv(_conv(x, 384, 3), 256, 3), 256, 3))
    x = L.Flatten()(x)
    x = L.Dense(4096, activation="relu")(x)
    x = L.Dense(4096, activation="relu")(x)
    return keras.Model(inputs, L.Dense(classes, activation="softmax")(x))


def efficientnet_lite0(size: int, classes: int):
    """EfficientNet-B0's blocks without squeeze-excite, ReLU6 for swish (the Lite variant)."""
    import copy

    _keras()
    from tf_keras.src.applications import efficientnet  # the builder behind B0..B7, with its block table

    blocks = copy.deepcopy(efficientnet.DEFAULT_BLOCKS_ARGS)
    for block in blocks:
        block["se_ratio"] = 0.0
    return efficientnet.EfficientNet(1.0, 1.0, 224, 0.2, activation="relu6", blocks_args=blocks, model_name="lite0",
                                     weights=None, input_shape=(size, size, 3), classes=classes)


BUILDERS = {
    "mobilenet_v1": _application("MobileNet"),
    "mobilenet_v1_0.25": _application("MobileNet", alpha=0.25),
    "mobilenet_v2": _application("MobileNetV2"),
    "mobilenet_v3_small": _application("MobileNetV3Small", include_preprocessing=False),
    "mobilenet_v3_large": _application("MobileNetV3Large", include_preprocessing=False),
    "efficientnet_b0": _application("EfficientNetB0"),
    "efficientnet_lite0": efficientnet_lite0,
    "resnet18": resnet_basic([2, 2, 2, 2]),
    "resnet34": resnet_basic([3, 4, 6, 3]),
    "resnet50": _application("ResNet50"),
    "resnet152_v2": _application("ResNet152V2"),
    "densenet121": _application("DenseNet121"),
    "vgg16": _application("VGG16"),
    "inception_resnet_v2": _application("InceptionResNetV2"),
    "regnetx_800mf": _application("RegNetX008"),
    "squeezenet_v1.1": squeezenet_11,
    "googlenet": googlenet,
    "alexnet": alexnet,
}
def build_work(architecture: str, size: int | None, classes: int | None) -> dict:
    from edgekit.measure.layer_work import keras_network_work
    from edgekit.measure.published import DEFAULT_SIZE

    keras = _keras()
    model = BUILDERS[architecture](size or DEFAULT_SIZE, classes or 1000)
    work = keras_network_work(model)
    keras.backend.clear_session()
    return {"layers": [[layer.kind, layer.macs, layer.weights, layer.activations] for layer in work.layers],
            "summary": work.summary()}


def main() -> None:
    from edgekit.measure.published import network_key, read_published

    rows = read_published(ROOT / "devices" / "data" / "published_latencies.md")
    wanted = sorted({(r.architecture, r.input_size, r.classes) for r in rows}, key=lambda k: network_key(*k))
    networks, missing = {}, set()
    for architecture, size, classes in wanted:
        if architecture not in BUILDERS:
            missing.add(architecture)
            continue
        key = network_key(architecture, size, classes)
        networks[key] = build_work(architecture, size, classes)
        summary = networks[key]["summary"]
        print(f"{key:28s} {sum(summary['macs'].values()) / 1e6:9.1f} M MACs  {summary['weights'] / 1e6:6.2f} M weights",
              flush=True)
    OUT.write_text(json.dumps({"about": __doc__.strip().splitlines()[0], "missing": sorted(missing),
                               "networks": networks}, separators=(",", ":")) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}; no builder for: {', '.join(sorted(missing))}")


if __name__ == "__main__":
    main()
