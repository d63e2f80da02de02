"""The ONNX reader's list of ops that do work of their own in an int8 (QDQ) file, as the latency
model prices them (edgekit/formats/onnx/facts.py): checked against ONNX Runtime's own profile of
the same file, not against a list written here."""

from __future__ import annotations

import json

import numpy as np
import pytest

# Kernels ONNX Runtime runs that the file does not price: views, and the transposes it inserts
# itself around integer kernels it runs channels-last
NOT_PRICED = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose"}


def _kernels_run(path, tmp_path) -> list[str]:
    """The op type of every kernel ONNX Runtime runs in one inference (its profiler's node events)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.intra_op_num_threads = 1
    options.profile_file_prefix = str(tmp_path / "profile")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    given = session.get_inputs()[0]
    session.run(None, {given.name: np.zeros([d if isinstance(d, int) else 1 for d in given.shape], np.float32)})
    with open(session.end_profiling()) as trace:
        events = json.load(trace)
    return [e["args"]["op_name"] for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]


@pytest.mark.heavy
def test_int8_ops_priced_are_the_kernels_onnx_runtime_runs(tmp_path):
    """In a QDQ file a relu is absorbed into its conv's output range and the QDQ pairs around
    integer kernels fold away; a sigmoid, the swish's Mul and a residual Add run as QLinear
    kernels of their own. The reader used to count those as fused into the conv (56 of the 70
    kernels of the swish network below; EfficientNetB0's swish is 40% of its int8 time)."""
    from edgekit.formats.facts import read_facts
    from edgekit.measure.calibration.suite import SUITE, write_suite
    from edgekit.support.progress import StepLog

    entries = [e for e in SUITE if e.name in ("net-mobile-128-106", "net-dense-64-300")]
    files = [f for f in write_suite(tmp_path, ["onnx"], ["int8"], StepLog(quiet=True), entries=entries)
             if f["precision"] == "int8"]
    assert len(files) == 2
    for file in files:
        facts = read_facts(file["path"], "onnx")
        kernels = [k for k in _kernels_run(file["path"], tmp_path) if k not in NOT_PRICED]
        assert len(facts.mac_ops) + len(facts.other_ops) == len(kernels), (file["entry"], sorted(kernels))
        assert len(facts.mac_ops) == sum(k in ("QLinearConv", "QLinearMatMul") for k in kernels)
