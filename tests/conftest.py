"""Shared fixtures: a real digits CNN (trained in seconds) and its data, made once per session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """digits.h5 (tf_keras, ~85k params), calib.npz and val.npz, plus the Keras val accuracy."""
    from edgekit.demo import train_digits_model

    root = tmp_path_factory.mktemp("digits")
    model_path = root / "digits.h5"
    x_train, y_train, x_val, y_val = train_digits_model(model_path)
    np.savez(root / "calib.npz", x=x_train, y=y_train)
    np.savez(root / "val.npz", x=x_val, y=y_val)
    return {"model": model_path, "calib": root / "calib.npz", "val": root / "val.npz",
            "x_val": x_val, "y_val": y_val}


HOT_PIXEL = 500.0  # one corrupt calibration image: one pixel 500× the brightest real one


@pytest.fixture(scope="session")
def hot_pixel_calibration(digits, tmp_path_factory):
    """The digits calibration data with one pixel of one image at 500 (the real pixels are 0..1)."""
    data = np.load(digits["calib"])
    x = data["x"][:200].copy()
    x[7, 3, 3, 0] = HOT_PIXEL
    path = tmp_path_factory.mktemp("hot") / "calib.npz"
    np.savez(path, x=x, y=data["y"][:200])
    return path


@pytest.fixture(scope="session")
def outlier_digits(digits, tmp_path_factory):
    """The digits CNN with two activation outliers (~400× the rest) in its hidden Dense layer:
    the same function in float, and a model plain per-tensor int8 breaks."""
    from edgekit.demo import add_activation_outliers

    path = tmp_path_factory.mktemp("outliers") / "outliers.h5"
    add_activation_outliers(digits["model"], path)
    return {**digits, "model": path}


@pytest.fixture(scope="session")
def validated_run(digits, tmp_path_factory):
    """compress --int8 to TFLite and ONNX with validation data and host latency: a report with
    every field filled (accuracy, latency, report.html plots). Returns the output folder."""
    from edgekit.cli import app

    out = tmp_path_factory.mktemp("validated") / "out"
    result = CliRunner().invoke(app, ["compress", str(digits["model"]), "--int8", "--data", str(digits["calib"]),
                                      "--val", str(digits["val"]), "--formats", "tflite,onnx", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def cli():
    """Run the edgekit CLI in-process; returns click's Result (exit_code, stdout, stderr).

    `compress` gets --no-bench unless the test passes --bench-here: latency measurement costs
    seconds per run and has its own tests (tests/measure/test_bench.py)."""
    from edgekit.cli import app

    runner = CliRunner()

    def invoke(*args):
        args = [str(a) for a in args]
        if args and args[0] == "compress":
            args = [a for a in args if a != "--bench-here"] if "--bench-here" in args else [*args, "--no-bench"]
        return runner.invoke(app, args)

    return invoke


def refusal_line(result, words: list[str]) -> str:
    """A bad-input run: exit 2 and exactly one `error:` line that holds every word."""
    assert result.exit_code == 2, result.output
    (line,) = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    for word in words:
        assert word in line, (word, line)
    return line


def interruptible():
    """preexec_fn for a child a test will Ctrl-C: SIGINT back to its default, as in a terminal's
    foreground job. pytest started as a background job of a script (`pytest &`) ignores SIGINT,
    its children inherit that, and Python keeps an ignored SIGINT ignored: the test would signal
    a process that cannot hear it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under folder with its size and mtime: proof that nothing changed."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


# Tiers (pyproject.toml markers): a test that needs the two-node Ray cluster is `cluster`, one
# that starts sshd is `system`, decided by the fixtures it asks for so no test can forget its mark.
TIER_FIXTURES = {"ray_cluster": "cluster", "ray_sweep": "cluster", "sshd": "system"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, tier in TIER_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(tier)
