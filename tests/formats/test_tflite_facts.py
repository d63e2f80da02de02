"""The TFLite reader's ops that LiteRT's XNNPACK delegate leaves to slower built-in kernels
(edgekit/formats/tflite/facts.py XNNPACK_LEAVES_INT8), checked against the installed LiteRT: such
an op splits the delegated graph into one more partition."""

from __future__ import annotations

import numpy as np
import pytest


def _delegate_partitions(path) -> int:
    """How many DELEGATE nodes LiteRT made of the file (XNNPACK applies by default)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    return sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())


def _relu6_entry():
    from edgekit.measure.calibration.suite import Entry, _chain, _concat_relu_conv

    return Entry("relu6-after-concat-28x32", (28, 28, 32), _chain(lambda k, x: _concat_relu_conv(k, x, 6.0)))


@pytest.mark.heavy
@pytest.mark.parametrize("entry, op_type", [("avgpool3x3-28x64", "AVERAGE_POOL_2D"),
                                            ("relu-after-concat-28x32", "RELU"), ("relu6", "RELU6")])
def test_each_op_xnnpack_leaves_at_int8_splits_the_graph_and_is_priced_as_fallback(tmp_path, entry, op_type):
    """Chains of 4 links, each ending in a conv: at int8 the op before each conv is left outside
    the delegate (4 + 1 partitions), at fp32 the whole file is one partition. Every op type the
    reader lists is one of these cases."""
    from edgekit.formats.facts import read_facts
    from edgekit.formats.tflite.facts import XNNPACK_LEAVES_INT8
    from edgekit.measure.calibration.suite import SUITE, write_suite
    from edgekit.support.progress import StepLog

    assert XNNPACK_LEAVES_INT8 == {"AVERAGE_POOL_2D", "RELU", "RELU6"}  # each checked by a case here
    entries = [_relu6_entry()] if entry == "relu6" else [e for e in SUITE if e.name == entry]
    files = {f["precision"]: f["path"] for f in write_suite(tmp_path, ["tflite"], ["fp32", "int8"],
                                                             StepLog(quiet=True), entries=entries)}
    int8 = read_facts(files["int8"], "tflite")
    left = [op for op in int8.other_ops if op.group == "fallback"]
    assert len(left) == 4 and op_type in int8.ops
    assert _delegate_partitions(files["int8"]) == len(left) + 1  # quantize | op | conv | op | … | conv
    assert _delegate_partitions(files["fp32"]) == 1
    assert not [op for op in read_facts(files["fp32"], "tflite").other_ops if op.group == "fallback"]


def test_a_profile_calibrated_before_the_fallback_group_prices_it_as_pool():
    """Profiles written by suite v1 have no `fallback` prices: they load, and price such ops as pools."""
    from edgekit.measure.calibration.costs import COLUMNS, predict_ms
    from edgekit.measure.devices import CalibratedCosts
    from edgekit.measure.layer_work import LayerWork, NetworkWork

    costs: dict = {"overhead_us": 10.0}
    for kind, term in COLUMNS:
        if kind != "fallback":
            costs.setdefault(kind, {})[term] = 0.5
    loaded = CalibratedCosts.model_validate(costs).model_dump()
    assert loaded["fallback"] is None
    as_fallback = NetworkWork((LayerWork("p", "other", 0, 0, 1000, "fallback"),))
    as_pool = NetworkWork((LayerWork("p", "other", 0, 0, 1000, "pool"),))
    assert predict_ms(loaded, as_fallback) == predict_ms(loaded, as_pool) > 0
    assert np.isfinite(predict_ms(loaded, as_fallback))
