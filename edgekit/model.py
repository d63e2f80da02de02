"""Model intake: look at a model file before deserializing it, load it, check it is a classifier.

The file is inspected with h5py first (cheap, no TensorFlow, no code run), so a missing,
truncated or foreign file is refused with a clear message before Keras touches it.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import ModelError, require


@dataclass(frozen=True)
class ModelFile:
    """What the file says about itself, read without deserializing the model."""

    path: Path
    format: str  # "h5" | "keras"
    keras: str  # "tf_keras" | "keras3"
    keras_version: str
    config: dict[str, Any]
    size_bytes: int
    sha256: str


@dataclass
class LoadedModel:
    """The tf_keras working model and the facts the pipeline and the report need."""

    file: ModelFile
    keras_model: Any
    input_shape: tuple  # (None, H, W, C)
    num_classes: int
    params: int
    macs: int
    notes: list[str] = field(default_factory=list)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.input_shape[1:])  # type: ignore[return-value]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _decode_attr(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _keras_flavour(version: str) -> str:
    return "keras3" if version.startswith("3.") else "tf_keras"


def read_model_file(path: Path) -> ModelFile:
    """Identify the file and read its config, refusing anything that is not a Keras model."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file {path} does not exist; check the path")
    if path.is_dir():
        raise ModelError(
            f"{path} is a folder; TensorFlow SavedModel input is not supported yet — pass a Keras .h5 file"
        )
    if path.stat().st_size == 0:
        raise ModelError(f"model file {path} is empty")
    if zipfile.is_zipfile(path):
        return _read_keras_zip(path)
    return _read_h5(path)


def _read_h5(path: Path) -> ModelFile:
    h5py = require("h5py", "compress")
    if not h5py.is_hdf5(str(path)):
        raise ModelError(
            f"{path} is not a Keras model file (no HDF5 signature); pass a .h5 saved by model.save()"
        )
    try:
        with h5py.File(path, "r") as f:
            raw_config = f.attrs.get("model_config")
            version = _decode_attr(f.attrs.get("keras_version", ""))
            has_weights = "model_weights" in f
    except OSError as exc:
        raise ModelError(f"{path} is truncated or corrupted and cannot be read ({_first_line(exc)})") from None
    if raw_config is None:
        hint = " (it holds weights only: save the whole model with model.save())" if not has_weights else ""
        raise ModelError(f"{path} has no model config{hint}; pass a full Keras model file")
    try:
        config = json.loads(_decode_attr(raw_config))
    except json.JSONDecodeError:
        raise ModelError(f"{path} has a model config that is not valid JSON: the file is corrupted") from None
    return ModelFile(
        path=path,
        format="h5",
        keras=_keras_flavour(version),
        keras_version=version,
        config=config,
        size_bytes=path.stat().st_size,
        sha256=sha256_of(path),
    )


def _read_keras_zip(path: Path) -> ModelFile:
    try:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read("metadata.json")) if "metadata.json" in zf.namelist() else {}
            config = json.loads(zf.read("config.json"))
    except (KeyError, zipfile.BadZipFile, json.JSONDecodeError, OSError) as exc:
        raise ModelError(f"{path} is not a readable .keras archive ({_first_line(exc)})") from None
    version = str(meta.get("keras_version", "3"))
    return ModelFile(
        path=path,
        format="keras",
        keras=_keras_flavour(version) if version != "3" else "keras3",
        keras_version=version,
        config=config,
        size_bytes=path.stat().st_size,
        sha256=sha256_of(path),
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_model(path: Path) -> LoadedModel:
    """Read, load (tf_keras) and check a classifier. Raises ModelError with a one-line reason."""
    info = read_model_file(path)
    if info.keras == "keras3":
        raise ModelError(
            f"{info.path} was written by Keras {info.keras_version}; Keras 3 files are not supported yet — "
            "re-save the model with tf_keras (Keras 2) as .h5"
        )
    keras_model = _deserialize_tf_keras(info)
    input_shape, num_classes = check_classifier(keras_model)
    return LoadedModel(
        file=info,
        keras_model=keras_model,
        input_shape=input_shape,
        num_classes=num_classes,
        params=int(keras_model.count_params()),
        macs=count_macs(keras_model),
    )


def _deserialize_tf_keras(info: ModelFile):
    from edgekit.keras_compat import tf_keras

    keras = tf_keras()
    try:
        return keras.models.load_model(str(info.path), compile=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(
            f"{info.path} could not be loaded: it is truncated or corrupted ({_first_line(exc)})"
        ) from None


def _signature(shapes) -> str:
    return ", ".join(str(tuple(s)) for s in shapes)


def check_classifier(keras_model) -> tuple[tuple, int]:
    """An image classifier here: one rank-4 NHWC input, one (batch, classes) output."""
    inputs = [tuple(t.shape) for t in keras_model.inputs]
    outputs = [tuple(t.shape) for t in keras_model.outputs]
    described = f"inputs [{_signature(inputs)}] → outputs [{_signature(outputs)}]"
    if len(inputs) != 1 or len(inputs[0]) != 4:
        raise ModelError(
            f"expected an image classifier with one input of shape (batch, height, width, channels); "
            f"the model has {described}"
        )
    if any(d is None for d in inputs[0][1:]):
        raise ModelError(f"the model input needs a fixed height, width and channels; it has {described}")
    if len(outputs) != 1 or len(outputs[0]) != 2 or not outputs[0][1] or outputs[0][1] < 2:
        raise ModelError(
            f"expected one output of shape (batch, classes); the model has {described}"
        )
    return (None, *[int(d) for d in inputs[0][1:]]), int(outputs[0][1])


def _layers_flat(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:  # a nested Model / Sequential
            yield from _layers_flat(layer)
        else:
            yield layer


def _spatial(shape) -> int:
    h, w = shape[1], shape[2]
    return int(h or 1) * int(w or 1)


def count_macs(keras_model) -> int:
    """Multiply-accumulates per inference (batch 1), from layer shapes: conv and dense layers."""
    total = 0
    for layer in _layers_flat(keras_model):
        kind = type(layer).__name__
        try:
            in_shape, out_shape = layer.input_shape, layer.output_shape
        except (AttributeError, RuntimeError):
            continue
        if isinstance(in_shape, list) or isinstance(out_shape, list):
            continue
        if kind == "Conv2D":
            kh, kw = layer.kernel_size
            total += _spatial(out_shape) * out_shape[-1] * kh * kw * in_shape[-1] // layer.groups
        elif kind == "DepthwiseConv2D":
            kh, kw = layer.kernel_size
            total += _spatial(out_shape) * out_shape[-1] * kh * kw
        elif kind == "SeparableConv2D":
            kh, kw = layer.kernel_size
            depth = in_shape[-1] * layer.depth_multiplier
            total += _spatial(out_shape) * (depth * kh * kw + depth * out_shape[-1])
        elif kind == "Dense":
            total += int(in_shape[-1]) * int(out_shape[-1]) * _batchless_size(in_shape[1:-1])
    return int(total)


def _batchless_size(dims) -> int:
    size = 1
    for d in dims:
        size *= int(d or 1)
    return size
