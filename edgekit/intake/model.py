"""Model intake: identify a model file, vet it, load it, and check it is an image classifier.

Order matters for safety: the file is identified and its config read as plain data (h5py
attributes, or config.json inside the .keras zip) and scanned (edgekit.intake.safety) before any
Keras deserialization. Keras 3 models are then rebuilt as tf_keras models (edgekit.intake.bridge);
where that is impossible the Keras 3 model itself serves the PTQ/export path.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.errors import EdgekitError, ModelError, check_path_name, first_line, regular_file, require
from edgekit.intake.safety import Scan, check_declared_parameters, check_node_references, check_safe, scan
from edgekit.intake.saved_model_scan import scan_saved_model

MAX_CONFIG_BYTES = 64 << 20  # a larger config is not a real classifier: refuse before parsing
MAX_METADATA_BYTES = 1 << 20  # metadata.json holds a version and a date


@dataclass(frozen=True)
class ModelFile:
    """What the file says about itself, read without deserializing the model."""

    path: Path
    format: str  # "h5" | "keras" | "savedmodel"
    keras: str  # "tf_keras" | "keras3" | "none" (a plain SavedModel)
    keras_version: str
    config: dict[str, Any] | None  # None for a SavedModel
    size_bytes: int
    sha256: str
    learning_rate: float | None = None  # what the file's optimizer trained with, if it says (fine-tuning starts below it)


@dataclass
class LoadedModel:
    """The model as the pipeline uses it, and the facts the report needs."""

    file: ModelFile
    forward: Callable  # float32 NHWC batch → class scores; traced by the exporters
    trackable: Any  # the object owning the variables (TFLite's converter needs it)
    keras_model: Any | None  # the tf_keras working model (pruning/QAT); None when not bridged
    input_shape: tuple  # (None, H, W, C)
    num_classes: int
    params: int
    macs: int | None
    bridge: dict | None = None  # Keras 3 files: how the tf_keras rebuild went
    scan: Scan | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.input_shape[1:])  # type: ignore[return-value]


# --- identify and read, no deserialization --------------------------------------------------

def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(path)).encode())
            digest.update(sha256_of(file).encode())
        return digest.hexdigest()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _decode_attr(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _keras_flavour(version: str) -> str:
    return "keras3" if version.startswith("3") else "tf_keras"


def read_model_file(path: Path) -> ModelFile:
    """Identify the file and read its config, refusing anything that is not a Keras model."""
    path = Path(path)
    check_path_name(path, "model file", ModelError)
    if not path.exists():
        raise ModelError(f"model file {path} does not exist; check the path")
    if path.is_dir():
        return _read_saved_model_dir(path)
    regular_file(path, "model file", ModelError)
    if path.stat().st_size == 0:
        raise ModelError(f"model file {path} is empty")
    with open(path, "rb") as f:
        looks_like_zip = f.read(4) == b"PK\x03\x04"
    if looks_like_zip or zipfile.is_zipfile(path):
        return _read_keras_zip(path)  # a zip without its central directory fails there, clearly
    return _read_h5(path)


def _model_file(path: Path, fmt: str, version: str, config, keras: str | None = None) -> ModelFile:
    return ModelFile(path=path, format=fmt, keras=keras or _keras_flavour(version), keras_version=version,
                     config=config, size_bytes=_size_of(path), sha256=sha256_of(path))


def _parse_config(raw, path: Path) -> dict:
    if len(raw) > MAX_CONFIG_BYTES:
        raise ModelError(f"{path}: the model config is {len(raw) >> 20} MiB, over the 64 MiB limit; refused")
    config = _parse_json(raw, path, "model config")
    if not isinstance(config, dict):
        raise ModelError(f"{path} has a model config that is not an object: the file is corrupted")
    check_declared_parameters(config, _size_of(path), path)
    return config


def _parse_json(raw: bytes, path: Path, what: str):
    """JSON from inside a model file: UTF-8, nesting and number sizes bounded, else corrupted."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError):
        # ValueError: also Python's limit on the digits of an integer (5000-digit numbers)
        raise ModelError(f"{path} has a {what} that is not valid JSON (or not UTF-8, or nested too deeply): "
                         "the file is corrupted") from None


