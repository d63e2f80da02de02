"""`edgekit devices calibrate`: build the suite here, measure it here or on `--remote` (only the
files travel: the device needs the light install, no TensorFlow), fit each runtime's costs, and
write a profile YAML that `--device PROFILE.yaml` reads.

Nothing is written until every measurement and fit is done: the profile appears whole, atomically,
or not at all (an interrupted calibration leaves no file behind).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import InputError
from edgekit.formats import REGISTRY

# format → (the runtime the latency models call it by, the module that runs it, the extra that installs it)
CALIBRATED = {f.name: (f.cpu_runtime, f.runtime_module, f.extra) for f in REGISTRY.values() if f.cpu_runtime}
PRECISIONS = ("fp32", "int8")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
BAND_PERCENTILES = (10, 90)


@dataclass
class CalibrateOptions:
    output: Path
    name: str
    threads: int | None = None  # default: every core here (or there)
    runtimes: list[str] | None = None  # formats' runtime names (litert, onnxruntime, openvino-cpu); default all
    precisions: list[str] | None = None
    remote: str | None = None
    remote_python: str = "python3"
    ssh_options: tuple[str, ...] = ()
    runs: int = 15
    min_time_s: float = 0.3
    quiet: bool = False


def check_options(opts: CalibrateOptions) -> list[str]:
    """Every option checked before any work; returns the formats to calibrate."""
    from edgekit.support.children import check_threads

    if not NAME.fullmatch(opts.name):
        raise InputError(f"--name {opts.name!r}: use letters, digits, '.', '_' and '-' (at most 64)")
    if opts.output.suffix not in (".yaml", ".yml"):
        raise InputError(f"-o {opts.output}: a profile is a .yaml file")
    if opts.output.exists() or opts.output.is_symlink():
        raise InputError(f"-o {opts.output}: already exists; remove it or choose another path")
    if not opts.output.parent.is_dir():
        raise InputError(f"-o {opts.output}: the folder {opts.output.parent} does not exist")
    check_threads(opts.threads)
    by_runtime = {runtime: fmt for fmt, (runtime, _, _) in CALIBRATED.items()}
    unknown = [r for r in opts.runtimes or [] if r not in by_runtime]
    if unknown:
        raise InputError(f"--runtime {', '.join(unknown)}: calibrate measures {', '.join(by_runtime)}")
    bad = [p for p in opts.precisions or [] if p not in PRECISIONS]
    if bad:
        raise InputError(f"--precision {', '.join(bad)}: calibrate measures {', '.join(PRECISIONS)}")
    if opts.remote is not None:
        from edgekit.measure.remote import parse_destination

        parse_destination(opts.remote)
    return [by_runtime[r] for r in opts.runtimes] if opts.runtimes else list(CALIBRATED)


def calibrate(opts: CalibrateOptions) -> dict:
    """Measure, fit and write the profile; returns what was written (as the YAML holds it)."""
    from edgekit.support.progress import StepLog

    formats = check_options(opts)
    precisions = opts.precisions or list(PRECISIONS)
    log = StepLog(quiet=opts.quiet)
    machine = _check_runtimes_there(opts, formats)
    threads = opts.threads or machine["cores"]
    with tempfile.TemporaryDirectory(prefix="edgekit-calibrate-") as scratch:
        from edgekit.measure.calibration.suite import write_suite

        files = write_suite(Path(scratch), formats, precisions, log)
        measured = measure_suite(files, opts, threads, log)
        cache_bytes = machine["cache_bytes"]
        with log.step("Fit each runtime's costs"):
            settings = [_fit_setting(runtime, fmt, precision, threads, cache_bytes,
                                     [m for m in measured if m["format"] == fmt and m["precision"] == precision])
                        for fmt in formats for runtime in [CALIBRATED[fmt][0]] for precision in precisions]
    profile = _profile(opts, formats, threads, measured[0]["machine"], settings, len(files), cache_bytes)
    _write_atomically(opts.output, profile)
    return profile


def _check_runtimes_there(opts: CalibrateOptions, formats: list[str]) -> dict:
    """Which runtimes the measuring machine has, and its cores: exit 2 with the install command
    for a runtime it lacks, before any file is built."""
    modules = [CALIBRATED[fmt][1] for fmt in formats]
    # the cache size comes from edgekit's own reader there; an install too old to have one answers None
    probe = ("import importlib.util as u, json, os\n"
             "try:\n    from edgekit.measure.latency import largest_cache_bytes as cache\n"
             "except ImportError:\n    cache = lambda: None\n"
             f"print(json.dumps({{'found': [m for m in {modules!r} if u.find_spec(m)], 'cores': os.cpu_count(), "
             "'cache_bytes': cache()}))")
    if opts.remote is None:
        import subprocess
        import sys

        done = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=60)
        output, where = done.stdout, "this machine"
    else:
        from edgekit.measure.remote import remote_shell

        output = remote_shell(opts.remote, list(opts.ssh_options),
                              f"{shlex.quote(opts.remote_python)} -I -c {shlex.quote(probe)}", "checking its runtimes")
        where = opts.remote
    try:
        answer = json.loads(output.strip().splitlines()[-1])
        if not isinstance(answer, dict) or not isinstance(answer.get("found"), list):
            raise ValueError
    except (IndexError, ValueError):  # json.JSONDecodeError is a ValueError
        raise InputError(f"{where}: {opts.remote_python} did not answer which runtimes it has "
                         f"({output.strip()[-200:] or 'no output'})") from None
    missing = [fmt for fmt in formats if CALIBRATED[fmt][1] not in answer["found"]]
    if missing:
        extras = ",".join(CALIBRATED[fmt][2] for fmt in missing)
        runtimes = ", ".join(CALIBRATED[fmt][0] for fmt in missing)
        others = [CALIBRATED[f][0] for f in formats if f not in missing]
        raise InputError(f"{runtimes} not installed on {where}: install it there with pip install \"edgekit[{extras}]\""
                         + (f", or calibrate the others (--runtime {','.join(others)})" if others else ""))
    return {"cores": answer["cores"] or 1, "cache_bytes": _cache_bytes(answer)}


# Each file is measured in ROUNDS rounds spread over its batch (A B C … A B C …) and keeps the
# median of its rounds' p50s: a busy spell on a shared machine then spoils one round of a file,
# not the file. On this 2-core VM in a busy hour, the suite's networks measured twice agreed
# with themselves within ±20% for 59% of files in one pass each, 82% in three rounds each.
ROUNDS = 3


def measure_suite(files: list[dict], opts: CalibrateOptions, threads: int, log) -> list[dict]:
    """p50 of every suite file, one batch per format and precision (each batch one child process
    here, or one copy and one child there), measured in interleaved rounds, with a progress line per batch."""
    import math

    from edgekit.measure.latency import BenchSettings, bench_local
    from edgekit.measure.remote import bench_remote

    # the rounds share the runs and seconds asked for: calibrating takes no more runs than before
    settings = BenchSettings(threads=threads, runs=math.ceil(opts.runs / ROUNDS), min_time_s=opts.min_time_s / ROUNDS,
                             warmup_runs=3, warmup_time_s=0.1, timeout_s=120.0)
    measured = []
    batches = sorted({(f["format"], f["precision"]) for f in files})
    for number, (fmt, precision) in enumerate(batches, 1):
        batch = [f for f in files if f["format"] == fmt and f["precision"] == precision]
        paths = [f["path"] for f in batch] * ROUNDS
        where = opts.remote or "this machine"
        with log.step(f"Measure {len(batch)} {fmt} {precision} files on {where}, {threads} thread(s), "
                      f"{ROUNDS} rounds ({number}/{len(batches)})"):
            results = (bench_remote(paths, settings, opts.remote, opts.remote_python, list(opts.ssh_options))
                       if opts.remote else bench_local(paths, settings))
        if not (isinstance(results, list) and len(results) == len(paths) and all(isinstance(r, dict) for r in results)):
            raise InputError(f"{where}: the benchmark did not answer one result per file ({len(paths)} asked); "
                             "nothing was written. Rerun the calibration; if it repeats, report it with --debug output")
        for i, file in enumerate(batch):
            rounds = results[i::len(batch)]
            measured.append({**file, "p50_ms": _median_of_rounds([r.get("p50") for r in rounds]),
                             "machine": rounds[0].get("machine")})
    return measured


def _median_of_rounds(values: list):
    """The median of a file's round p50s; a value that is not a positive number (from a broken or
    hostile remote) is returned as it is, for the fit to refuse by name."""
    import math
    import statistics

    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0)]
    return bad[0] if bad else statistics.median(values)


def _cache_bytes(there: dict) -> int | None:
    """The measuring machine's largest cache as its probe reported it; a value that is not a
    positive whole number (a hostile or broken machine) counts as unknown: nothing is streamed."""
    value = there.get("cache_bytes")
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**40 else None


def _fit_setting(runtime: str, fmt: str, precision: str, threads: int, cache_bytes: int | None,
                 measured: list[dict]) -> dict:
    import numpy as np

    from edgekit.formats.facts import read_facts
    from edgekit.measure.calibration.costs import features, fit, leave_one_out, streamed_bytes, to_costs
    from edgekit.measure.layer_work import file_network_work

    rows = []
    for m in measured:
        facts = read_facts(m["path"], fmt)
        rows.append(features(file_network_work(facts), streamed_bytes(facts.weight_bytes, cache_bytes)))
    rows = np.array(rows)
    weights = np.array([m["weight"] for m in measured])
    try:
        times = np.array([m["p50_ms"] for m in measured], dtype=np.float64)  # from the measuring machine: checked
        costs = to_costs(fit(rows, times, weights))
        # how wrong an estimate of a whole network is: the suite's networks, each predicted without itself
        networks = leave_one_out(rows, times, weights)[np.array([m["network"] for m in measured])]
    except (ValueError, TypeError) as exc:  # a NaN, non-positive or non-numeric p50 from the measuring machine
        raise InputError(f"{runtime} {precision}: the measured latencies cannot be fitted ({exc}); nothing was "
                         "written. Rerun the calibration; if it repeats, report it with --debug output") from None
    band = [round(float(v), 3) for v in np.percentile(networks, BAND_PERCENTILES)]
    return {"runtime": runtime, "precision": precision, "threads": threads, "costs": costs, "points": len(times),
            "band": band, "within_20pct": round(float(np.mean(np.abs(networks - 1) <= 0.2)), 3)}


def _profile(opts: CalibrateOptions, formats: list[str], threads: int, there: dict, settings: list[dict],
             files: int, cache_bytes: int | None) -> dict:
    """there: the measuring machine as the latency harness described it (edgekit.measure.latency.machine)."""
    from edgekit.measure.calibration.suite import SUITE, SUITE_VERSION

    where = {"cpu": there.get("cpu") or there.get("arch"), "host": there.get("hostname"), "arch": there.get("arch")}
    precisions = sorted({s["precision"] for s in settings})
    profile = {
        "name": opts.name, "title": f"{where['cpu']} ({where['host']}), calibrated", "kind": "cpu",
        "arch": where["arch"], "runtimes": formats, "precisions": precisions + (["fp16"] if "fp32" in precisions else []),
        "runs_as": {"fp16": "fp32"} if "fp32" in precisions else {}, "threads": threads,
        **{key: list(value) if isinstance(value, tuple) else value
           for fmt in formats for key, value in REGISTRY[fmt].cpu_profile},
        "estimate_runtimes": {fmt: CALIBRATED[fmt][0] for fmt in formats},
        "calibration": {"suite": f"edgekit calibration suite v{SUITE_VERSION}: {len(SUITE)} entries, {files} files",
                        "measured_on": f"{where['cpu']} on {where['host']}",
                        "date": datetime.date.today().isoformat(), "settings": settings,
                        **({"cache_mb": round(cache_bytes / 2**20, 3)} if cache_bytes else {})},
        "notes": "Written by `edgekit devices calibrate`; estimates price each layer with the costs measured here.",
    }
    return {k: v for k, v in profile.items() if v is not None}


def _write_atomically(path: Path, profile: dict) -> None:
    """Checked by the profile schema first, then written beside the target and renamed into place."""
    import yaml

    from edgekit.measure.devices import DeviceProfile

    DeviceProfile.model_validate(profile)
    text = "# Written by `edgekit devices calibrate`\n" + yaml.safe_dump(profile, sort_keys=False)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        if path.exists() or path.is_symlink():  # appeared while measuring: never overwritten
            raise InputError(f"-o {path}: appeared while calibrating; the profile was not written")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
