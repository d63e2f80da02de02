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
