"""A red-team catalogue (issue 23): every path a command takes × every kind of hostile path.

Each slot is one command with one of its path arguments replaced; every other argument is a
valid file, so the hostile path is what the command must get past. For every case the contract
is the same: exit 2 with exactly one `error:` line, no traceback, no terminal escape or injected
line from a file name, never a hang (a FIFO or /dev/zero is refused, not read), and nothing
written: no output folder, nothing new in the current folder, a victim folder beside it untouched.
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager

import pytest


# {H}: the hostile path; {MODEL}, {CAL}, {VAL}, {ART}, {REPORT}: valid inputs; {OUT}: an output folder
SLOTS = {
    "inspect model": ["inspect", "{H}"],
    "compress model": ["compress", "{H}", "--int8", "--data", "{CAL}", "-o", "{OUT}"],
    "compress --data": ["compress", "{MODEL}", "--int8", "--data", "{H}", "-o", "{OUT}"],
    "compress --val": ["compress", "{MODEL}", "--int8", "--data", "{CAL}", "--val", "{H}", "-o", "{OUT}"],
    "compress --recipe": ["compress", "{MODEL}", "--recipe", "{H}", "--data", "{CAL}", "-o", "{OUT}"],
    "eval artifact": ["eval", "{H}", "--data", "{VAL}"],
    "eval --data": ["eval", "{ART}", "--data", "{H}"],
    "bench artifact": ["bench", "{H}", "--runs", "1", "--min-time", "0"],
    "diagnose model": ["diagnose", "{H}", "{ART}", "--data", "{CAL}"],
    "diagnose artifact": ["diagnose", "{MODEL}", "{H}", "--data", "{CAL}"],
    "diagnose --data": ["diagnose", "{MODEL}", "{ART}", "--data", "{H}"],
    "gate report": ["gate", "{H}", "--baseline", "{REPORT}"],
    "gate --baseline": ["gate", "{REPORT}", "--baseline", "{H}"],
    "gate --config": ["gate", "{REPORT}", "--baseline", "{REPORT}", "--config", "{H}"],
    "sweep model": ["sweep", "{H}", "--data", "{CAL}", "--val", "{VAL}", "-o", "{OUT}"],
    "sweep --data": ["sweep", "{MODEL}", "--data", "{H}", "--val", "{VAL}", "-o", "{OUT}"],
    "sweep --val": ["sweep", "{MODEL}", "--data", "{CAL}", "--val", "{H}", "-o", "{OUT}"],
}

# the name each slot's file would have, so the hostile content meets the parser, not a suffix check
SUFFIXES = {"model": ".h5", "--data": ".npz", "--val": ".npz", "--recipe": ".yaml", "artifact": ".tflite",
            "report": ".json", "--baseline": ".json", "--config": ".yaml"}


def _missing(zone, suffix):
    return zone / f"missing{suffix}"


def _empty(zone, suffix):
    (zone / f"empty{suffix}").touch()
    return zone / f"empty{suffix}"


def _junk(zone, suffix):
    (zone / f"junk{suffix}").write_bytes(os.urandom(4096))
    return zone / f"junk{suffix}"


def _sparse_giant(zone, suffix):
    """8 GiB of zeros that take no disk: read whole, it would take minutes and the machine's memory."""
    with open(zone / f"giant{suffix}", "wb") as f:
        f.truncate(8 << 30)
    return zone / f"giant{suffix}"


def _folder(zone, suffix):
    (zone / f"folder{suffix}").mkdir()
    return zone / f"folder{suffix}"


def _fifo(zone, suffix):
    os.mkfifo(zone / f"pipe{suffix}")
    return zone / f"pipe{suffix}"


def _dev_zero(zone, suffix):
    (zone / f"zero{suffix}").symlink_to("/dev/zero")
    return zone / f"zero{suffix}"


def _link_loop(zone, suffix):
    (zone / f"a{suffix}").symlink_to(zone / f"b{suffix}")
    (zone / f"b{suffix}").symlink_to(zone / f"a{suffix}")
    return zone / f"a{suffix}"


def _dangling_link(zone, suffix):
    (zone / f"gone{suffix}").symlink_to(zone / "nowhere" / f"x{suffix}")
    return zone / f"gone{suffix}"


def _escape_in_name(zone, suffix):
    """A junk file whose name carries a terminal escape and a line break (a forged second line)."""
    path = zone / f"evil\x1b[2J\nINJECTED error: all good{suffix}"
    path.write_bytes(os.urandom(256))
    return path


