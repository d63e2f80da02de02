"""The fixed calibration suite: chains of single layers of each kind over a range of shapes, and
small random networks of four families, written as files in every format and precision being
calibrated.

Shapes follow what mobile image classifiers are made of (MobileNet, EfficientNet, ResNet stages at
224 px and below), so every price in edgekit/measure/calibration/costs.py is seen at the sizes it
will be used at. Files are made with edgekit's own exporters, so they hold exactly the ops a
`compress` output would: the same reader costs both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

SUITE_VERSION = 3  # 2: average pools and lone ReLUs between convs (int8: outside LiteRT's XNNPACK delegate);
# 3: few pixels and more weights than the caches hold (the streamed-weight price)


@dataclass(frozen=True)
class Entry:
    name: str
    input_shape: tuple[int, int, int]
    build: Callable  # (keras, inputs) → outputs

    @property
    def network(self) -> bool:
        """A whole (random) network, not a layer: its fit weight is NETWORK_WEIGHT."""
        return self.name.startswith("net-")


NETWORK_WEIGHT = 3.0  # edgekit/measure/calibration/costs.py fit(): whole networks count three files' worth


def _conv(filters, kernel, stride=1):
    return lambda k, x: k.layers.Conv2D(filters, kernel, strides=stride, padding="same", activation="relu")(x)


def _depthwise(kernel, stride=1):
    return lambda k, x: k.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", activation="relu")(x)


def _dense(units):
    return lambda k, x: k.layers.Dense(units)(k.layers.Flatten()(x))


def _pool_then_conv(size, stride):
    def link(k, x):
        x = k.layers.AveragePooling2D(size, strides=stride, padding="same")(x)
        return k.layers.Conv2D(x.shape[-1], 1, activation="relu")(x)
    return link


def _concat_relu_conv(k, x, max_value=None):
    x = k.layers.ReLU(max_value)(k.layers.Concatenate()([x, x]))
    return k.layers.Conv2D(x.shape[-1] // 2, 1)(x)


def _squeeze_excite(k, x):
    scale = k.layers.Reshape((1, 1, x.shape[-1]))(k.layers.GlobalAveragePooling2D()(x))
    return k.layers.Multiply()([x, k.layers.Activation("sigmoid")(scale)])


def _chain(layer, repeat=4):
    """The same layer `repeat` times in a row: its cost in context, not the file's fixed cost."""
    def build(k, x):
        for _ in range(repeat):
            x = layer(k, x)
        return x
    return build


def _expand_project(expand):
    def pair(k, x):
        channels = x.shape[-1]
        x = k.layers.Conv2D(channels * expand, 1, activation="relu")(x)
        return k.layers.Conv2D(channels, 1)(x)
    return pair


def _activation(k, x, name):
    """relu, relu6, swish, or hard-swish built from layers as MobileNetV3 does (x · relu6(x + 3) / 6)."""
    if name == "hard_swish":
        gate = k.layers.Rescaling(1 / 6)(k.layers.ReLU(6.0)(k.layers.Rescaling(1.0, offset=3.0)(x)))
        return k.layers.Multiply()([x, gate])
    if name == "relu6":
        return k.layers.ReLU(6.0)(x)
    return k.layers.Activation(name)(x)


