"""The README's "Use in CI" workflow and gate.yaml, run for real on the digits model."""

from __future__ import annotations

import pytest

import re
import shlex
import shutil
from pathlib import Path

import yaml

pytestmark = pytest.mark.heavy  # whole compress/sweep/demo runs: the full suite, not the quick loop

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_the_documented_workflow_compresses_gates_and_uploads(cli, digits, tmp_path, monkeypatch):
    (workflow,) = [yaml.safe_load(b) for b in _blocks("yaml") if "jobs:" in b]
    (gate_config,) = [b for b in _blocks("yaml") if b.startswith("# gate.yaml")]
    steps = workflow["jobs"]["compress-and-gate"]["steps"]
    commands = [step["run"] for step in steps if "run" in step and step["run"].startswith("edgekit")]
    assert [c.split()[1] for c in commands] == ["compress", "gate"]
    uploads = next(step for step in steps if step.get("uses", "").startswith("actions/upload-artifact"))
    assert uploads["if"] == "always()"  # the reports are uploaded when the gate fails too

    # The repository layout the workflow assumes, made of the digits model and data.
    monkeypatch.chdir(tmp_path)
    for src, dst in ((digits["model"], "models/classifier.h5"), (digits["calib"], "data/calib.npz"),
                     (digits["val"], "data/val.npz")):  # .npz stands in for the image folders
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    Path("ci/baseline").mkdir(parents=True)
    Path("ci/gate.yaml").write_text(gate_config)
    summary = tmp_path / "step-summary.md"

    def run(command: str):
        argv = shlex.split(command.replace("$GITHUB_STEP_SUMMARY", str(summary)).replace('"', ""))[1:]
        argv = [a + ".npz" if a.startswith("data/") else a for a in argv]
        return cli(*argv)

    compress, gate = commands
    first = run(compress + " --bench-here")
    assert first.exit_code == 0, first.output
    shutil.copy("out/report.json", "ci/baseline/report.json")  # "refresh the baseline"
    again = run(compress + " --force --bench-here")
    assert again.exit_code == 0, again.output
    result = run(gate)
    assert result.exit_code in (0, 1), result.output
    failed_checks = [line.split("|")[2].strip() for line in summary.read_text().splitlines() if "**fail**" in line]
    assert set(failed_checks) <= {"latency"}  # the same model twice: only timing noise on this host can fail
    assert (result.exit_code == 1) == bool(failed_checks)
    for path in uploads["with"]["path"].split():
        assert Path(path).is_file(), path
    assert "edgekit gate:" in summary.read_text()
