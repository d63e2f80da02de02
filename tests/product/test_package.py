"""The package surface: light import, version, entry points, silenced native logs."""

from __future__ import annotations

import pytest

import subprocess
import sys
from pathlib import Path

import edgekit

BIN = Path(sys.executable).parent


def _run(*args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)


def test_import_does_not_load_tensorflow_or_converters():
    code = ("import sys, edgekit, edgekit.cli, edgekit.formats.runner, edgekit.intake.data, edgekit.quality.evaluation, edgekit.reports.report; "
            "heavy = [m for m in ('tensorflow', 'tf_keras', 'tf2onnx', 'openvino', 'nncf', 'onnxruntime') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    result = _run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stdout + result.stderr


def test_version_from_console_script_and_module():
    assert _run(str(BIN / "edgekit"), "--version").stdout.strip() == f"edgekit {edgekit.__version__}"
    assert _run(sys.executable, "-m", "edgekit", "--version").stdout.strip() == f"edgekit {edgekit.__version__}"


def test_console_script_error_is_one_clean_line(tmp_path):
    """Through the real entry point, the native TF/LiteRT logs are hidden: stderr is one line."""
    (tmp_path / "m.h5").write_text("not a model")
    result = _run(str(BIN / "edgekit"), "compress", str(tmp_path / "m.h5"), "--int8", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'm.h5'} is not a Keras model file (no HDF5 signature); pass a .h5 or .keras saved by model.save()"]
    assert list(tmp_path.iterdir()) == [tmp_path / "m.h5"]


@pytest.mark.heavy
def test_console_script_full_run_has_no_native_noise(digits, tmp_path):
    result = _run(str(BIN / "edgekit"), "compress", str(digits["model"]), "--int8", "--data", str(digits["calib"]),
                  "--formats", "tflite", "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    noise = [l for l in result.stderr.splitlines() if l.startswith(("I0000", "W0000", "E0000", "INFO:", "WARNING"))]
    assert noise == []
    assert "✓ TFLite: convert int8" in result.stderr
    assert "tflite-int8" in result.stdout


def test_debug_shows_traceback(tmp_path):
    (tmp_path / "m.h5").write_text("not a model")
    result = _run(str(BIN / "edgekit"), "--debug", "compress", str(tmp_path / "m.h5"))
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "ModelError" in result.stderr