def _read_h5(path: Path) -> ModelFile:
    h5py = require("h5py", "compress")
    if not h5py.is_hdf5(str(path)):
        raise ModelError(
            f"{path} is not a Keras model file (no HDF5 signature); pass a .h5 or .keras saved by model.save()"
        )
    try:
        with h5py.File(path, "r") as f:
            raw_config = f.attrs.get("model_config")
            version = _decode_attr(f.attrs.get("keras_version", ""))
            has_weights = "model_weights" in f
            raw_training = f.attrs.get("training_config")
    except UnicodeDecodeError:
        raise ModelError(f"{path} has a model config that is not valid UTF-8: the file is corrupted") from None
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise ModelError(f"{path} is truncated or corrupted and cannot be read ({first_line(exc)})") from None
    if raw_config is None:
        hint = " (it holds weights only: save the whole model with model.save())" if not has_weights else ""
        raise ModelError(f"{path} has no model config{hint}; pass a full Keras model file")
    # h5py hands back undecodable UTF-8 as surrogates: turn them back into the bytes they were
    raw = raw_config if isinstance(raw_config, bytes) else str(raw_config).encode("utf-8", "surrogateescape")
    return replace(_model_file(path, "h5", version, _parse_config(raw, path)),
                   learning_rate=_h5_learning_rate(raw_training))


