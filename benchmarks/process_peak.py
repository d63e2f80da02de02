"""Wall time and peak memory of a command and everything it starts, for the benchmarks.

The peak is the resident memory of the process and all its descendants, summed and sampled
every 0.1 s. getrusage's ru_maxrss will not do for edgekit: it resets its own peak (VmHWM,
through /proc/self/clear_refs) before each step to measure that step, and the kernel reports
the peak since the last reset, so a compress whose diagnosis peaked at 2.7 GiB read 1.4.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path


def tree_rss_mib(pid: int) -> float:
    """Resident memory of pid and all its descendants, now."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        stack += [int(c) for c in children]
    return total / 1024


def run_sampled(command: list[str], cwd: Path | None = None) -> dict:
    """Run a command; return wall seconds, peak tree RSS (MiB), exit status (negative: a
    signal) and, when it failed, the last line of its stderr (kept in a file: a pipe nobody
    reads while the command runs could fill and stall it)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        peak = 0.0
        while process.poll() is None:
            peak = max(peak, tree_rss_mib(process.pid))
            time.sleep(0.1)
        stderr.seek(0)
        text = stderr.read().decode(errors="replace").strip()
    return {"wall_s": round(time.perf_counter() - start, 1), "peak_mib": round(peak), "status": process.returncode,
            "error": text[-2000:] if process.returncode else None}


def run_measured(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak MiB of a command that must succeed (a failure stops the benchmark)."""
    result = run_sampled(command)
    if result["status"] != 0:
        raise SystemExit(f"{' '.join(command[:4])}… failed: {result['error']}")
    return result["wall_s"], result["peak_mib"]
