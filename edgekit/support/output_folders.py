"""Write outputs all-or-nothing, and leave no debris even when killed.

Everything is written into a hidden staging folder beside the output folder (same file
system) and put in place only when the whole run succeeded, as a whole: the staging folder
is renamed to the output folder, or swapped with an existing one in one renameat2 call
(the old folder's other files carried over as hard links), so a reader sees the old set or
the new one. A failed run removes the staging folder and leaves the output folder exactly as
it was — not even created, if it did not exist.

A run killed outright (out of memory, kill -9) cannot clean up, so each staging and
scratch folder holds an owner file (pid and process start time); the next run in the same
place removes the folders whose owner no longer runs.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

from edgekit.errors import OutputError, check_path_name, regular_file

REPORT_FILES = ("report.md", "report.html", "report.json")  # report.json last: it claims success


def check_output_folder(outdir: Path, names: list[str], force: bool) -> None:
    """Refuse to overwrite existing outputs without --force, and a place that cannot be written,
    before any work is done (not after minutes of conversion)."""
    check_path_name(outdir, "-o", OutputError)
    if outdir.is_symlink() and not outdir.exists():  # a planted link would have the folder made where it points
        raise OutputError(f"output {outdir} is a link to {os.readlink(outdir)}, which does not exist; "
                          "make that folder first, or choose another -o")
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"output {outdir} exists and is not a folder; choose another -o")
    anchor = _first_existing(Path(outdir).resolve().parent)
    if not anchor.is_dir():  # /dev/full/x: the folder would have to be made inside a file
        raise OutputError(f"output {outdir} cannot be made: {anchor} is not a folder; choose another -o")
    for folder in ([outdir] if outdir.is_dir() else []) + [anchor]:
        _check_can_write_in(folder, "-o", outdir)
    if force or not outdir.exists():
        return
    clashes = [n for n in [*names, *REPORT_FILES] if (outdir / n).exists()]
    if clashes:
        shown = ", ".join(clashes[:4]) + (" …" if len(clashes) > 4 else "")
        raise OutputError(
            f"output folder {outdir} already holds {shown}; pass --force to overwrite or choose another -o"
        )


def check_writable_file(path: Path, option: str) -> None:
    """A file a command writes when it ends (--junit, --summary): checked when it starts."""
    check_path_name(path, option, OutputError)
    path = Path(path)
    if path.exists() or path.is_symlink():
        regular_file(path, option, OutputError)
    folder = path.resolve().parent
    if not folder.is_dir():
        raise OutputError(f"{option} {path}: the folder {folder} does not exist")
    _check_can_write_in(folder, option, path)
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{option} {path} is not writable")


def _check_can_write_in(folder: Path, option: str, target: Path) -> None:
    """Create and remove a file there: permissions, read-only mounts and full disks all show
    (os.access does not: root passes it everywhere). The folder's times are put back, so a
    refused run leaves it exactly as it was."""
    try:
        times = os.stat(folder)
        fd, probe = tempfile.mkstemp(prefix=".edgekit-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{option} {target}: cannot write in {folder} ({exc.strerror or exc})") from None
    try:
        os.utime(folder, ns=(times.st_atime_ns, times.st_mtime_ns))
    except OSError:
        pass  # not the folder's owner: its mtime moves, nothing else does


OWNER_FILE = ".edgekit-owner"
STAGING_MARK = ".edgekit-"  # .<outdir name>.edgekit-XXXX
SCRATCH_PREFIX = "edgekit-scratch-"
OWNER_KIND = "edgekit staging or scratch folder"  # what the owner record says it is


def owner_record(pid: int, started: str | None) -> str:
    return json.dumps({"edgekit": OWNER_KIND, "pid": pid, "started": started})


@contextmanager
def staged(outdir: Path):
    """Yield a staging folder; on success it becomes outdir (see _commit), on failure it goes."""
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
        (folder / OWNER_FILE).write_text(owner_record(os.getpid(), _start_time(os.getpid())))
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
    """Only a folder whose owner record edgekit wrote, naming a process that no longer runs.
    A name alone proves nothing: a user's `.notes.edgekit-mine` was once removed for it."""
    record = folder / OWNER_FILE
    try:
        if not stat.S_ISREG(record.lstat().st_mode) or record.lstat().st_size > 4096:
            return False
        owner = json.loads(record.read_text())
        if owner.get("edgekit") != OWNER_KIND:
            return False
        pid, started = int(owner["pid"]), owner.get("started")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False  # missing or unreadable: not provably ours to delete
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
        fields = Path(f"/proc/{pid}/stat").read_text()
        return fields.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _first_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _nearest_existing_folder(path: Path) -> Path:
    while not path.is_dir():
        path = path.parent
    return path


