"""Large weights kept out of tf2onnx and attached afterwards: same file, shared graph untouched."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def big_weights_model():
    """A conv kernel (3·3·128·256 floats) and a dense kernel (4096·128) over the 1 MiB threshold."""
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.layers.Input((8, 8, 128)),
        keras.layers.Conv2D(256, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(64, 1),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])


def test_lifting_copies_and_leaves_the_shared_graph_whole(big_weights_model):
    from edgekit.formats.exporter import freeze
    from edgekit.formats.onnx.weights import LARGE_CONSTANT_BYTES, lift_large_constants

    frozen = freeze(lambda x: big_weights_model(x, training=False), (8, 8, 128))
    before = [(n.name, n.op) for n in frozen.graph_def.node]
    graph_def, weights = lift_large_constants(frozen.graph_def)
    assert [(n.name, n.op) for n in frozen.graph_def.node] == before  # the next converter's graph
    assert len(weights) == 2 and all(v.nbytes >= LARGE_CONSTANT_BYTES for v in weights.values())
    placeholders = {f"{n.name}:0" for n in graph_def.node if n.op == "Placeholder"}
    assert placeholders == {frozen.input_name, *weights}


def test_onnx_file_holds_the_weights_as_initializers_with_layouts_folded(big_weights_model, tmp_path):
    import onnx
    import onnxruntime as ort

    from edgekit.formats.exporter import freeze
    from edgekit.formats.onnx.export import convert
    from edgekit.formats.source import write_graph

    frozen = freeze(lambda x: big_weights_model(x, training=False), (8, 8, 128))
    source = write_graph(frozen, tmp_path / "frozen.pb", (8, 8, 128))
    convert(source, str(tmp_path / "m.onnx"))
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert [i.name for i in model.graph.input] == [frozen.input_name]  # weights are not inputs
    initializers = {i.name for i in model.graph.initializer}
    assert not [n for n in model.graph.node if n.op_type == "Transpose" and n.input[0] in initializers]
    x = np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 128)).astype(np.float32)
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {frozen.input_name: x})[0]
    assert np.max(np.abs(got - big_weights_model(x).numpy())) < 1e-5