def _inverted_residual(k, x, expand, out, stride, kernel=3, squeeze=False, act="relu"):
    y = _activation(k, k.layers.Conv2D(x.shape[-1] * expand, 1)(x), act) if expand > 1 else x
    y = _activation(k, k.layers.DepthwiseConv2D(kernel, strides=stride, padding="same")(y), act)
    if squeeze:
        scale = k.layers.GlobalAveragePooling2D(keepdims=True)(y)
        scale = k.layers.Conv2D(max(8, y.shape[-1] // 4), 1, activation="relu")(scale)
        y = k.layers.Multiply()([y, k.layers.Conv2D(y.shape[-1], 1, activation="sigmoid")(scale)])
    y = k.layers.Conv2D(out, 1)(y)
    return k.layers.Add()([x, y]) if stride == 1 and x.shape[-1] == out else y


def _residual(k, x, filters, stride, bottleneck=False):
    if bottleneck:
        y = k.layers.Conv2D(filters // 4, 1, activation="relu")(x)
        y = k.layers.Conv2D(filters // 4, 3, strides=stride, padding="same", activation="relu")(y)
        y = k.layers.Conv2D(filters, 1)(y)
    else:
        y = k.layers.Conv2D(filters, 3, strides=stride, padding="same", activation="relu")(x)
        y = k.layers.Conv2D(filters, 3, padding="same")(y)
    shortcut = x if stride == 1 and x.shape[-1] == filters else k.layers.Conv2D(filters, 1, strides=stride)(x)
    return k.layers.ReLU()(k.layers.Add()([shortcut, y]))


def _dense_block(k, x, growth, layers):
    for _ in range(layers):
        y = k.layers.Conv2D(growth * 4, 1, activation="relu")(x)
        y = k.layers.Conv2D(growth, 3, padding="same", activation="relu")(y)
        x = k.layers.Concatenate()([x, y])
    return x


def _inception_block(k, x, width, stride):
    """Parallel 1×1, 3×3, double 3×3 and pooled branches, concatenated (Inception, GoogLeNet)."""
    def conv(y, filters, size, s=1):
        return k.layers.Conv2D(filters, size, strides=s, padding="same", activation="relu")(y)
    one = conv(x, width // 4, 1, stride)
    three = conv(conv(x, width // 8, 1), width // 4, 3, stride)
    double = conv(conv(conv(x, width // 8, 1), width // 4, 3), width // 4, 3, stride)
    pooled = conv(k.layers.MaxPooling2D(3, strides=stride, padding="same")(x), width // 4, 1)
    return k.layers.Concatenate()([one, three, double, pooled])


def _network(style: str, seed: int):
    """A small random network of one family's blocks: widths, depths, kernels, activations and
    strides drawn from `seed`, so the suite spans the design space without copying an architecture."""
    def build(k, x):
        rng = np.random.default_rng(seed)
        width = int(rng.choice([8, 16, 24, 32]))
        x = k.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu")(x)
        act = str(rng.choice(["relu", "relu6", "swish", "hard_swish"]))
        for stage in range(int(rng.integers(3, 6))):
            width = int(width * rng.choice([1.5, 2]))
            for block in range(int(rng.integers(1, 4))):
                stride = 2 if block == 0 and x.shape[1] > 3 else 1
                if style == "mobile":
                    x = _inverted_residual(k, x, int(rng.choice([1, 3, 4, 6])), width, stride, int(rng.choice([3, 5])),
                                           squeeze=bool(rng.integers(0, 2)), act=act)
                elif style == "residual":
                    x = _residual(k, x, width * (2 if stage else 1), stride, bottleneck=bool(rng.integers(0, 2)))
                elif style == "inception":
                    x = _inception_block(k, x, width * 2, stride)
                else:
                    x = _dense_block(k, x, int(rng.choice([8, 16])), int(rng.integers(2, 4)))
                    x = k.layers.AveragePooling2D()(k.layers.Conv2D(x.shape[-1] // 2, 1)(x)) if stride == 2 else x
        x = k.layers.GlobalAveragePooling2D()(x)
        return k.layers.Dense(int(rng.choice([10, 100, 1000])))(x)
    return build


def _random_networks(style: str, seeds: range):
    sizes = np.random.default_rng(seeds.start).choice(np.arange(64, 225, 16), len(seeds))
    return tuple(Entry(f"net-{style}-{int(size)}-{seed}", (int(size), int(size), 3), _network(style, seed))
                 for seed, size in zip(seeds, sizes))


SUITE: tuple[Entry, ...] = (
    # k×k convolutions, each four times in a row
    Entry("conv3x3-s2-224x3", (224, 224, 3), _conv(32, 3, 2)),
    Entry("conv3x3-112x16", (112, 112, 16), _chain(_conv(16, 3))),
    Entry("conv3x3-56x32", (56, 56, 32), _chain(_conv(32, 3))),
    Entry("conv3x3-28x64", (28, 28, 64), _chain(_conv(64, 3))),
    Entry("conv3x3-14x128", (14, 14, 128), _chain(_conv(128, 3))),
    Entry("conv3x3-14x256", (14, 14, 256), _chain(_conv(256, 3), 2)),
    Entry("conv3x3-7x512", (7, 7, 512), _chain(_conv(512, 3), 2)),
    Entry("conv5x5-28x32", (28, 28, 32), _chain(_conv(32, 5))),
    Entry("conv3x3-s2-56x64", (56, 56, 64), _chain(_conv(64, 3, 2), 2)),
    # the last stages of a network at small input sizes: few pixels, many weights (bound by the weights)
    Entry("conv3x3-3x512", (3, 3, 512), _chain(_conv(512, 3), 2)),
    Entry("conv3x3-4x256", (4, 4, 256), _chain(_conv(256, 3))),
    Entry("pointwise-2x1024-x1", (2, 2, 1024), _chain(_conv(1024, 1), 2)),
    Entry("pointwise-4x320-x4", (4, 4, 320), _chain(_expand_project(4), 2)),
    Entry("depthwise3x3-4x1152", (4, 4, 1152), _chain(_depthwise(3))),
    # more weights than a core's caches hold: every run streams them (ResNet-50 fp32: 100 MB)
    Entry("conv3x3-7x512-x8", (7, 7, 512), _chain(_conv(512, 3), 8)),
    Entry("conv3x3-3x512-x8", (3, 3, 512), _chain(_conv(512, 3), 8)),  # bound by streaming its 75 MB (fp32)
    Entry("pointwise-4x1024-x4-x2", (4, 4, 1024), _chain(_expand_project(4), 2)),
    Entry("conv3x3-14x384-x6", (14, 14, 384), _chain(_conv(384, 3), 6)),
    # 1×1 convolutions: expand, then project back
    Entry("pointwise-56x16-x6", (56, 56, 16), _chain(_expand_project(6), 2)),
    Entry("pointwise-28x32-x6", (28, 28, 32), _chain(_expand_project(6), 2)),
    Entry("pointwise-14x64-x6", (14, 14, 64), _chain(_expand_project(6), 2)),
    Entry("pointwise-14x96-x4", (14, 14, 96), _chain(_expand_project(4), 2)),
    Entry("pointwise-7x160-x6", (7, 7, 160), _chain(_expand_project(6), 2)),
    Entry("pointwise-7x512-x2", (7, 7, 512), _chain(_expand_project(2), 2)),
    Entry("pointwise-28x128-x1", (28, 28, 128), _chain(_conv(128, 1))),
    # depthwise convolutions
    Entry("depthwise3x3-112x32", (112, 112, 32), _chain(_depthwise(3))),
    Entry("depthwise3x3-56x96", (56, 56, 96), _chain(_depthwise(3))),
    Entry("depthwise3x3-28x192", (28, 28, 192), _chain(_depthwise(3))),
    Entry("depthwise3x3-14x576", (14, 14, 576), _chain(_depthwise(3))),
    Entry("depthwise3x3-7x960", (7, 7, 960), _chain(_depthwise(3))),
    Entry("depthwise5x5-14x480", (14, 14, 480), _chain(_depthwise(5))),
    Entry("depthwise3x3-s2-112x96", (112, 112, 96), _chain(_depthwise(3, 2), 2)),
    # fully connected, batch 1: bound by the weights
    Entry("dense-1280-1000", (1, 1, 1280), _dense(1000)),
    Entry("dense-2048-1000", (1, 1, 2048), _dense(1000)),
    Entry("dense-512-128", (1, 1, 512), _dense(128)),
    Entry("dense-7x7x64-256", (7, 7, 64), _dense(256)),
    # layers without MACs
    Entry("add-56x24", (56, 56, 24), _chain(lambda k, x: k.layers.Add()([x, x]))),
    Entry("maxpool-112x64", (112, 112, 64), lambda k, x: k.layers.MaxPooling2D(3, 2, padding="same")(x)),
    Entry("avgpool-global-7x1280", (7, 7, 1280), lambda k, x: k.layers.GlobalAveragePooling2D()(x)),
    Entry("concat-28x64", (28, 28, 64), lambda k, x: k.layers.Concatenate()([x, x])),
    Entry("squeeze-excite-14x480", (14, 14, 480), _squeeze_excite),
    # ops a delegate may leave to slower kernels at int8, splitting the graph around them
    # (edgekit/formats/tflite/facts.py): average pools between convs (Inception, NASNet, DenseNet)
    Entry("avgpool3x3-28x64", (28, 28, 64), _chain(_pool_then_conv(3, 1))),
    Entry("avgpool2x2-56x32", (56, 56, 32), _chain(_pool_then_conv(2, 2), 2)),
    # a ReLU no conv can absorb (after a concatenation: NASNet and Xception cells), then a 1×1 conv
    Entry("relu-after-concat-28x32", (28, 28, 32), _chain(_concat_relu_conv)),
    # small random networks of four families: how layers add up in context
    *_random_networks("mobile", range(100, 112)),
    *_random_networks("residual", range(200, 206)),
    *_random_networks("dense", range(300, 305)),
    *_random_networks("inception", range(400, 405)),
)
CALIBRATION_SAMPLES = 8  # int8 ranges: random inputs are enough to time a file


def application_entry(name: str, size: int) -> Entry:
    """A keras.applications architecture (random weights) as an entry: what a calibration is
    checked against, never part of the suite (benchmarks/calibration_check.py, the tests)."""
    def build(k, x):
        return getattr(k.applications, name)(input_tensor=x, weights=None, classes=1000).output
    return Entry(f"{name}-{size}", (size, size, 3), build)


def build_entry(entry: Entry):
    """The entry as a tf_keras model."""
    from edgekit.support.keras_compat import tf_keras

    k = tf_keras()
    inputs = k.Input(entry.input_shape)
    return k.Model(inputs, entry.build(k, inputs), name=entry.name.replace("-", "_"))


def write_suite(folder: Path, formats: list[str], precisions: list[str], log, entries=SUITE) -> list[dict]:
    """Every entry in every format and precision, into `folder`: [{entry, format, precision, path}]."""
    from edgekit.formats import exporter_for
    from edgekit.formats.exporter import ExportRequest
    from edgekit.formats.source import forget_live, keras_source
    from edgekit.support.progress import StepLog

    files = []
    rng = np.random.default_rng(0)
    quiet = StepLog(quiet=True)
    for number, entry in enumerate(entries, 1):
        with log.step(f"Suite file {number}/{len(entries)}: {entry.name}"):
            scratch = folder / f"scratch-{number}"
            scratch.mkdir()
            calibration = scratch / "calibration.npy"
            np.save(calibration, rng.uniform(0, 1, (CALIBRATION_SAMPLES, *entry.input_shape)).astype(np.float32))
            request = ExportRequest(
                source=keras_source(scratch / "model.h5", entry.input_shape, live=build_entry(entry)),
                image_shape=entry.input_shape, stem=entry.name, outdir=folder, scratch=scratch,
                precisions=precisions, calibration=str(calibration), calibration_samples=CALIBRATION_SAMPLES,
                formats=formats)
            for fmt in formats:
                for artifact in exporter_for(fmt).export(request, quiet):
                    files.append({"entry": entry.name, "format": fmt, "precision": artifact.precision,
                                  "path": artifact.path, "network": entry.network,
                                  "weight": NETWORK_WEIGHT if entry.network else 1.0})
            forget_live()
    return files
