"""Structured channel pruning, pattern by pattern (edgekit/compression/channels): each dependency
a real network has — a residual add, a concatenation, a depthwise conv, a squeeze-excite gate,
a grouped conv, a Flatten before a Dense — on a tiny tf_keras model whose chosen channels carry
nothing (zero filters, and zero BatchNorm scale and shift after them). Removing exactly those
must leave the function as it was (max |Δ| ≤ 1e-5) and every shape consistent; removing
channels that do carry something must give what the original gives with those channels masked.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.compression.channels.graph import channel_graph
from edgekit.compression.channels.rebuild import masked, rebuild
from edgekit.compression.channels.select import keep_count, macs_of_plan, plan, search_ratio
from edgekit.intake.model import count_macs
from edgekit.support.keras_compat import tf_keras

SILENT = [0, 2, 5, 7, 8, 11, 12, 15]  # of 16 channels: scattered, so an offset or order bug shows


def _layers():
    return tf_keras().layers


def _silence(model, producers: list[str], channels: list[int], norms: tuple[str, ...] = ()) -> None:
    """Zero the chosen output channels of each producer (kernel and bias) and of each BatchNorm
    (γ and β): those channels are then exactly 0 wherever they go."""
    for name in producers:
        layer = model.get_layer(name)
        weights = layer.get_weights()
        kernel = 1 if type(layer).__name__.startswith("Separable") else 0
        weights[kernel][..., channels] = 0
        if layer.use_bias:
            weights[-1][channels] = 0
        layer.set_weights(weights)
    for name in norms:
        gamma, beta, mean, var = model.get_layer(name).get_weights()
        gamma[channels], beta[channels] = 0, 0
        model.get_layer(name).set_weights([gamma, beta, mean, var])


def _randomize_norms(model, seed: int = 0) -> None:
    """BatchNorms with statistics and scales of a trained network (not 0/1), so that a channel
    sliced from the wrong place shows."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            c = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.2, c),
                               rng.uniform(0.5, 2.0, c)])


def _prune_group_of(model, producer: str, ratio: float, how: str = "l1"):
    """Remove `ratio` of the channels of the group `producer` is in (only that group)."""
    graph = channel_graph(model)
    (group,) = [g for g in graph.prunable() if producer in g.producers]
    keep = plan(graph, {group.id: ratio}, how, 1)
    return graph, group, keep, rebuild(graph, keep)


def _inputs(model, n: int = 8) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, *model.input.shape[1:])).astype(np.float32)


def _delta(a, b, x) -> float:
    return float(np.max(np.abs(np.asarray(a(x, training=False)) - np.asarray(b(x, training=False)))))


def _head(x, classes: int = 10):
    layers = _layers()
    return layers.Dense(classes, activation="softmax", name="probs")(layers.GlobalAveragePooling2D()(x))


def _conv_bn_relu(x, filters: int, name: str, kernel: int = 3):
    layers = _layers()
    x = layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=name)(x)
    return layers.ReLU()(layers.BatchNormalization(name=f"{name}_bn")(x))


def residual_model():
    keras, layers = tf_keras(), _layers()
    inputs = keras.Input((12, 12, 3))
    a = _conv_bn_relu(inputs, 16, "a")
    b = layers.BatchNormalization(name="b_bn")(layers.Conv2D(16, 3, padding="same", use_bias=False, name="b")(a))
    x = layers.ReLU()(layers.Add()([a, b]))
    return keras.Model(inputs, _head(_conv_bn_relu(x, 8, "c")))


def test_residual_add_ties_both_branches_and_silent_channels_go_without_a_trace():
    model = residual_model()
    _randomize_norms(model)
    _silence(model, ["a", "b"], SILENT, ("a_bn", "b_bn"))
    graph, group, keep, smaller = _prune_group_of(model, "a", 0.5, how="bn")
    assert sorted(group.producers) == ["a", "b"] and group.size == 16
    assert list(keep[group.id]) == [i for i in range(16) if i not in SILENT]
    assert smaller.get_layer("a").filters == smaller.get_layer("b").filters == 8
    assert smaller.get_layer("c").get_weights()[0].shape[2] == 8  # the consumer's input follows
    assert smaller.output.shape == model.output.shape
    assert _delta(model, smaller, _inputs(model)) <= 1e-5


def test_a_residual_written_as_a_tf_op_ties_both_operands_like_an_add():
    """`x + y` on two tensors is a TFOpLambda whose second operand is a keyword argument (RegNet's
    residuals): both operands' channels form one group, as with an Add layer."""
    keras, layers = tf_keras(), _layers()
    inputs = keras.Input((12, 12, 3))
    a = layers.Conv2D(16, 3, padding="same", activation="relu", name="a")(inputs)
    b = layers.Conv2D(16, 3, padding="same", name="b")(a)
    x = layers.ReLU()((a + b) * 0.5)
    model = keras.Model(inputs, _head(layers.Conv2D(8, 3, activation="relu", name="c")(x)))
    _silence(model, ["a", "b"], SILENT)
    graph, group, keep, smaller = _prune_group_of(model, "a", 0.5)
    assert sorted(group.producers) == ["a", "b"]
    assert smaller.get_layer("c").get_weights()[0].shape[2] == 8
    assert _delta(model, smaller, _inputs(model)) <= 1e-5


