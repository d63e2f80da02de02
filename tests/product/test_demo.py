from __future__ import annotations

import pytest

import json
import time

from tests.conftest import snapshot

pytestmark = pytest.mark.heavy  # whole compress/sweep/demo runs: the full suite, not the quick loop


def test_demo_runs_the_whole_path(cli, tmp_path):
    start = time.perf_counter()
    result = cli("demo", "-o", tmp_path / "demo")
    elapsed = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    assert elapsed < 180  # the bar: under 3 minutes on 2 cores
    demo = tmp_path / "demo"
    assert {"digits.h5", "calib.npz", "val.npz", "compressed"} <= {p.name for p in demo.iterdir()}
    report = json.loads((demo / "compressed" / "report.json").read_text())
    assert len(report["artifacts"]) == 6
    ref = report["reference"]["accuracy"]["top1"]
    assert ref > 0.9
    for a in report["artifacts"]:
        assert abs(a["accuracy"]["top1"] - ref) <= 0.01
    assert "openvino-int8" in result.stdout


def test_demo_twice_needs_force(cli, tmp_path):
    assert cli("demo", "-o", tmp_path / "demo", "-q").exit_code == 0
    before = snapshot(tmp_path)
    again = cli("demo", "-o", tmp_path / "demo", "-q")
    assert again.exit_code == 2 and "--force" in again.stderr
    assert snapshot(tmp_path) == before
    assert cli("demo", "-o", tmp_path / "demo", "-q", "--force").exit_code == 0


def test_interrupted_demo_leaves_nothing_and_can_simply_be_rerun(cli, tmp_path, monkeypatch):
    from edgekit.compression import pipeline

    def interrupted(options, log):
        assert (tmp_path / "demo" / "nested" / "digits.h5").is_file()  # the inputs were written …
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "compress", interrupted)
    result = cli("demo", "-o", tmp_path / "demo" / "nested", "-q")
    assert result.exit_code == 130, result.output
    assert list(tmp_path.iterdir()) == []  # … and went with the run, folders it created too
