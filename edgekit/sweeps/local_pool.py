"""The default engine: cells as child interpreters, `jobs` at a time, on this machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable

from edgekit.support.isolated_steps import wait_watching_memory


class LocalPool:
    def __init__(self, jobs: int, scratch: Path):
        self.jobs = jobs
        self.scratch = scratch
        self._live: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._stopping = False

    def run(self, specs: list[dict], done: Callable[[dict], None]) -> None:
        """Run every cell; `done(record)` is called in this thread as each one ends. Ctrl-C stops
        the running cells (their staging folders are removed) and is raised again."""
        pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="edgekit-cell")
        futures = [pool.submit(self._run_one, spec) for spec in specs]
        try:
            for future in as_completed(futures):
                done(future.result())
        except BaseException:
            self._stop_all()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _run_one(self, spec: dict) -> dict:
        job = self.scratch / f"{spec['folder']}.json"
        job.write_text(json.dumps({**spec, "sys_path": [p for p in sys.path if p], "parent_pid": os.getpid()}))
        log = job.with_suffix(".log")
        with open(log, "wb") as out:
            with self._lock:  # started and registered at once: a stop in between would miss this cell
                if self._stopping:
                    return {**_base(spec), "status": "cancelled", "error": "the sweep was interrupted"}
                process = subprocess.Popen(
                    [sys.executable, "-I", "-m", "edgekit.sweeps.cell", str(job)], cwd=self.scratch,
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True)  # Ctrl-C reaches the driver only: it stops the cells in order
                self._live.add(process)
            try:
                peak = wait_watching_memory(process)
            finally:
                with self._lock:
                    self._live.discard(process)
        result = job.with_suffix(".result")
        if result.is_file():
            return json.loads(result.read_text())
        return {**_base(spec), **_lost(process.returncode, peak, log, self._stopping)}

    def _stop_all(self, grace_s: float = 10.0) -> None:
        """SIGTERM every running cell (it unwinds like Ctrl-C, removing its staging folder), then
        SIGKILL what is left after the grace period, children included."""
        with self._lock:
            self._stopping = True
            live = list(self._live)
        for process in live:
            _signal_group(process, signal.SIGTERM)
        for process in live:
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
            _signal_group(process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _base(spec: dict) -> dict:
    return {"name": spec["name"], "key": spec["key"], "folder": spec["folder"], "note": None, "seconds": None,
            "peak_rss_mb": None, "worker": {"engine": "local"}}


def _lost(returncode: int, peak_mb: float, log: Path, stopping: bool) -> dict:
    """A child that ended without a record: killed (the out-of-memory killer, Ctrl-C) or crashed."""
    if stopping:
        return {"status": "cancelled", "error": "the sweep was interrupted", "exit_code": 130}
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        why = " (out of memory?)" if returncode == -signal.SIGKILL else ""
        return {"status": "failed", "exit_code": 2, "peak_rss_mb": round(peak_mb, 1),
                "error": f"the cell's process was killed by {name}{why} at {peak_mb:,.0f} MiB"}
    tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:] or ["no output"]
    return {"status": "failed", "exit_code": 3,
            "error": f"the cell's process crashed (exit status {returncode}): {tail[0][:300]}"}