def _h5_learning_rate(raw) -> float | None:
    """The training_config attribute is optional and never worth refusing a model over."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    if not isinstance(raw, bytes) or len(raw) > MAX_CONFIG_BYTES:
        return None
    try:
        return recorded_learning_rate(json.loads(raw.decode("utf-8")))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def _read_keras_zip(path: Path) -> ModelFile:
    try:
        with zipfile.ZipFile(path) as zf:
            _check_members(zf, path)
            names = set(zf.namelist())
            if "config.json" not in names:
                raise ModelError(f"{path} is a zip archive without config.json: not a .keras model")
            raw = _read_member(zf, "config.json", MAX_CONFIG_BYTES, path)
            meta_raw = _read_member(zf, "metadata.json", MAX_METADATA_BYTES, path) if "metadata.json" in names else b"{}"
    except ModelError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError) as exc:
        raise ModelError(f"{path} is truncated or corrupted: not a readable .keras archive ({first_line(exc)})") from None
    meta = _parse_json(meta_raw, path, "metadata.json")
    version = str(meta.get("keras_version", "3")) if isinstance(meta, dict) else "3"
    config = _parse_config(raw, path)
    return replace(_model_file(path, "keras", version, config),
                   learning_rate=recorded_learning_rate(config.get("compile_config")))


ADAPTIVE_OPTIMIZERS = {"Adam", "AdamW", "Adamax", "Nadam", "RMSprop", "Adafactor", "Lion"}


def recorded_learning_rate(training_config) -> float | None:
    """The optimizer's learning rate from a file's training/compile config: a plain positive
    number or nothing (a schedule, a missing key or anything odd in a hostile file is ignored)."""
    if not isinstance(training_config, dict):
        return None
    optimizer = training_config.get("optimizer_config", training_config.get("optimizer"))
    if not isinstance(optimizer, dict) or str(optimizer.get("class_name", "")).split(">")[-1] not in ADAPTIVE_OPTIMIZERS:
        return None  # an SGD rate is on another scale than the Adam that fine-tuning uses
    config = optimizer.get("config")
    rate = config.get("learning_rate", config.get("lr")) if isinstance(config, dict) else None
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < 10:
        return None
    return float(rate)


MAX_ZIP_MEMBERS = 100_000


def _check_members(zf: zipfile.ZipFile, path: Path) -> None:
    """What Keras writes: plain, unencrypted members with relative names. An encrypted member
    made zipfile raise a RuntimeError (exit 3); Keras extracts the others to disk."""
    members = zf.infolist()
    if len(members) > MAX_ZIP_MEMBERS:
        raise ModelError(f"{path} holds {len(members):,} archive members, not a .keras model's few; refused")
    for info in members:
        parts = info.filename.rstrip("/").split("/")
        if info.flag_bits & 0x1:
            raise ModelError(f"{path}: member {info.filename[:100]!r} is encrypted; Keras writes none; refused")
        if info.filename.startswith("/") or "\\" in info.filename or any(p in ("", ".", "..") for p in parts):
            raise ModelError(f"{path}: member {info.filename[:100]!r} is not a plain relative name; refused")


def _read_member(zf: zipfile.ZipFile, name: str, limit: int, path: Path) -> bytes:
    """A zip member, inflated to at most `limit` bytes whatever its header claims."""
    with zf.open(name) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise ModelError(f"{path}: {name} inflates to over {limit >> 20} MiB, beyond any real model's; refused")
    return data


MAX_SAVED_MODEL_ENTRIES = 100_000


def _read_saved_model_dir(path: Path) -> ModelFile:
    if not (path / "saved_model.pb").is_file():
        raise ModelError(f"{path} is a folder without saved_model.pb: pass a Keras .h5/.keras file or a SavedModel folder")
    _check_saved_model_tree(path)
    return _model_file(path, "savedmodel", "", None, keras="none")


def _check_saved_model_tree(path: Path) -> None:
    """Only folders and regular files: TensorFlow reads what a link points at (assets/m ->
    /proc/self/mem made the load fail with an internal error, exit 3), and a FIFO blocks it."""
    seen = 0
    for root, folders, files in os.walk(path):
        for name in folders + files:
            seen += 1
            entry = Path(root) / name
            if seen > MAX_SAVED_MODEL_ENTRIES:
                raise ModelError(f"{path} holds over {MAX_SAVED_MODEL_ENTRIES:,} entries, not a SavedModel's; refused")
            if entry.is_symlink() or not (entry.is_dir() or entry.is_file()):
                kind = "a link" if entry.is_symlink() else "not a regular file"
                raise ModelError(f"{path}: {entry.relative_to(path)} is {kind}; a SavedModel holds plain files and "
                                 "folders only; refused")


# --- load -------------------------------------------------------------------------------------

def vet_model_file(path: Path, trust: bool = False):
    """Identify a model file and refuse what would run code or touch files when loaded, without
    loading it: (ModelFile, the scan). A sweep calls this once before any cell."""
    info = read_model_file(path)
    if info.config is not None:
        found = scan(info.config)
        check_safe(found, str(info.path), trust)
        if info.keras == "tf_keras":
            check_node_references(info.config, str(info.path))
    else:
        found = scan_saved_model(info.path)
        check_safe(found, str(info.path), trust, what="ops that touch files or run code, not just compute")
    return info, found


def load_model(path: Path, trust: bool = False, custom_objects: str | None = None) -> LoadedModel:
    """Identify, vet, load and check a classifier. Raises ModelError with a one-line reason."""
    info, found = vet_model_file(path, trust)
    objects = import_custom_objects(custom_objects) if custom_objects else {}
    if info.format == "savedmodel":
        loaded = _load_saved_model(info)
    elif info.keras == "tf_keras":
        loaded = _load_tf_keras(info, objects, trust)
    else:
        loaded = _load_keras3(info, objects, trust)
    loaded.scan = found
    return loaded


def classifier_facts(path: str, trust: bool = False) -> dict:
    """Load the model as a cell would and return what the sweep's driver checks the data against:
    a non-classifier or NaN weights then fail once there, not in every cell (a step: JSON out)."""
    loaded = load_model(Path(path), trust)
    return {"image_shape": list(loaded.image_shape), "num_classes": int(loaded.num_classes)}


def import_custom_objects(module_path: str) -> dict:
    """--custom-objects a.b.c: the classes and functions that module defines, by name."""
    try:
        module = importlib.import_module(module_path)
    except ImportError as exc:
        raise ModelError(f"--custom-objects {module_path} cannot be imported ({first_line(exc)})") from None
    return {name: obj for name, obj in vars(module).items() if not name.startswith("_") and callable(obj)}


def _deserialization_error(info: ModelFile, exc: BaseException) -> ModelError:
    return ModelError(f"{info.path} could not be loaded: it is truncated, corrupted or uses unknown layers "
                      f"({first_line(exc)})")


@contextmanager
def _loading(info: ModelFile):
    """Keras and TensorFlow deserializing a hostile config fail in any way their code allows
    (AssertionError, UnboundLocalError, ... besides the usual ValueError): all of them mean the
    file cannot be loaded, exit 2. Edgekit's own errors and running out of memory pass through."""
    try:
        yield
    except (EdgekitError, MemoryError):
        raise
    except Exception as exc:
        raise _deserialization_error(info, exc) from None