def _commit(staging: Path, outdir: Path) -> None:
    """Put the staged set in place as a whole: a reader of outdir sees the old set or the new
    one, never new artifacts beside an old report.json."""
    (staging / OWNER_FILE).unlink(missing_ok=True)
    if not _replace_folder(staging, outdir):
        _move_files(staging, outdir)


def _replace_folder(staging: Path, outdir: Path) -> bool:
    """Swap the staging folder in for outdir in one rename; the old folder's other files are
    carried over as hard links. False when that cannot be done here (outdir is a link or holds
    sub-folders, another file system): the caller then moves the files one by one."""
    if outdir.is_symlink() or (outdir.exists() and not _carry_over(outdir, staging)):
        return False
    mode = stat.S_IMODE(outdir.stat().st_mode) if outdir.exists() else 0o777 & ~_umask()
    os.chmod(staging, mode)  # mkdtemp made it 0700
    try:
        if not outdir.exists():
            outdir.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, outdir)
        elif _exchange(staging, outdir):
            shutil.rmtree(staging, ignore_errors=True)  # it holds the old set now
        else:
            return _swap_in_two_steps(staging, outdir)
    except OSError:
        return False
    return True


def _carry_over(outdir: Path, staging: Path) -> bool:
    """Hard-link every file of outdir that the new set does not replace into staging."""
    try:
        for entry in outdir.iterdir():
            if (staging / entry.name).exists():
                continue
            if entry.is_symlink() or not entry.is_file():
                return False
            os.link(entry, staging / entry.name)
    except OSError:
        return False
    return True


def _exchange(a: Path, b: Path) -> bool:
    """renameat2(RENAME_EXCHANGE): Linux swaps two paths atomically. False where unsupported."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _swap_in_two_steps(staging: Path, outdir: Path) -> bool:
    """Without an atomic exchange: outdir is briefly absent, but never holds a mixed set."""
    old = Path(tempfile.mkdtemp(prefix=f".{outdir.name}{STAGING_MARK}old-", dir=outdir.parent))
    os.rename(outdir, old / outdir.name)
    os.rename(staging, outdir)
    shutil.rmtree(old, ignore_errors=True)
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _move_files(staging: Path, outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in staging.iterdir() if p.is_file())
    # artifacts first, then the reports in REPORT_FILES order
    files.sort(key=lambda p: REPORT_FILES.index(p.name) + 1 if p.name in REPORT_FILES else 0)
    for file in files:
        os.replace(file, outdir / file.name)


def write_text_atomically(path: Path, text: str, what: str) -> None:
    """Write beside path under a fresh, exclusively created name (mkstemp: O_EXCL, never through
    a link someone planted at a predictable temporary name), then replace path (a link at path
    itself is replaced, not followed). A reader sees the old file or the new one, whole."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        raise OutputError(f"{what} {path} is a folder, not a file; remove it")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"{what} {path} could not be written ({exc.strerror or exc})") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it private; the file is the user's output
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"{what} {path} could not be written ({exc.strerror or exc})") from None
        raise
