"""Fuzz the inspector: whatever a model config holds, reading, vetting and translating it
raises only edgekit's own errors (which the CLI turns into exit 2), never a crash."""

from __future__ import annotations

import copy
import json
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekit.intake.bridge import translate, unbridgeable_layers
from edgekit.errors import EdgekitError
from edgekit.intake.model import read_model_file
from edgekit.intake.safety import check_declared_parameters, check_node_references, scan

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(["Conv2D", "Lambda", "TFOpLambda", "keras.layers", "__keras_tensor__", "relu", "os"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def _paths(node, prefix=()):
    """Every (container, key) position in a JSON tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield prefix + (key,)
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield prefix + (i,)
            yield from _paths(value, prefix + (i,))


def _mutate(config, choices, values):
    config = copy.deepcopy(config)
    positions = list(_paths(config))
    for choice, value in zip(choices, values):
        *parent_path, key = positions[choice % len(positions)]
        parent = config
        try:
            for step in parent_path:
                parent = parent[step]
            if value == "__delete__":
                del parent[key]
            else:
                parent[key] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this position
    return config


@pytest.fixture(scope="module")
def configs(digits, tmp_path_factory):
    """Two real configs to mutate: the tf_keras digits CNN and a Keras 3 functional model."""
    from tests.intake.test_intake import keras3_zoo

    root = tmp_path_factory.mktemp("fuzz")
    keras3_zoo().save(root / "zoo.keras")
    return [read_model_file(digits["model"]).config, read_model_file(root / "zoo.keras").config]


def _inspect_config(config):
    check_declared_parameters(config, 1 << 20, "fuzzed")
    found = scan(config)
    check_node_references(config, "fuzzed")
    if not found.refused and not unbridgeable_layers(config):
        check_node_references(translate(config), "translated")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 1), choices=st.lists(st.integers(0, 10_000), min_size=1, max_size=4),
       values=st.lists(JSON | st.just("__delete__"), min_size=4, max_size=4))
def test_mutated_configs_raise_only_edgekit_errors(configs, which, choices, values):
    config = _mutate(configs[which], choices, values)
    try:
        _inspect_config(config)
    except EdgekitError:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
       keep=st.integers(0, 4000))
def test_garbage_in_config_json_raises_only_edgekit_errors(configs, tmp_path_factory, text, keep):
    """Byte-level: a .keras whose config.json is cut short and followed by garbage."""
    path = tmp_path_factory.getbasetemp() / "garbage.keras"
    body = json.dumps(configs[1])[:keep] + text
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", '{"keras_version": "3.15.1"}')
        z.writestr("config.json", body)
    try:
        _inspect_config(read_model_file(path).config)
    except EdgekitError:
        pass