def _load_tf_keras(info: ModelFile, objects: dict, trust: bool) -> LoadedModel:
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    kwargs = {"safe_mode": not trust} if info.format == "keras" else {}
    with _loading(info):
        model = keras.models.load_model(str(info.path), compile=False, custom_objects=objects, **kwargs)
    _check_finite(info, model)
    return _from_keras_model(info, model, working=model)


def _load_keras3(info: ModelFile, objects: dict, trust: bool) -> LoadedModel:
    from edgekit.intake.bridge import BridgeUnavailable, bridge
    from edgekit.support.keras_compat import tensorflow

    tensorflow()  # TF_USE_LEGACY_KERAS must be set before Keras 3 pulls TensorFlow in
    keras3 = require("keras", "compress")
    with _loading(info):
        model = keras3.saving.load_model(str(info.path), compile=False, custom_objects=objects, safe_mode=not trust)
    _check_finite(info, model)
    _classifier_shapes(info, model)  # before the bridge, which runs the model on an input of this shape
    try:
        result = bridge(model)
    except BridgeUnavailable as exc:
        loaded = _from_keras_model(info, model, working=None)
        loaded.bridge = {"bridged": False, "reason": str(exc)}
        loaded.notes.append(f"not rebuilt in tf_keras ({exc}): int8/export work, pruning and QAT do not")
        return loaded
    loaded = _from_keras_model(info, result.model, working=result.model)
    loaded.bridge = {"bridged": True, "max_abs_diff": result.max_abs_diff}
    return loaded


def _classifier_shapes(info: ModelFile, model) -> tuple[tuple, int]:
    return check_classifier([_dims(t.shape) for t in model.inputs], [_dims(t.shape) for t in model.outputs],
                            str(info.path))


def _dims(shape) -> tuple:
    """A tensor's shape as a tuple; a shape of unknown rank (a config can claim one) as ("?",)."""
    try:
        return tuple(shape)
    except ValueError:
        return ("?",)


def _from_keras_model(info: ModelFile, model, working) -> LoadedModel:
    input_shape, num_classes = _classifier_shapes(info, model)
    return LoadedModel(
        file=info, forward=lambda x: model(x, training=False), trackable=model, keras_model=working,
        input_shape=input_shape, num_classes=num_classes, params=int(model.count_params()),
        macs=count_macs(model),
    )


def _load_saved_model(info: ModelFile) -> LoadedModel:
    from edgekit.support.keras_compat import tensorflow

    tf = tensorflow()
    with _loading(info):
        loaded = tf.saved_model.load(str(info.path))
        signature = loaded.signatures["serving_default"]
    args, kwargs = signature.structured_input_signature
    specs = list(args) + list(kwargs.values())
    outputs = signature.structured_outputs
    input_shape, num_classes = check_classifier([_dims(s.shape) for s in specs],
                                                [_dims(o.shape) for o in outputs.values()], str(info.path))
    input_name, output_name = next(iter(kwargs)), next(iter(outputs))
    variables = list(signature.variables)
    for var in variables:
        if not np.all(np.isfinite(var.numpy())):
            raise ModelError(f"{info.path}: variable {var.name} holds NaN or Inf; the model is corrupted")
    return LoadedModel(
        file=info, forward=lambda x: signature(**{input_name: x})[output_name], trackable=loaded,
        keras_model=None, input_shape=input_shape, num_classes=num_classes,
        params=int(sum(int(np.prod(v.shape)) for v in variables)), macs=None,
        notes=["a SavedModel has no Keras layers: int8/export work, pruning and QAT do not"],
    )


