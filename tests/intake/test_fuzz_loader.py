"""Fuzz the whole intake, loaders included: a nested model's config (tf_keras .h5 and .keras,
Keras 3 .keras) is mutated with hostile values — module and class names that are not Keras'
(`this`, `os`, `subprocess`), passive-serialization and lambda markers, broken shapes — and
loaded for real. Whatever happens, only edgekit's errors come out (exit 2, never exit 3), no
module outside the Keras/TensorFlow stack is imported and nothing is written."""

from __future__ import annotations

import copy
import json
import shutil
import sys
import zipfile
from pathlib import Path

import h5py
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekit.errors import EdgekitError
from edgekit.compression.inspection import inspect_file
from tests.intake.test_fuzz_inspector import _mutate

HOSTILE = st.sampled_from([
    "this", "os", "subprocess", "Popen", "builtins", "eval", "print", "__doc__", "s", "this>s", "antigravity",
    "tf_keras", "keras", "keras.layers", "keras.src.saving", "tf_keras.src.engine.functional", "Functional", "Model",
    "__passive_serialization__", "__tuple__", "__lambda__", 0, None, [], {},
    {"module": "this", "class_name": "s", "config": {}, "registered_name": "this"},
    {"module": "os", "class_name": "system", "config": {"command": "touch planted"}, "registered_name": None},
    {"class_name": "__passive_serialization__", "config": {}},
    {"class_name": "__lambda__", "config": {"code": "", "defaults": None, "closure": None}},
])
# What loading a Keras model may import; anything else came from the file.
STACK = {"keras", "tf_keras", "tensorflow", "numpy", "h5py", "edgekit", "google", "absl", "ml_dtypes", "optree",
         "rich", "namex", "tensorboard", "scipy", "PIL", "packaging", "wrapt", "gast", "astunparse", "opt_einsum",
         "termcolor", "flatbuffers", "tree", "keras_tensor", "pydot", "yaml", "jax", "torch", "requests"}


def _nested_tf_keras(folder: Path) -> list[Path]:
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    inner_in = keras.Input((8, 8, 1))
    inner = keras.Model(inner_in, keras.layers.Conv2D(4, 3)(inner_in), name="inner")
    x = keras.Input((8, 8, 1))
    y = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inner(x)))
    model = keras.Model(x, y)
    model.save(folder / "tf.h5")
    model.save(folder / "tf.keras")
    return [folder / "tf.h5", folder / "tf.keras"]


def _nested_keras3(folder: Path) -> Path:
    import keras

    inner_in = keras.Input((8, 8, 1))
    inner = keras.Model(inner_in, keras.layers.Conv2D(4, 3)(inner_in), name="inner")
    x = keras.Input((8, 8, 1))
    y = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inner(x)))
    keras.Model(x, y).save(folder / "k3.keras")
    return folder / "k3.keras"


def _read_config(path: Path) -> dict:
    if path.suffix == ".h5":
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs["model_config"])
    return json.loads(zipfile.ZipFile(path).read("config.json"))


def _with_config(source: Path, config: dict, target: Path) -> Path:
    """A copy of source whose model config is `config` (weights unchanged)."""
    if source.suffix == ".h5":
        shutil.copy(source, target)
        with h5py.File(target, "r+") as f:
            f.attrs["model_config"] = json.dumps(config)
        return target
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.infolist():
            data = json.dumps(config).encode() if item.filename == "config.json" else zin.read(item.filename)
            zout.writestr(item, data)
    return target


@pytest.fixture(scope="module")
def nested_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nested")
    models = [*_nested_tf_keras(folder), _nested_keras3(folder)]
    for model in models:  # warm-up: what a good file imports is the stack's own business
        inspect_file(model)
    return [(model, _read_config(model)) for model in models]


def _load_only_edgekit_errors(path: Path, workdir: Path) -> None:
    before = set(sys.modules)
    try:
        inspect_file(path)
    except EdgekitError:
        pass
    imported = {name.split(".")[0] for name in set(sys.modules) - before} - STACK
    assert not imported, f"loading {path.name} imported {sorted(imported)}"
    assert sorted(p.name for p in workdir.iterdir()) == [path.name], "loading wrote files"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 2), choices=st.lists(st.integers(0, 10_000), min_size=1, max_size=3),
       values=st.lists(HOSTILE, min_size=3, max_size=3))
def test_hostile_nested_configs_load_to_edgekit_errors_only(nested_models, tmp_path_factory, monkeypatch, which,
                                                           choices, values):
    source, config = nested_models[which]
    workdir = tmp_path_factory.mktemp("load")
    monkeypatch.chdir(workdir)
    path = _with_config(source, _mutate(config, choices, copy.deepcopy(values)), workdir / f"fuzzed{source.suffix}")
    _load_only_edgekit_errors(path, workdir)


# Found by the fuzz above (each was exit 3): (file, where, value, what the refusal says)
FOUND = {
    "inbound node an object (UnboundLocalError)": (0, ["config", "layers", 2, "inbound_nodes", 0], {}, "could not be loaded"),
    "nested layer named 0 (AssertionError)": (0, ["config", "layers", 1, "config", "layers", 1, "name"], 0,
                                               "could not be loaded"),
    "input of unknown rank": (0, ["config", "layers", 0, "config", "batch_input_shape"], 0, "expected an image classifier"),
    "Keras 3 input without channels": (2, ["config", "layers", 0, "config", "batch_shape", 3], None, "fixed height"),
}


@pytest.mark.parametrize("case", FOUND)
def test_configs_that_crashed_the_loaders_are_exit_2(nested_models, cli, tmp_path, case):
    which, where, value, words = FOUND[case]
    source, config = nested_models[which]
    config = copy.deepcopy(config)
    parent = config
    for step in where[:-1]:
        parent = parent[step]
    parent[where[-1]] = value
    path = _with_config(source, config, tmp_path / f"bad{source.suffix}")
    for args in (["inspect", path], ["compress", path, "--formats", "tflite", "-o", tmp_path / "out"]):
        result = cli(*args)
        assert result.exit_code == 2, result.output
        assert words in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
