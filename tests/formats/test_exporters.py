"""Every exporter passes the same behavioural tests on the digits model."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.formats import FORMATS, exporter_for
from edgekit.formats.exporter import ExportRequest
from edgekit.support.progress import StepLog
from edgekit.formats.runner import open_runner


@pytest.fixture(scope="module")
def loaded(digits):
    from edgekit.intake.model import load_model

    return load_model(digits["model"])


@pytest.fixture(scope="module")
def keras_model(loaded):
    return loaded.keras_model


def _request(loaded, digits, tmp_path, precisions, isolate=False):
    from edgekit.formats.source import keras_source

    (tmp_path / "out").mkdir()
    (tmp_path / "scratch").mkdir()
    calib = tmp_path / "scratch" / "calibration.npy"
    np.save(calib, np.load(digits["calib"])["x"][:64])
    source = keras_source(digits["model"], loaded.image_shape, live=None if isolate else loaded.keras_model)
    return ExportRequest(source=source, image_shape=loaded.image_shape, stem="m", outdir=tmp_path / "out",
                         scratch=tmp_path / "scratch", precisions=precisions, calibration=str(calib),
                         calibration_samples=64, isolate=isolate, formats=list(FORMATS))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("precisions,isolate", [(["fp32", "int8"], False), (["fp32", "int8w"], False),
                                                (["fp32", "int8"], True)])
@pytest.mark.heavy
def test_exporter_writes_runnable_artifacts(fmt, precisions, isolate, loaded, keras_model, digits, tmp_path):
    """In this process and with every step in a child process of its own: the same files."""
    request = _request(loaded, digits, tmp_path, precisions, isolate)
    artifacts = exporter_for(fmt).export(request, StepLog(quiet=True))
    assert [a.precision for a in artifacts] == precisions
    x = digits["x_val"][:50]
    reference = keras_model.predict(x, verbose=0)
    for artifact in artifacts:
        assert all(f.parent == request.outdir and f.stat().st_size > 0 for f in artifact.files)
        scores = open_runner(artifact.path).predict(x)
        assert scores.shape == (50, 10)
        if artifact.precision == "fp32":
            assert np.max(np.abs(scores - reference)) < 1e-4
        else:
            assert np.mean(scores.argmax(1) == reference.argmax(1)) >= 0.9
    assert sorted(p.name for p in request.outdir.iterdir()) == sorted(
        f.name for a in artifacts for f in a.files)  # intermediates stay in scratch


def test_onnx_and_openvino_convert_once_for_both_precisions(loaded, digits, tmp_path, monkeypatch):
    import openvino
    import tf2onnx

    calls = {"tf2onnx": 0, "openvino": 0}
    real_onnx, real_ov = tf2onnx.convert.from_graph_def, openvino.convert_model

    def count(name, real):
        def wrapper(*a, **k):
            calls[name] += 1
            return real(*a, **k)
        return wrapper

    monkeypatch.setattr(tf2onnx.convert, "from_graph_def", count("tf2onnx", real_onnx))
    monkeypatch.setattr(openvino, "convert_model", count("openvino", real_ov))
    request = _request(loaded, digits, tmp_path, ["fp32", "int8"])
    for fmt in ("onnx", "openvino"):
        exporter_for(fmt).export(request, StepLog(quiet=True))
    assert calls == {"tf2onnx": 1, "openvino": 1}


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_registered_format_provides_every_part_and_they_agree(fmt, loaded, keras_model, digits, tmp_path):
    """The template a new format passes (edgekit/formats/__init__.py): its int8 file is written,
    recognised by its bytes and by no other format, run, described by its facts, and its layers
    are found and read where the Keras layers are."""
    from edgekit.formats import PARTS, REGISTRY, format_of_suffix, get_format
    from edgekit.formats.graph import match
    from edgekit.formats.runner import artifact_format, sniff_format
    from edgekit.quality.layer_graph import keras_units

    kind = get_format(fmt)
    assert all(kind.part(name) is not None for name in PARTS)  # every part the registry lists resolves
    request = _request(loaded, digits, tmp_path, ["int8"])
    (artifact,) = [a for a in exporter_for(fmt).export(request, StepLog(quiet=True)) if a.precision == "int8"]
    assert [f.suffix for f in artifact.files] == list(kind.suffixes) and format_of_suffix(kind.suffix) is kind
    with open(artifact.path, "rb") as f:
        head = f.read(64)
    assert [name for name, other in REGISTRY.items() if other.part("sniff")(head)] == [fmt]
    assert sniff_format(artifact.path) == artifact_format(artifact.path) == fmt
    facts = kind.part("facts")(artifact.path)
    assert (facts.format, facts.precision) == (fmt, "int8") and facts.macs == loaded.macs
    units = keras_units(keras_model)
    graph = kind.part("graph")(artifact.path)
    paired = match(units, kind.part("chains")(graph))
    assert set(paired) == {u.name for u in units}  # every conv/dense layer found in the file
    taps = kind.part("taps")(graph, [paired[u.name].tap for u in units])
    values = taps.run(digits["x_val"][:4])
    assert [v.shape[0] for v in values] == [4] * len(units) and all(np.isfinite(v).all() for v in values)
    assert kind.part("search_step") in (kind.convert_step, kind.quantize_step)
    assert callable(kind.part("search")) and kind.part("search_method")