def test_concatenation_slices_each_part_at_its_own_offset():
    keras, layers = tf_keras(), _layers()
    inputs = keras.Input((10, 10, 3))
    p = layers.Conv2D(16, 3, padding="same", activation="relu", name="p")(inputs)
    q = layers.Conv2D(16, 1, activation="relu", name="q")(inputs)
    x = layers.Concatenate()([p, q])
    model = keras.Model(inputs, _head(layers.Conv2D(8, 3, activation="relu", name="r")(x)))
    _silence(model, ["p"], SILENT)
    _silence(model, ["q"], [1, 3, 4, 6, 9, 10, 13, 14])
    graph = channel_graph(model)
    groups = {g.producers[0]: g for g in graph.prunable()}
    keep = plan(graph, {groups["p"].id: 0.5, groups["q"].id: 0.5}, "l1", 1)
    smaller = rebuild(graph, keep)
    assert smaller.get_layer("r").get_weights()[0].shape[2] == 16  # 8 of p's, then 8 of q's
    assert _delta(model, smaller, _inputs(model)) <= 1e-5


def test_depthwise_and_separable_convolutions_follow_their_input_channels():
    keras, layers = tf_keras(), _layers()
    inputs = keras.Input((12, 12, 3))
    e = _conv_bn_relu(inputs, 16, "e", kernel=1)
    d = layers.ReLU()(layers.BatchNormalization(name="d_bn")(layers.DepthwiseConv2D(3, padding="same", name="d")(e)))
    s = layers.SeparableConv2D(8, 3, padding="same", name="s")(d)
    model = keras.Model(inputs, _head(s))
    _randomize_norms(model)
    _silence(model, ["e"], SILENT, ("e_bn", "d_bn"))
    graph, group, keep, smaller = _prune_group_of(model, "e", 0.5, how="bn")
    assert group.producers == ["e"]
    assert smaller.get_layer("d").get_weights()[0].shape == (3, 3, 8, 1)
    assert smaller.get_layer("s").get_weights()[0].shape == (3, 3, 8, 1)  # its depthwise part
    assert smaller.get_layer("s").get_weights()[1].shape == (1, 1, 8, 8)  # its pointwise part
    assert _delta(model, smaller, _inputs(model)) <= 1e-5


def squeeze_excite_model():
    keras, layers = tf_keras(), _layers()
    inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="s")(inputs)
    se = layers.Reshape((1, 1, 16))(layers.GlobalAveragePooling2D()(x))
    se = layers.Conv2D(4, 1, activation="relu", name="reduce")(se)
    se = layers.Conv2D(16, 1, activation="sigmoid", name="expand")(se)
    x = layers.Multiply()([x, se])
    return keras.Model(inputs, _head(layers.Conv2D(8, 3, activation="relu", name="t")(x)))


def test_squeeze_excite_gate_and_its_feature_map_lose_the_same_channels():
    model = squeeze_excite_model()
    _silence(model, ["s", "expand"], SILENT)
    graph, group, keep, smaller = _prune_group_of(model, "s", 0.5)
    assert sorted(group.producers) == ["expand", "s"]
    assert smaller.get_layer("expand").filters == 8 and smaller.get_layer("reduce").get_weights()[0].shape[2] == 8
    assert smaller.layers[[l.name for l in smaller.layers].index("expand") - 2].output.shape[-1] == 8  # the Reshape
    assert _delta(model, smaller, _inputs(model)) <= 1e-5
    # the reduction inside the gate is its own group: it can lose channels too (they change the gate)
    assert any(g.producers == ["reduce"] for g in graph.prunable())


def test_a_grouped_convolution_is_left_alone_and_named_while_the_rest_prunes():
    keras, layers = tf_keras(), _layers()
    inputs = keras.Input((10, 10, 3))
    h = layers.Conv2D(16, 3, padding="same", activation="relu", name="h")(inputs)
    g0 = layers.Conv2D(8, 1, activation="relu", name="g0")(h)
    grouped = layers.Conv2D(8, 3, padding="same", groups=2, activation="relu", name="grouped")(g0)
    model = keras.Model(inputs, _head(grouped))
    _silence(model, ["h"], SILENT)
    graph, group, keep, smaller = _prune_group_of(model, "h", 0.5)
    alone = graph.left_alone()
    assert set(alone) >= {"g0", "grouped"}, alone
    assert "grouped convolution" in alone["g0"] and "grouped convolution" in alone["grouped"]
    assert smaller.get_layer("grouped").get_weights()[0].shape == (3, 3, 4, 8)  # untouched
    assert smaller.get_layer("g0").get_weights()[0].shape == (1, 1, 8, 8)  # reads 8 of h's 16
    assert _delta(model, smaller, _inputs(model)) <= 1e-5