# --- checks -------------------------------------------------------------------------------------

def _check_finite(info: ModelFile, model) -> None:
    for layer in _layers_flat(model):
        for weight in layer.get_weights():
            if not np.all(np.isfinite(weight)):
                raise ModelError(f"{info.path}: layer {layer.name} has NaN or Inf weights; the model is corrupted")


def _signature(shapes) -> str:
    return ", ".join(str(tuple(s)) for s in shapes)


def check_classifier(inputs: list[tuple], outputs: list[tuple], source: str = "the model") -> tuple[tuple, int]:
    """An image classifier here: one rank-4 NHWC input, one (batch, classes) output."""
    described = f"inputs [{_signature(inputs)}] → outputs [{_signature(outputs)}]"
    if len(inputs) != 1 or len(inputs[0]) != 4:
        raise ModelError(
            f"{source}: expected an image classifier with one input of shape (batch, height, width, channels); "
            f"the model has {described}"
        )
    if any(d is None for d in inputs[0][1:]):
        raise ModelError(f"{source}: the model input needs a fixed height, width and channels; it has {described}")
    if len(outputs) != 1 or len(outputs[0]) != 2 or not outputs[0][1] or outputs[0][1] < 2:
        raise ModelError(f"{source}: expected one output of shape (batch, classes); the model has {described}")
    return (None, *[int(d) for d in inputs[0][1:]]), int(outputs[0][1])


def _layers_flat(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:  # a nested Model / Sequential
            yield from _layers_flat(layer)
        else:
            yield layer


def _spatial(shape) -> int:
    return int(shape[1] or 1) * int(shape[2] or 1)


def _shapes(layer):
    """(input shape, output shape) for single-tensor layers of tf_keras or Keras 3, else None."""
    try:
        in_shape, out_shape = layer.input.shape, layer.output.shape
    except (AttributeError, RuntimeError, ValueError):
        return None
    if isinstance(layer.input, (list, tuple)) or isinstance(layer.output, (list, tuple)):
        return None
    return tuple(in_shape), tuple(out_shape)


def count_macs(keras_model) -> int:
    """Multiply-accumulates per inference (batch 1), from layer shapes: conv and dense layers."""
    return int(sum(layer_macs(layer) for layer in _layers_flat(keras_model)))


def layer_macs(layer) -> int:
    """One conv/dense layer's multiply-accumulates per inference (batch 1); 0 for other layers."""
    shapes = _shapes(layer)
    if shapes is None:
        return 0
    in_shape, out_shape = shapes
    kind = type(layer).__name__
    if kind == "Conv2D":
        kh, kw = layer.kernel_size
        return _spatial(out_shape) * out_shape[-1] * kh * kw * in_shape[-1] // layer.groups
    if kind == "DepthwiseConv2D":
        kh, kw = layer.kernel_size
        return _spatial(out_shape) * out_shape[-1] * kh * kw
    if kind == "SeparableConv2D":
        kh, kw = layer.kernel_size
        depth = in_shape[-1] * layer.depth_multiplier
        return _spatial(out_shape) * (depth * kh * kw + depth * out_shape[-1])
    if kind == "Dense":
        return int(in_shape[-1]) * int(out_shape[-1]) * _batchless_size(in_shape[1:-1])
    return 0


def _batchless_size(dims) -> int:
    size = 1
    for d in dims:
        size *= int(d or 1)
    return size
