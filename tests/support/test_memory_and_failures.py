"""Real models at real sizes: steps in child processes, out-of-memory, unsupported ops, stale
folders, grouped convolutions, Keras-shipped classes, and precision read from the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from tests.conftest import refusal_line


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """The issue's reproduction: a tf_keras Sequential with Conv2D(8, 3, groups=2), given
    distinct outputs (a large-scale head) so agreement means something."""
    from edgekit.support.keras_compat import tf_keras

    keras = tf_keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.Input((16, 16, 4)),
        keras.layers.Conv2D(8, 3, groups=2, activation="relu"),
        keras.layers.Conv2D(16, 3, groups=4),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(5, activation="softmax", kernel_initializer=keras.initializers.RandomNormal(stddev=3.0)),
    ])
    root = tmp_path_factory.mktemp("grouped")
    model.save(root / "grouped.h5")
    rng = np.random.default_rng(0)
    np.savez(root / "calib.npz", x=rng.uniform(0, 1, (32, 16, 16, 4)).astype(np.float32), y=rng.integers(0, 5, 32))
    return root


@pytest.mark.parametrize("mode", ["inline", "child"])
@pytest.mark.heavy
def test_grouped_convolution_exports_and_verifies_in_all_formats(grouped, cli, tmp_path, monkeypatch, mode):
    monkeypatch.setenv("EDGEKIT_STEP_PROCESSES", mode)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    result = cli("compress", grouped / "grouped.h5", "--int8", "--data", grouped / "calib.npz", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert {a["id"] for a in report["artifacts"]} == {f"{f}-{p}" for f in ("tflite", "onnx", "openvino")
                                                      for p in ("fp32", "int8")}
    for artifact in report["artifacts"]:
        check = artifact["verification"]
        if artifact["precision"] == "fp32":
            assert check["max_abs_diff"] <= 1e-4
        else:
            assert artifact["agreement"] >= 0.8, artifact
            assert artifact["quantization"]["int8_mac_share"] == 1.0, artifact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing in the current folder
    # every step's peak memory is recorded beside its time
    assert set(report["peak_rss_mb"]) >= {k for k in report["timings_s"] if k != "total"}
    assert all(v > 0 for v in report["peak_rss_mb"].values())


def test_unsupported_ops_fail_that_format_with_exit_2(grouped, cli, tmp_path, monkeypatch):
    """Without the shared inlining the grouped convolution stays a PartitionedCall, which
    tf2onnx cannot convert: exit 2 naming the op and the format that worked, nothing written."""
    import edgekit.formats.graph_fixes as fixes

    monkeypatch.setattr(fixes, "inline_calls", lambda graph_def: None)
    monkeypatch.setenv("EDGEKIT_STEP_PROCESSES", "inline")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    result = cli("compress", grouped / "grouped.h5", "--int8", "--data", grouped / "calib.npz", "-o", out,
                 "--formats", "tflite,onnx")
    line = refusal_line(result, ["onnx", "PartitionedCall", "--formats tflite"])
    assert "✓ ONNX" not in result.stderr
    assert list(tmp_path.iterdir()) == [], line  # no output, no sym_shape_infer_temp.onnx


def _kill_self_worker(job):
    return [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]


def test_a_step_killed_by_the_system_is_exit_2_naming_the_step(digits, cli, tmp_path, monkeypatch):
    import edgekit.support.isolated_steps as steps

    monkeypatch.setenv("EDGEKIT_STEP_PROCESSES", "child")
    monkeypatch.setattr(steps, "worker_command", _kill_self_worker)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    out = tmp_path / "out"
    result = cli("compress", digits["model"], "--int8", "--data", digits["calib"], "-o", out)
    refusal_line(result, ["TFLite: convert fp32", "killed", "signal 9", "out of memory", "--formats onnx,openvino"])
    assert not out.exists()
    assert list((tmp_path / "tmp").iterdir()) == []  # the scratch folder went too
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # and the staging folder


def test_a_step_that_cannot_fit_is_refused_before_any_work(digits, cli, tmp_path, monkeypatch):
    import edgekit.support.memory as memory

    monkeypatch.setattr(memory, "available_mb", lambda: 200.0)
    out = tmp_path / "out"
    result = cli("compress", digits["model"], "--int8", "--data", digits["calib"], "-o", out,
                 "--formats", "onnx,tflite")
    line = refusal_line(result, ["needs about", "200 MiB are available", "--formats"])
    assert "TFLite: convert" not in result.stderr  # refused before the first conversion
    assert not out.exists(), line


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_stale_staging_and_scratch_folders_are_removed_by_the_next_run(digits, cli, tmp_path, monkeypatch):
    from edgekit.support.output_folders import OWNER_FILE, owner_record

    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))

    def leftover(parent, name, pid):
        folder = parent / name
        folder.mkdir()
        (folder / "big.bin").write_bytes(b"x" * 1000)
        (folder / OWNER_FILE).write_text(owner_record(pid, None))
        return folder

    dead = _dead_pid()
    stale_staging = leftover(tmp_path, ".out.edgekit-dead1", dead)
    stale_scratch = leftover(scratch_root, "edgekit-scratch-dead2", dead)
    live_staging = leftover(tmp_path, ".out.edgekit-live", os.getpid())  # a run still going
    unrelated = tmp_path / ".out.other"
    unrelated.mkdir()
    result = cli("compress", digits["model"], "-o", tmp_path / "out", "--formats", "tflite", "-q")
    assert result.exit_code == 0, result.output
    assert not stale_staging.exists() and not stale_scratch.exists()
    assert live_staging.exists() and unrelated.exists()


@pytest.mark.heavy
def test_sigterm_cleans_up_like_ctrl_c(digits, tmp_path):
    """A real `edgekit compress` process, terminated mid-run: no staging or scratch left."""
    import signal
    import time

    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch_root), "EDGEKIT_STEP_PROCESSES": "child"}
    process = subprocess.Popen([sys.executable, "-m", "edgekit", "compress", str(digits["model"]), "--int8",
                                "--data", str(digits["calib"]), "-o", str(tmp_path / "out"), "-q"],
                               env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(scratch_root.glob("edgekit-scratch-*/step-*.json")) and time.monotonic() < deadline:
        time.sleep(0.2)  # wait until a conversion step's child is running
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert b"interrupted" in stderr
    assert list(scratch_root.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]


def test_precision_is_read_from_the_file_and_a_mostly_float_int8_is_flagged(validated_run, tmp_path):
    from edgekit.formats.exporter import Artifact
    from edgekit.reports.assembly import quantization_read_back
    from edgekit.support.progress import StepLog

    report = json.loads((validated_run / "report.json").read_text())
    by_id = {a["id"]: a["quantization"] for a in report["artifacts"]}
    for fmt in ("tflite", "onnx"):
        assert by_id[f"{fmt}-int8"]["int8_mac_share"] == 1.0
        assert by_id[f"{fmt}-int8"]["int8_weight_share"] == 1.0
        assert by_id[f"{fmt}-int8"]["float_mac_ops"] == 0 and not by_id[f"{fmt}-int8"]["mostly_float"]
        assert by_id[f"{fmt}-fp32"]["int8_mac_share"] == 0.0 and by_id[f"{fmt}-fp32"]["float_mac_ops"] > 0
    # a file that claims int8 but holds float kernels is flagged, with its float ops named
    fake = Artifact("tflite", "int8", [validated_run / "digits.fp32.tflite"])
    facts = quantization_read_back(fake, StepLog(quiet=True))
    assert facts["mostly_float"] and facts["int8_mac_share"] == 0.0
    assert len(facts["float_mac_op_names"]) == facts["float_mac_ops"] > 0


def test_table_flags_a_mostly_float_int8_artifact():
    from edgekit.reports.text import rows as _rows

    entry = {"id": "tflite-int8", "path": "m.int8.tflite", "size_bytes": 10, "size_vs_fp32": 1.0,
             "verification": {"kind": "agreement", "agreement": 1.0}, "accuracy": None, "latency_ms": None,
             "quantization": {"mostly_float": True}}
    (row,) = _rows({"artifacts": [entry]})
    assert row[0] == "tflite-int8 (mostly float)"


def test_a_reused_pid_does_not_keep_a_stale_folder_and_only_edgekit_folders_go(tmp_path):
    """The owner record holds the process start time: a live pid that started at another time
    is another process. A folder named like staging is removed only with an owner record that
    edgekit wrote, however old: a user's `.notes.edgekit-mine` once went for its name alone."""
    from edgekit.support.output_folders import OWNER_FILE, owner_record, remove_stale

    reused = tmp_path / ".out.edgekit-reused"
    reused.mkdir()
    (reused / OWNER_FILE).write_text(owner_record(os.getpid(), "1"))
    mine, forged, linked = (tmp_path / ".notes.edgekit-mine", tmp_path / ".notes.edgekit-other",
                            tmp_path / ".notes.edgekit-linked")
    for folder in (mine, forged, linked):
        folder.mkdir()
        (folder / "precious.txt").write_text("keep me\n")
        past = os.stat(folder).st_mtime - 30 * 86400
        os.utime(folder, (past, past))
    (forged / OWNER_FILE).write_text(json.dumps({"pid": _dead_pid(), "started": None}))  # not edgekit's record
    record = tmp_path / "record.json"
    record.write_text(owner_record(_dead_pid(), None))
    (linked / OWNER_FILE).symlink_to(record)  # a record elsewhere, linked in
    removed = remove_stale(tmp_path, lambda name: ".edgekit-" in name)
    assert [p.name for p in removed] == [".out.edgekit-reused"]
    for folder in (mine, forged, linked):
        assert (folder / "precious.txt").read_text() == "keep me\n"


def test_compress_leaves_a_users_folder_named_like_staging(digits, cli, tmp_path):
    victim = tmp_path / ".out.edgekit-mine"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me\n")
    past = os.stat(victim).st_mtime - 30 * 86400
    os.utime(victim, (past, past))
    result = cli("compress", digits["model"], "-o", tmp_path / "out", "--formats", "tflite", "-q")
    assert result.exit_code == 0, result.output
    assert (victim / "precious.txt").read_text() == "keep me\n"


def test_a_model_file_swapped_after_its_scan_is_refused_by_the_step(digits, tmp_path, monkeypatch):
    """A child step reopens the user's file: if it is no longer the file that was scanned
    (e.g. swapped for one holding a Lambda), the step refuses it instead of loading it."""
    from edgekit.errors import ModelError
    from edgekit.formats.source import keras_model, keras_source
    from edgekit.intake.model import sha256_of

    path = tmp_path / "m.h5"
    path.write_bytes(digits["model"].read_bytes())
    source = keras_source(path, (8, 8, 1), sha256=sha256_of(path))
    assert keras_model(source).count_params() > 0  # unchanged: loads
    with open(path, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelError, match="changed while edgekit was converting it"):
        keras_model(source)
