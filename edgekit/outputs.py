"""Write outputs all-or-nothing.

Everything is written into a hidden staging folder beside the output folder (same file
system, so moves are atomic) and moved into place only when the whole run succeeded;
report.json moves last. A failed run removes the staging folder and leaves the output
folder exactly as it was — not even created, if it did not exist.
"""

from __future__ import annotations

import os
import shutil
import tempfile
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


@contextmanager
def staged(outdir: Path):
    """Yield a staging folder; on success move its files into outdir, on failure drop it."""
    outdir = Path(outdir).resolve()
    anchor = _nearest_existing_folder(outdir.parent)  # create nothing until the run succeeded
    staging = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.edgekit-", dir=anchor))
    try:
        yield staging
        _commit(staging, outdir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _nearest_existing_folder(path: Path) -> Path:
    while not path.is_dir():
        path = path.parent
    return path


def _commit(staging: Path, outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in staging.iterdir() if p.is_file())
    # artifacts first, then the reports in REPORT_FILES order
    files.sort(key=lambda p: REPORT_FILES.index(p.name) + 1 if p.name in REPORT_FILES else 0)
    for file in files:
        os.replace(file, outdir / file.name)