KINDS = {f.__name__.lstrip("_"): f for f in (_missing, _empty, _junk, _sparse_giant, _folder, _fifo, _dev_zero,
                                             _link_loop, _dangling_link, _escape_in_name)}


def _places(tmp_path):
    """zone: where the hostile path and any output go; here: the working folder (must stay empty);
    victim: a folder beside them that nothing may touch."""
    zone, here, victim = (tmp_path / name for name in ("zone", "here", "victim"))
    for folder in (zone, here, victim):
        folder.mkdir()
    (victim / "keep.txt").write_text("untouched")
    return zone, here, victim


def _listing(folder):
    """Every entry under folder, links not followed (a link loop is one of them), with size and mtime."""
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@contextmanager
def _deadline(seconds: int):
    """A command that blocks (opening a FIFO, reading /dev/zero) fails the case instead of the suite."""
    def hung(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: a hostile path was read, not refused")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def valid(digits, validated_run):
    return {"MODEL": digits["model"], "CAL": digits["calib"], "VAL": digits["val"],
            "ART": validated_run / "digits.int8.tflite", "REPORT": validated_run / "report.json"}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("slot", SLOTS)
def test_a_hostile_path_in_any_slot_is_refused_with_nothing_written(valid, cli, tmp_path, monkeypatch, slot, kind):
    zone, here, victim = _places(tmp_path)
    hostile = KINDS[kind](zone, SUFFIXES[slot.split()[-1]])
    values = {**{k: str(v) for k, v in valid.items()}, "H": str(hostile), "OUT": str(zone / "out")}
    args = [part.format(**values) for part in SLOTS[slot]]
    monkeypatch.chdir(here)
    before = _listing(victim), _listing(zone)
    with _deadline(120):
        result = cli(*args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert "\x1b" not in result.output + result.stderr
    assert not any(line.startswith("INJECTED") for line in (result.output + result.stderr).splitlines())
    assert not (zone / "out").exists()
    assert (_listing(victim), _listing(zone)) == before and not any(here.iterdir())


# Where a command writes: the same contract for places nothing can or should be written.
OUTPUT_SLOTS = {
    "compress -o": ["compress", "{MODEL}", "--int8", "--data", "{CAL}", "-o", "{H}"],
    "sweep -o": ["sweep", "{MODEL}", "--data", "{CAL}", "--val", "{VAL}", "--recipes", "fp16", "-o", "{H}"],
    "sweep --store": ["sweep", "{MODEL}", "--data", "{CAL}", "--val", "{VAL}", "--recipes", "fp16", "-o", "{OUT}",
                      "--store", "{H}"],
    "gate --junit": ["gate", "{REPORT}", "--baseline", "{REPORT}", "--junit", "{H}"],
    "gate --summary": ["gate", "{REPORT}", "--baseline", "{REPORT}", "--summary", "{H}"],
}


def _under_a_file(zone, suffix):
    (zone / "file.txt").write_text("a file, not a folder")
    return zone / "file.txt" / "out"


def _into_the_victim_by_a_dangling_link(zone, suffix):
    (zone / "link").symlink_to(zone.parent / "victim" / "planted")
    return zone / "link"


def _dev_full(zone, suffix):
    return "/dev/full"


OUTPUT_KINDS = {f.__name__.lstrip("_"): f for f in (_fifo, _under_a_file, _into_the_victim_by_a_dangling_link,
                                                    _dev_full)}


@pytest.mark.parametrize("kind", OUTPUT_KINDS)
@pytest.mark.parametrize("slot", OUTPUT_SLOTS)
def test_a_hostile_output_path_is_refused_with_nothing_written(valid, cli, tmp_path, monkeypatch, slot, kind):
    zone, here, victim = _places(tmp_path)
    hostile = OUTPUT_KINDS[kind](zone, "")
    values = {**{k: str(v) for k, v in valid.items()}, "H": str(hostile), "OUT": str(zone / "out")}
    monkeypatch.chdir(here)
    before = _listing(victim), _listing(zone)
    with _deadline(120):
        result = cli(*[part.format(**values) for part in OUTPUT_SLOTS[slot]])
    assert result.exit_code == 2, result.output
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert (_listing(victim), _listing(zone)) == before and not any(here.iterdir())