def test_flatten_before_dense_removes_the_rows_of_every_position():
    keras, layers = tf_keras(), _layers()
    inputs = keras.Input((6, 6, 1))
    x = layers.Conv2D(16, 3, activation="relu", name="conv")(inputs)  # 4×4×16
    x = layers.Dense(12, activation="relu", name="hidden")(layers.Flatten()(x))
    model = keras.Model(inputs, layers.Dense(10, activation="softmax", name="probs")(x))
    _silence(model, ["conv"], SILENT)
    graph, group, keep, smaller = _prune_group_of(model, "conv", 0.5)
    assert smaller.get_layer("hidden").get_weights()[0].shape == (4 * 4 * 8, 12)
    assert _delta(model, smaller, _inputs(model)) <= 1e-5


@pytest.mark.parametrize("build", [residual_model, squeeze_excite_model])
def test_removing_live_channels_computes_what_the_masked_original_computes(build):
    """Every group loses 40% of channels that carry something: the rebuilt model equals the
    original with the same channels' reads zeroed (the check the stage runs every time)."""
    model = build()
    _randomize_norms(model)
    graph = channel_graph(model)
    keep = plan(graph, {g.id: 0.4 for g in graph.prunable()}, "l2", 1)
    smaller = rebuild(graph, keep)
    x = _inputs(model)
    with masked(graph, keep) as original:
        assert _delta(original, smaller, x) <= 1e-5
    assert _delta(model, smaller, x) > 1e-3  # and they did carry something
    assert count_macs(smaller) == macs_of_plan(graph, keep) < count_macs(model)


def test_the_output_layer_and_the_input_keep_their_channels():
    model = residual_model()
    graph = channel_graph(model)
    assert graph.left_alone() == {"probs": "its softmax activation mixes its channels"}
    assert not any(g.size == 3 for g in graph.prunable())  # the RGB input


def test_a_model_of_dense_layers_after_a_softmax_free_head_names_the_output():
    keras, layers = tf_keras(), _layers()
    inputs = keras.Input((8,))
    model = keras.Model(inputs, layers.Dense(4, name="logits")(inputs))
    graph = channel_graph(model)
    assert graph.prunable() == [] and graph.left_alone() == {"logits": "feeds the model's output"}


def test_keep_count_rounds_to_simd_widths_and_never_empties_a_group():
    assert keep_count(64, 0.5, 8) == 32 and keep_count(64, 0.3, 8) == 48  # 44.8 → 48
    assert keep_count(12, 0.5, 8) == 6  # narrower than 2×8: channel by channel
    assert keep_count(16, 0.99, 8) == 8 and keep_count(3, 0.9, 1) == 1  # at most MAX_RATIO goes
    assert search_ratio(lambda r: r >= 0.3) == pytest.approx(0.3, abs=1e-3)
    assert search_ratio(lambda r: False) is None


@pytest.mark.slow
@pytest.mark.parametrize("flavour,name,size", __import__("tests.compression.test_model_zoo", fromlist=["ZOO"]).ZOO,
                         ids=[f"{f}-{n}" for f, n, _ in __import__("tests.compression.test_model_zoo",
                                                                      fromlist=["ZOO"]).ZOO])
def test_every_zoo_architecture_prunes_and_rebuilds_or_says_why(flavour, name, size, tmp_path):
    """keras.applications in both flavours: 30% of every prunable group removed, the rebuild equal
    to the masked original (the stage's own check), the model rebuilt with nothing removed equal
    to the original, and each conv/dense layer that kept its channels named with a reason."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-m", "tests.channels_zoo", flavour, name, str(size), str(tmp_path)],
                         cwd=root, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(flavour, name, {k: v for k, v in result.items() if k != "left_alone"}, list(result.get("left_alone", {}).items())[:3])
    if not result["prunable"]:  # a Keras 3 model the bridge cannot rebuild: no tf_keras layers to prune
        assert "hard_silu" in result["why"] or "bridge" in result["why"], result
        return
    assert result["pruned"] >= 0.8 * result["prunable"], result  # a group too narrow to lose one channel stays
    assert result["macs"][1] < 0.8 * result["macs"][0], result
    assert result["delta"] <= 1e-4 * max(1.0, result["scale"]) and result["untouched_delta"] <= 1e-5, result
    assert result["left_alone"] and all(isinstance(why, str) and why for why in result["left_alone"].values())
