"""Layer work by kind (issue 25): the MACs, weights and activations a per-layer latency model
costs, counted by hand on a small network with every kind in it."""

from __future__ import annotations


def test_every_kind_is_counted_and_fused_layers_add_none():
    from edgekit.measure.layer_work import keras_network_work
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    L = keras.layers
    inputs = L.Input((8, 8, 3))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(4, 3, padding="same", use_bias=False, name="c")(inputs)))
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = L.Conv2D(4, 1, use_bias=False, name="pw")(y)
    x = L.Add(name="add")([x, y])
    x = L.Dense(10, name="fc")(L.GlobalAveragePooling2D(name="gap")(x))
    work = keras_network_work(keras.Model(inputs, x))

    by_name = {layer.name: layer for layer in work.layers}
    assert set(by_name) == {"c", "dw", "pw", "add", "gap", "fc"}  # BatchNorm and ReLU fuse into the conv
    assert (by_name["c"].kind, by_name["c"].macs, by_name["c"].weights) == ("conv", 64 * 4 * 27, 108)
    assert (by_name["dw"].kind, by_name["dw"].macs) == ("depthwise", 64 * 4 * 9)
    assert (by_name["pw"].kind, by_name["pw"].macs) == ("pointwise", 64 * 4 * 4)
    assert (by_name["fc"].kind, by_name["fc"].macs, by_name["fc"].weights) == ("dense", 40, 50)
    assert by_name["add"].kind == "other" and by_name["add"].macs == 0
    assert by_name["add"].activations == 3 * 64 * 4  # two inputs read, one output written
    summary = work.summary()
    assert summary["macs"]["conv"] == 6912 and summary["layers"]["other"] == 2


def test_every_format_of_every_precision_counts_the_same_macs_per_kind(tmp_path, cli):
    """What the latency model costs from a file (edgekit.formats.*.facts) is what it was fitted
    on from Keras: the same MACs per kind in TFLite, ONNX and OpenVINO, fp32 and int8; views, QDQ
    pairs, biases and fused activations (swish as LOGISTIC/Sigmoid then MUL too) add no layer
    (but in an int8 ONNX file, where they are kernels of their own)."""
    import numpy as np

    from edgekit.formats.facts import read_facts
    from edgekit.formats import format_of_suffix
    from edgekit.measure.layer_work import KINDS, file_network_work, keras_network_work
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    keras.utils.set_random_seed(0)
    L = keras.layers
    inputs = L.Input((32, 32, 3))
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="swish")(inputs)
    y = L.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    gate = L.Conv2D(16, 1, activation="sigmoid")(L.Reshape((1, 1, 16))(L.GlobalAveragePooling2D()(y)))
    y = L.Conv2D(16, 1)(L.Multiply()([y, gate]))  # a squeeze-excite gate, then a pointwise conv
    x = L.Add()([x, y])
    model = keras.Model(inputs, L.Dense(10, activation="softmax")(L.GlobalAveragePooling2D()(x)))
    model.save(tmp_path / "m.h5")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).uniform(0, 1, (32, 32, 32, 3)).astype(np.float32))
    result = cli("compress", tmp_path / "m.h5", "--int8", "--data", tmp_path / "calib.npz", "-o", tmp_path / "out",
                 "-q", "--no-bench")
    assert result.exit_code == 0, result.output

    expected = keras_network_work(model)
    files = [p for p in (tmp_path / "out").iterdir() if p.suffix in (".tflite", ".onnx", ".xml")]
    assert len(files) == 6, files
    for path in files:
        work = file_network_work(read_facts(path, format_of_suffix(path.suffix).name))
        assert {k: work.macs(k) for k in KINDS} == {k: expected.macs(k) for k in KINDS}, path.name
        if path.name.endswith(".int8.onnx"):
            # ONNX Runtime runs what follows an int8 conv (sigmoid, the swish's Mul) as kernels of their
            # own: tests/formats/test_onnx_facts.py checks that count against its profile
            continue
        # Files add at most the input transpose (ONNX), the I/O quantize pair (int8) and the softmax
        assert 0 <= work.count() - expected.count() <= 3, (path.name, work.summary(), expected.summary())
