"""Latency harness, after TFLite's benchmark_model, OpenVINO's benchmark_app and MLPerf
single-stream: batch 1, a warm-up (≥ N runs and ≥ T s), then ≥ N runs and ≥ T s measured.

Each artifact runs in a child process (`python -m edgekit.latency '<json>'`) with a timeout, so
a model file that crashes or hangs its runtime becomes a clear error instead of taking
edgekit down. The child imports only the artifact's runtime.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgekit.support.children import check_seconds, check_threads, child_main, run_child
from edgekit.errors import InputError, regular_file
from edgekit.formats import REGISTRY

ISA_FLAGS = {"avx2": "avx2", "avx512f": "avx512f", "avx512_vnni": "avx512_vnni", "avx_vnni": "avx_vnni",
             "amx_int8": "amx", "asimd": "neon", "neon": "neon"}


@dataclass(frozen=True)
class BenchSettings:
    threads: int | None = None
    runs: int = 50
    min_time_s: float = 1.0
    warmup_runs: int = 1
    warmup_time_s: float = 0.5
    timeout_s: float = 300.0
    providers: list[str] | None = None      # ONNX Runtime providers, from a device profile
    openvino_device: str | None = None      # OpenVINO device, from a device profile

    def check(self) -> None:
        if self.runs < 1:
            raise InputError(f"--runs {self.runs}: at least 1 measured run is needed")
        if self.warmup_runs < 0:
            raise InputError(f"--warmup {self.warmup_runs}: cannot be negative")
        for option, value in (("--min-time", self.min_time_s), ("--warmup-time", self.warmup_time_s)):
            check_seconds(option, value, allow_zero=True)
        check_seconds("--timeout", self.timeout_s)
        check_threads(self.threads)


def machine() -> dict:
    """CPU model, ISA flags and runtime versions: latency means nothing without them."""
    from importlib import metadata

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model", "Hardware") and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "Features"):
                flags |= {ISA_FLAGS[f] for f in value.split() if f in ISA_FLAGS}
    except OSError:
        pass
    versions = {}
    for dist in (fmt.runtime for fmt in REGISTRY.values()):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"hostname": platform.node(), "cpu": model, "arch": platform.machine(), "isa": sorted(flags),
            "python": platform.python_version(), "runtimes": versions}


def largest_cache_bytes(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int | None:
    """The largest CPU cache Linux reports (the last level: weights past it stream from memory on
    every run); None where it reports none."""
    sizes = []
    for entry in sorted(root.glob("index*/size")):
        try:
            text = entry.read_text().strip().upper()
        except OSError:
            continue
        number, unit = text[:-1], text[-1:]
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(unit)
        if scale is None:
            number, scale = text, 1
        if number.isdigit():
            sizes.append(int(number) * scale)
    return max(sizes, default=None)


def _percentile(times_ms: np.ndarray, q: float) -> float:
    return round(float(np.percentile(times_ms, q)), 6)


def measure(path: Path, settings: BenchSettings) -> dict:
    """Run in this process: load, warm up, measure. Returns the timing record."""
    import gc

    from edgekit.formats.runner import open_runner
    from edgekit.support.isolated_steps import current_peak_rss_mb, reset_peak_rss, status_mb

    gc.collect()  # the previous file's runner is gone: its memory is not this file's
    reset_peak_rss()
    baseline_mb = status_mb("/proc/self/status", "VmRSS")
    start = time.perf_counter()
    runner = open_runner(path, settings.threads, settings.providers, settings.openvino_device)
    init_ms = (time.perf_counter() - start) * 1e3
    x = np.random.default_rng(0).uniform(0, 1, (1, *runner.input_shape)).astype(np.float32)
    start = time.perf_counter()
    runner.invoke(x)
    first_ms = (time.perf_counter() - start) * 1e3
    _loop(runner, x, settings.warmup_runs, settings.warmup_time_s)
    times = np.asarray(_loop(runner, x, settings.runs, settings.min_time_s)) * 1e3
    return {
        "path": str(path), "format": runner.format, "execution": runner.execution, "input": runner.input_spec,
        "batch": 1,
        "threads": settings.threads, "init_ms": round(init_ms, 3), "first_inference_ms": round(first_ms, 4),
        "runs": int(times.size), "mean": round(float(times.mean()), 6), "std": round(float(times.std()), 6),
        "min": round(float(times.min()), 6), "p50": _percentile(times, 50), "p90": _percentile(times, 90),
        "p99": _percentile(times, 99), "max": round(float(times.max()), 6),
        "throughput_per_s": round(1e3 / float(times.mean()), 2),
        # this file's own: the peak while it was loaded and run (Linux resets the peak per file),
        # and what the process held before it was opened (interpreter and runtime libraries)
        "peak_rss_mb": current_peak_rss_mb(), "baseline_rss_mb": baseline_mb,
        "measured": True, "machine": machine(), "samples_ms": _subsample(times, MAX_SAMPLES),
    }


MAX_SAMPLES = 1000  # enough to draw the distribution; a fast model makes 100,000 runs


def _subsample(times_ms: np.ndarray, limit: int) -> list[float]:
    """Every k-th run, in run order, so drift over the run stays visible."""
    step = max(1, -(-times_ms.size // limit))
    return [round(float(t), 6) for t in times_ms[::step]]


def _loop(runner, x, min_runs: int, min_seconds: float) -> list[float]:
    times, deadline_start = [], time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - deadline_start < min_seconds:
        start = time.perf_counter()
        runner.invoke(x)
        times.append(time.perf_counter() - start)
    return times


def bench_local(paths: list[Path], settings: BenchSettings) -> list[dict]:
    """measure() each artifact, one after another, in one child process with a timeout each."""
    settings.check()
    for path in paths:
        regular_file(path, "artifact")
    # -I: the child reads no PYTHON* variables and does not import from the current folder
    # (a numpy.py where the user stands must not run)
    command = [sys.executable, "-I", "-m", "edgekit.latency",
               json.dumps({"paths": [str(p) for p in paths], **asdict(settings)})]
    return run_child(command, settings.timeout_s * len(paths), ", ".join(str(p) for p in paths))["results"]


def _measure_job(job: dict) -> dict:
    paths = [Path(p) for p in job.pop("paths")]
    settings = BenchSettings(**job)
    return {"results": [measure(path, settings) for path in paths]}


def main(argv: list[str]) -> int:
    return child_main(_measure_job, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
