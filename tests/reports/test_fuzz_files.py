"""Fuzz the other files users hand edgekit: report.json for the gate, .npz headers, recipe and
gate YAML. Whatever they hold, only edgekit's own errors come out (exit 1 or 2), never a crash."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekit.errors import EdgekitError
from tests.intake.test_fuzz_inspector import JSON, _mutate

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SPECIAL_NUMBERS = st.sampled_from([0, -1, 10 ** 30, -0.0, 1e308, True, "1.5", [], {}, None])


@FUZZ
@given(choices=st.lists(st.integers(0, 10_000), min_size=1, max_size=4),
       values=st.lists(JSON | SPECIAL_NUMBERS | st.just("__delete__"), min_size=4, max_size=4),
       baseline_side=st.booleans())
def test_mutated_reports_raise_only_edgekit_errors(validated_run, tmp_path_factory, choices, values, baseline_side):
    from edgekit.reports.gating import Thresholds, run_gate

    real = validated_run / "report.json"
    mutated = tmp_path_factory.getbasetemp() / "mutated.json"
    mutated.write_text(json.dumps(_mutate(json.loads(real.read_text()), choices, values)))
    report, baseline = (real, mutated) if baseline_side else (mutated, real)
    try:
        run_gate(report, baseline, Thresholds())
    except EdgekitError:
        pass


@FUZZ
@given(text=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
       keep=st.integers(0, 3000))
def test_cut_and_garbled_reports_raise_only_edgekit_errors(validated_run, tmp_path_factory, text, keep):
    from edgekit.reports.gating import load_report

    path = tmp_path_factory.getbasetemp() / "garbled.json"
    path.write_text((validated_run / "report.json").read_text()[:keep] + text, errors="surrogateescape")
    try:
        load_report(path, "report")
    except EdgekitError:
        pass


SHAPES = st.one_of(st.lists(st.integers(-2, 10 ** 13), max_size=5).map(tuple), st.text(max_size=8),
                   st.integers(), st.none())
DESCR = st.sampled_from(["<f4", "|u1", "<i8", "|O", "<U3", "V8", "zz", "<f4,<i4", ""]) | st.text(max_size=5)


@FUZZ
@given(shape=SHAPES, descr=DESCR, fortran=st.booleans() | st.integers() | st.none(), version=st.sampled_from([1, 2, 3]),
       payload=st.binary(max_size=600), raw_header=st.none() | st.text(max_size=60))
def test_npz_headers_raise_only_edgekit_errors(tmp_path_factory, shape, descr, fortran, version, payload, raw_header):
    from edgekit.intake.data import load_dataset

    header = raw_header if raw_header is not None else repr(
        {"descr": descr, "fortran_order": fortran, "shape": shape})
    body = header.encode("latin-1", "replace") + b"\n"
    length = len(body).to_bytes(2 if version == 1 else 4, "little")
    npy = b"\x93NUMPY" + bytes([version, 0]) + length + body + payload
    path = tmp_path_factory.getbasetemp() / "fuzzed.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", npy)
        archive.writestr("y.npy", _npy(np.zeros(4, np.int64)))
    try:
        load_dataset(path, (8, 8, 1), None, "--data", need_labels=True)
    except EdgekitError:
        pass


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
    | st.sampled_from(["prune", "qat", "tflite", "2:4", "int8", "unit"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["stages", "type", "sparsity", "epochs", "int8", "formats", "calib_samples", "io_dtype",
                         "max_accuracy_drop", "min_accuracy", "allow_missing", "structure"]) | st.text(max_size=6),
        children, max_size=4),
    max_leaves=10,
)


@FUZZ
@given(data=YAML_VALUES, garbage=st.none() | st.text(max_size=80), kind=st.sampled_from(["recipe", "gate"]))
def test_recipe_and_gate_yaml_raise_only_edgekit_errors(tmp_path_factory, data, garbage, kind):
    from edgekit.compression.config import load_recipe
    from edgekit.reports.gating import load_thresholds

    path = tmp_path_factory.getbasetemp() / "fuzzed.yaml"
    path.write_text(garbage if garbage is not None else yaml.safe_dump(data), errors="surrogateescape")
    try:
        load_recipe(str(path)) if kind == "recipe" else load_thresholds(path, {})
    except EdgekitError:
        pass


def test_fuzzers_reach_valid_files(validated_run, tmp_path):
    """The fuzzers above start from files that pass: a failure in them is the mutation's."""
    from edgekit.intake.data import load_dataset
    from edgekit.reports.gating import Thresholds, run_gate

    report = validated_run / "report.json"
    assert run_gate(report, report, Thresholds())["passed"]
    np.savez(tmp_path / "ok.npz", x=np.zeros((4, 8, 8, 1), np.float32), y=np.zeros(4, np.int64))
    assert len(load_dataset(tmp_path / "ok.npz", (8, 8, 1), None, "--data", need_labels=True)) == 4
