"""Run each heavy step (a converter or a quantizer) where its memory is returned when it ends.

Converters hold several copies of the weights and Python's allocator and TensorFlow's
arenas keep what they once took: in one process the peaks of successive steps add up
(VGG16: killed at 24 GiB). So a step is a plain function that takes file paths and writes
files, and `run_step` calls it either in a child interpreter of its own (isolated: its
memory goes back to the system when it exits) or, for models small enough that the sum
cannot matter, in this process (no interpreter start-up). Either way the step's peak
resident memory is measured, and a step the system kills is reported by name.

EDGEKIT_STEP_PROCESSES=child|inline|auto (default auto) overrides the choice.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit import errors
from edgekit.errors import EdgekitError, InputError, StepCrashed, StepKilled, first_line

MODE_ENV = "EDGEKIT_STEP_PROCESSES"
# Below this many weight bytes every step of a run fits in memory together many times
# over (measured: ResNet50's 98 MB of weights peaked at ~9.5 GiB summed in one process),
# and starting a child interpreter (~3 s with TensorFlow) would only cost time.
INLINE_WEIGHT_BYTES = 32 << 20


@dataclass
class StepRun:
    result: Any
    peak_rss_mb: float | None  # a child's peak; None in-process (the caller's StepLog measures it)


def isolate_steps(weight_bytes: int) -> bool:
    mode = os.environ.get(MODE_ENV, "auto").strip().lower()
    if mode not in ("auto", "child", "inline"):
        raise InputError(f"{MODE_ENV}={mode!r}: choose child, inline or auto")
    return mode == "child" or (mode == "auto" and weight_bytes >= INLINE_WEIGHT_BYTES)


def run_step(target: str, kwargs: dict, *, isolate: bool, workdir: Path, label: str) -> StepRun:
    """Call `module:function(**kwargs)` (JSON-able kwargs) in a child or here; return its result."""
    from edgekit.support.quiet_libraries import step_output

    if not isolate:
        with _working_folder(workdir), step_output():
            return StepRun(resolve(target)(**kwargs), None)
    return _run_in_child(target, kwargs, Path(workdir), label)


@contextmanager
def _working_folder(path: Path):
    """In-process steps run in the scratch folder too, like children: whatever a library
    drops in the current folder (onnxruntime's shape inference does) lands there."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def resolve(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


# --- peak memory ---------------------------------------------------------------------------

def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets this process's peak RSS (VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # elsewhere the peak is the process's peak so far: an upper bound


def current_peak_rss_mb() -> float:
    peak = _vm_hwm_mb("/proc/self/status")
    if peak is not None:
        return peak
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# --- child processes -----------------------------------------------------------------------

def worker_command(job: Path) -> list[str]:
    """The child interpreter, isolated (-I): it reads no PYTHON* variables and does not put
    its own folder first on its import path; the worker sets the parent's path from the job."""
    return [sys.executable, "-I", "-m", "edgekit.support.isolated_steps", str(job)]


def _run_in_child(target: str, kwargs: dict, workdir: Path, label: str) -> StepRun:
    index = len(list(workdir.glob("step-*.json")))
    job, result_file, log_file = (workdir / f"step-{index}{s}" for s in (".json", ".result", ".log"))
    # The parent's import path as it is (a --custom-objects module found through PYTHONPATH
    # is found by the child too): -I only stops the child adding its own folder to it.
    path = [p for p in sys.path if p]
    job.write_text(json.dumps({"target": target, "kwargs": kwargs, "result": str(result_file), "sys_path": path,
                               "parent_pid": os.getpid()}))
    with open(log_file, "wb") as log:
        # cwd is the scratch folder: libraries that drop temporary files in the current
        # folder (onnxruntime's shape inference does) write nothing where the user stands
        process = subprocess.Popen(worker_command(job), cwd=workdir, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            seen_peak = wait_watching_memory(process)
        except BaseException:  # Ctrl-C, SIGTERM: the child goes with us
            process.kill()
            process.wait()
            raise
    if process.returncode < 0:
        raise _killed(label, -process.returncode, seen_peak)
    outcome = json.loads(result_file.read_text()) if result_file.is_file() else None
    if outcome is None or "error" in outcome:
        raise _child_error(label, outcome, log_file, process.returncode)
    return StepRun(outcome["value"], outcome.get("peak_rss_mb", seen_peak))


def wait_watching_memory(process: subprocess.Popen, every_s: float = 0.2) -> float:
    """Wait for the child, sampling its peak RSS (VmHWM) so a killed child's last peak is known.
    (getrusage's ru_maxrss will not do: Linux carries the parent's peak across fork+exec.)"""
    peak = 0.0
    while True:
        try:
            process.wait(timeout=every_s)
            return peak
        except subprocess.TimeoutExpired:
            peak = max(peak, _vm_hwm_mb(f"/proc/{process.pid}/status") or 0.0)


def _vm_hwm_mb(status_file: str) -> float | None:
    return status_mb(status_file, "VmHWM")


def status_mb(status_file: str, field: str) -> float | None:
    """A memory field of /proc/<pid>/status (VmHWM: peak, VmRSS: now), in MiB; None elsewhere."""
    try:
        for line in Path(status_file).read_text().splitlines():
            if line.startswith(f"{field}:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def _killed(label: str, signum: int, peak_mb: float) -> StepKilled:
    from edgekit.support.memory import available_mb

    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = "unknown"
    why = (f"signal {signum} ({name}), most likely out of memory: it had reached {peak_mb:,.0f} MiB and "
           f"{available_mb():,.0f} MiB are available now" if signum == signal.SIGKILL else f"signal {signum} ({name})")
    return StepKilled(f"step '{label}' was killed by the system, {why}; nothing was written")


def _child_error(label: str, outcome: dict | None, log_file: Path, code: int) -> EdgekitError:
    error = (outcome or {}).get("error") or {}
    cls = getattr(errors, str(error.get("class")), None)
    if isinstance(cls, type) and issubclass(cls, EdgekitError):
        return cls(error.get("message", ""))
    tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] if log_file.is_file() else []
    detail = error.get("message") or (tail[0][:300] if tail else f"exit status {code}, no output")
    crash = StepCrashed(f"step '{label}' failed: {detail} — this is a bug in edgekit; rerun with --debug and "
                        "report the output")
    crash.child_traceback = error.get("traceback") or "\n".join(tail)
    return crash


def die_with_parent(parent_pid: int | None, sig: int = signal.SIGTERM) -> None:
    """Linux: this process gets `sig` when the process that started it dies (PR_SET_PDEATHSIG),
    so a driver killed with -9 takes its cells and steps along instead of leaving them to write
    into the store for minutes. If the parent is already gone, exit now."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: the driver's own stop (SIGTERM to the group) still applies
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before the signal was armed


def _worker(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    die_with_parent(job.get("parent_pid"))
    sys.path[:] = job.get("sys_path") or sys.path
    result = Path(job["result"])
    from edgekit.support.quiet_libraries import step_output

    try:
        with step_output():
            value = resolve(job["target"])(**job["kwargs"])
        result.write_text(json.dumps({"value": value, "peak_rss_mb": current_peak_rss_mb()}))
        return 0
    except EdgekitError as exc:
        result.write_text(json.dumps({"error": {"class": type(exc).__name__, "message": str(exc)}}))
        return 2
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which decides
        result.write_text(json.dumps({"error": {"class": None, "message": f"{type(exc).__name__}: {first_line(exc)}",
                                                "traceback": traceback.format_exc()}}))
        return 3


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
