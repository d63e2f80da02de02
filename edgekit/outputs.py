"""Write outputs all-or-nothing, and leave no debris even when killed.

Everything is written into a hidden staging folder beside the output folder (same file
system, so moves are atomic) and moved into place only when the whole run succeeded;
report.json moves last. A failed run removes the staging folder and leaves the output
folder exactly as it was — not even created, if it did not exist.

A run killed outright (out of memory, kill -9) cannot clean up, so each staging and
scratch folder holds an owner file (pid and process start time); the next run in the same
place removes the folders whose owner no longer runs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from edgekit.errors import OutputError

REPORT_FILES = ("report.md", "report.html", "report.json")  # report.json last: it claims success


def check_output_folder(outdir: Path, names: list[str], force: bool) -> None:
    """Refuse to overwrite existing outputs without --force, before any work is done."""
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"output {outdir} exists and is not a folder; choose another -o")
    if force or not outdir.exists():
        return
    clashes = [n for n in [*names, *REPORT_FILES] if (outdir / n).exists()]
    if clashes:
        shown = ", ".join(clashes[:4]) + (" …" if len(clashes) > 4 else "")
        raise OutputError(
            f"output folder {outdir} already holds {shown}; pass --force to overwrite or choose another -o"
        )


OWNER_FILE = ".edgekit-owner"
STAGING_MARK = ".edgekit-"  # .<outdir name>.edgekit-XXXX
SCRATCH_PREFIX = "edgekit-scratch-"
# A folder without an owner file is left alone this long: it may be one being created now,
# or one from an edgekit that wrote no owner files.
UNOWNED_GRACE_S = 3600


@contextmanager
def staged(outdir: Path):
    """Yield a staging folder; on success move its files into outdir, on failure drop it."""
    outdir = Path(outdir).resolve()
    anchor = _nearest_existing_folder(outdir.parent)  # create nothing until the run succeeded
    remove_stale(anchor, lambda name: name.startswith(".") and STAGING_MARK in name)
    with _owned_folder(prefix=f".{outdir.name}{STAGING_MARK}", parent=anchor) as staging:
        yield staging
        _commit(staging, outdir)


@contextmanager
def scratch_folder():
    """A private folder in the system temp folder for intermediates; stale ones go first."""
    parent = Path(tempfile.gettempdir())
    remove_stale(parent, lambda name: name.startswith(SCRATCH_PREFIX))
    with _owned_folder(prefix=SCRATCH_PREFIX, parent=parent) as scratch:
        yield scratch


@contextmanager
def _owned_folder(prefix: str, parent: Path):
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        (folder / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "started": _start_time(os.getpid())}))
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_stale(parent: Path, is_ours) -> list[Path]:
    """Remove edgekit's folders in parent whose owning process no longer runs."""
    removed = []
    try:
        candidates = [p for p in parent.iterdir() if is_ours(p.name) and p.is_dir() and not p.is_symlink()]
    except OSError:
        return removed
    for folder in candidates:
        if _is_stale(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _is_stale(folder: Path) -> bool:
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
        pid, started = int(owner["pid"]), owner.get("started")
    except FileNotFoundError:
        try:
            return time.time() - folder.stat().st_mtime > UNOWNED_GRACE_S
        except OSError:
            return False
    except (OSError, ValueError, KeyError, TypeError):
        return False  # unreadable: not provably ours to delete
    return not _alive(pid, started)


def _alive(pid: int, started) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return started is None or _start_time(pid) == started  # else the pid was reused


def _start_time(pid: int) -> str | None:
    """The process start time in clock ticks since boot (Linux), to tell a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _nearest_existing_folder(path: Path) -> Path:
    while not path.is_dir():
        path = path.parent
    return path


def _commit(staging: Path, outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in staging.iterdir() if p.is_file() and p.name != OWNER_FILE)
    # artifacts first, then the reports in REPORT_FILES order
    files.sort(key=lambda p: REPORT_FILES.index(p.name) + 1 if p.name in REPORT_FILES else 0)
    for file in files:
        os.replace(file, outdir / file.name)
