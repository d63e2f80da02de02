"""The OpenVINO reader's list of ops that do work of their own, as the latency model prices them
(edgekit/formats/openvino/facts.py): checked against the nodes OpenVINO's CPU plugin executes
once it has compiled the same file, not against a list written here."""

from __future__ import annotations

import numpy as np
import pytest

# Executed nodes the file does not hold as ops: layout conversions and views the plugin inserts
NOT_PRICED = {"Input", "Output", "Const", "Reorder", "Reshape"}


def _nodes_executed(path) -> list[str]:
    """The layer type of every node the compiled model ran in one inference."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"PERF_COUNT": "YES", "INFERENCE_NUM_THREADS": 1})
    shape = compiled.input(0).get_partial_shape()
    compiled.create_infer_request().infer({0: np.zeros([d.get_length() if d.is_static else 1 for d in shape], np.float32)})
    kinds = []
    for node in compiled.get_runtime_model().get_ordered_ops():
        info = node.get_rt_info()
        if info["execTimeMcs"].astype(str) != "not_executed":
            kinds.append(info["layerType"].astype(str))
    return kinds


@pytest.mark.heavy
def test_ops_priced_are_the_nodes_openvino_executes(tmp_path):
    """The CPU plugin runs a residual sum, and the ReLU after it, as post-ops of the conv that feeds
    it, and folds every FakeQuantize but the input's into int8 kernels. The reader used to price
    each residual sum and its ReLU as ops of their own (28 where the plugin runs 24 for the
    residual network below) and none of the input's quantize."""
    from edgekit.formats.facts import read_facts
    from edgekit.measure.calibration.suite import SUITE, write_suite
    from edgekit.support.progress import StepLog

    entries = [e for e in SUITE if e.name in ("net-residual-64-200", "net-mobile-128-106")]
    files = write_suite(tmp_path, ["openvino"], ["fp32", "int8"], StepLog(quiet=True), entries=entries)
    assert len(files) == 4
    for file in files:
        facts = read_facts(file["path"], "openvino")
        nodes = [n for n in _nodes_executed(file["path"]) if n not in NOT_PRICED]
        assert len(facts.mac_ops) + len(facts.other_ops) == len(nodes), (file["path"].name, sorted(nodes))
