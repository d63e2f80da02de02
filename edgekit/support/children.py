"""Work run in a child process with a timeout (a latency measurement, an evaluation, a
diagnosis): a model file that crashes or hangs its runtime becomes one clear error instead of
taking edgekit down. The child prints one JSON line; the parent reads it.
"""

from __future__ import annotations

import json
import subprocess

from edgekit.errors import EdgekitError, InputError

MAX_THREADS = 1024  # more is a typo, and ONNX Runtime crashes on 99999
MAX_SECONDS = 7 * 24 * 3600


def check_threads(threads: int | None) -> None:
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise InputError(f"--threads {threads}: choose 1 to {MAX_THREADS} (or leave it out for the runtime's default)")


def check_seconds(option: str, value: float, allow_zero: bool = False) -> None:
    """A duration: a finite number of seconds, positive (or zero where that means "none"), at most a week."""
    import math

    low_ok = value >= 0 if allow_zero else value > 0
    if not (math.isfinite(value) and low_ok and value <= MAX_SECONDS):
        floor = "0" if allow_zero else "more than 0"
        raise InputError(f"{option} {value}: expected a number of seconds from {floor} to {MAX_SECONDS:g}")



def run_child(command: list[str], timeout_s: float, label: str, work: str = "benchmark") -> dict:
    """Run a child that prints one JSON line: its result, or {"error": message}. A hang past
    timeout_s, a crash or a signal is exit 2 naming the artifacts, never edgekit's own crash."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise InputError(f"{label}: the {work} did not finish within {timeout_s:g} s (the model hangs its "
                         "runtime, or raise --timeout)") from None
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    if isinstance(result, dict) and "error" in result:
        raise InputError(result["error"])
    if done.returncode != 0 or not isinstance(result, dict):
        how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit status {done.returncode}"
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise InputError(f"{label}: the runtime crashed during the {work} ({how}: {tail})")
    return result


def child_main(work, argv: list[str]) -> int:
    """A child of run_child: one JSON job in (argv[0]), one JSON line out, work(job)'s result
    or {"error": message} for edgekit's own errors (a crash is left to show as one)."""
    try:
        print(json.dumps(work(json.loads(argv[0]))))
        return 0
    except EdgekitError as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
