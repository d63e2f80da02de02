"""One cell of a sweep: a `compress` into the cell's folder, with its outcome as a record.

Both engines call `run_cell` in a process of its own (a child interpreter of the local pool,
or a Ray worker that serves one task and exits), so a cell's memory goes back when it ends
and a crash or an out-of-memory kill takes down that cell only. A cell never raises: what
went wrong is its record's `error`, and the sweep goes on.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
import traceback
from pathlib import Path

THREAD_ENV = ("EDGEKIT_THREADS", "TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS")
RECORD = "cell.json"


def limit_threads(threads: int) -> None:
    """Every library of the cell uses at most `threads` cores, so cells side by side do not
    oversubscribe the machine. Set before TensorFlow is imported: it reads them once."""
    for name in THREAD_ENV:
        os.environ[name] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"


def run_cell(spec: dict) -> dict:
    """spec: name, key, folder, recipe (JSON), model, data, val, outdir, seed, trust_model, threads."""
    limit_threads(int(spec["threads"]))
    started = time.perf_counter()
    record = {"name": spec["name"], "key": spec["key"], "folder": spec["folder"], "status": "ok", "error": None,
              "note": None, "exit_code": 0,
              "worker": {"host": socket.gethostname(), "pid": os.getpid(), "engine": spec.get("engine", "local"),
                         "node": spec.get("node")}}
    report = None
    try:
        report = _compress(spec)
    except Exception as exc:  # noqa: BLE001 - a cell's failure is its record, never the sweep's
        # (Ctrl-C and a Ray worker's SystemExit are not failures of the cell: they go through)
        record.update(_failure(exc))
        report = _written_report(Path(spec["outdir"])) if record["status"] == "ok" else None
    record["seconds"] = round(time.perf_counter() - started, 3)
    record["peak_rss_mb"] = _peak_mb(report)
    write_record(Path(spec["outdir"]), record)
    return record


def _compress(spec: dict) -> dict:
    from edgekit.compression.config import Recipe
    from edgekit.support.quiet_libraries import configure
    from edgekit.compression.pipeline import CompressOptions, compress
    from edgekit.support.progress import StepLog

    if spec.get("error"):  # a recipe file that did not validate: the cell fails with its message
        from edgekit.errors import InputError

        raise InputError(spec["error"])
    configure(False, True)
    opts = CompressOptions(model=Path(spec["model"]), recipe=Recipe.model_validate(spec["recipe"]),
                           data=_path(spec["data"]), val=_path(spec["val"]), outdir=Path(spec["outdir"]), force=True,
                           seed=spec["seed"], trust_model=spec["trust_model"], quiet=True, bench=False)
    return compress(opts, StepLog(quiet=True))


def _path(value) -> Path | None:
    return Path(value) if value else None


def _failure(exc: BaseException) -> dict:
    from edgekit.errors import EdgekitError, GateFailure, first_line

    if isinstance(exc, GateFailure) and getattr(exc, "report", None):
        # the accuracy tolerance, as compress judges it: the files and report were written, the
        # cell is usable, and the sweep exits 1 at the end as compress would (edgekit.quality.tolerance)
        return {"note": first_line(exc, 500), "exit_code": exc.exit_code}
    if isinstance(exc, EdgekitError):
        return {"status": "failed", "error": first_line(exc, 500), "exit_code": exc.exit_code}
    if isinstance(exc, MemoryError):
        return {"status": "failed", "error": "out of memory", "exit_code": 2}
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    return {"status": "failed", "exit_code": 3,
            "error": f"internal error: {type(exc).__name__}: {first_line(exc, 300)}"
                     + (f" ({Path(where.filename).name}:{where.lineno})" if where else ""),
            "traceback": "".join(traceback.format_exception(exc))[-8000:]}  # a bug: what a report needs


def _written_report(outdir: Path) -> dict | None:
    try:
        return json.loads((outdir / "report.json").read_text())
    except (OSError, ValueError):
        return None


def _peak_mb(report: dict | None) -> float | None:
    """The cell's peak: its own process or the largest step's child, whichever is higher."""
    from edgekit.support.isolated_steps import current_peak_rss_mb

    steps = (report or {}).get("peak_rss_mb", {}).get("largest step")
    return max(v for v in (current_peak_rss_mb(), steps) if v is not None)


def write_record(outdir: Path, record: dict) -> None:
    from edgekit.support.output_folders import write_text_atomically

    outdir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(outdir / RECORD, json.dumps(record, indent=2) + "\n", "the cell record")


def path_in_folder(folder: Path, relative: str) -> Path | None:
    """folder/relative when that names a regular file inside folder: a plain relative path (no
    "..", not absolute), no symlink on the way (the folder included), else None. A store's
    report.json is input like any other: an artifact "path" of /etc/passwd or ../../x, with a
    matching size, was hashed, measured and listed as the cell's."""
    parts = str(relative).split("/")
    if not relative or str(relative).startswith("/") or any(p in ("", ".", "..") for p in parts):
        return None
    if folder.is_symlink():
        return None
    path = folder
    for part in parts:
        path = path / part
        if path.is_symlink():
            return None
    return path if path.is_file() else None


def clear_place(folder: Path) -> None:
    """A cell about to run writes into folder: a link or a file planted at its place is
    removed, never followed (a symlinked cell folder received the cell's artifacts)."""
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
        return
    record = folder / RECORD
    if record.is_symlink():
        record.unlink()
    elif record.is_dir():  # the record's own place in the store: what sits there is not a record
        shutil.rmtree(record)


def read_record(folder: Path) -> dict | None:
    """A cell's record, or None where there is none or it is not one (damaged, huge, not JSON)."""
    from edgekit.errors import InputError
    from edgekit.support.untrusted import load_json

    if folder.is_symlink() or not (folder / RECORD).is_file() or (folder / RECORD).is_symlink():
        return None
    try:
        record = load_json(folder / RECORD, "cell record")
    except (InputError, OSError):
        return None
    return record if isinstance(record, dict) else None


def _terminate_like_interrupt(signum, frame):
    raise KeyboardInterrupt  # the pool's SIGTERM: compress removes its staging folder on the way out


def main(argv: list[str]) -> int:
    """`python -I -m edgekit.sweeps.cell SPEC.json`: the local pool's child."""
    import signal

    from edgekit.support.isolated_steps import die_with_parent

    signal.signal(signal.SIGTERM, _terminate_like_interrupt)
    spec_path = Path(argv[0])
    spec = json.loads(spec_path.read_text())
    die_with_parent(spec.get("parent_pid"))  # SIGTERM: it unwinds like Ctrl-C, removing its staging
    sys.path[:0] = [p for p in spec.get("sys_path", []) if p not in sys.path]
    try:
        record = run_cell(spec)
    except KeyboardInterrupt:
        return 130
    spec_path.with_suffix(".result").write_text(json.dumps(record))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # the record is written: skip TensorFlow's interpreter teardown (~1 s a cell)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
