"""After the cells: every artifact once, on every device of the sweep.

The host's latency is measured here, one artifact after another, after all cells have finished:
measured while other cells ran, numbers would depend on what ran beside them (and on which
engine scheduled them). Another device gets the roofline estimate and the compatibility
checks of `edgekit bench --device`, or a measurement over SSH when `--remote NAME=USER@HOST`
names it. Files with the same bytes (the fp32 file of two int8 cells) are one point.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.measure.devices import DeviceProfile
from edgekit.errors import EdgekitError, first_line
from edgekit.measure.latency import BenchSettings


@dataclass
class Measuring:
    profiles: list[DeviceProfile]
    settings: BenchSettings
    remotes: dict[str, str] = field(default_factory=dict)  # device name → USER@HOST
    remote_python: str = "python3"
    ssh_options: list[str] = field(default_factory=list)


def collect_points(records: list[dict], store: Path, output: Path) -> list[dict]:
    """One point per distinct artifact file of the finished cells, with its accuracy."""
    from edgekit.sweeps.cell import path_in_folder

    points: dict[str, dict] = {}
    for record in records:
        if record["status"] != "ok":
            continue
        folder = store / record["folder"]
        report = json.loads((folder / "report.json").read_text())
        for entry in report["artifacts"]:
            path = path_in_folder(folder, entry.get("path") or "")
            if path is None:  # _intact refused such a cell; a report changed since then gives nothing
                continue
            digest = _artifact_digest(path)
            if digest in points:
                points[digest]["cells"].append(record["name"])
                continue
            points[digest] = {
                "id": f"{record['name']} · {entry['id']}", "cells": [record["name"]], "artifact": entry["id"],
                "format": entry["format"], "precision": entry["precision"], "path": shown_path(path, output),
                "size_bytes": entry["size_bytes"], "sparsity": entry.get("sparsity"),
                "top1": (entry.get("accuracy") or {}).get("top1"), "sha256": digest, "devices": {},
                "_path": path,
            }
    return list(points.values())


def _artifact_digest(path: Path) -> str:
    """An OpenVINO model is its .xml and its .bin together."""
    from edgekit.intake.model import sha256_of

    parts = [sha256_of(path)] + ([sha256_of(path.with_suffix(".bin"))] if path.suffix == ".xml" else [])
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def shown_path(path: Path, output: Path) -> str:
    """As sweep.json shows a path: relative to the sweep's folder when inside it, else absolute."""
    try:
        return str(path.resolve().relative_to(output.resolve()))
    except ValueError:
        return str(path.resolve())


def measure_points(points: list[dict], how: Measuring, log) -> None:
    """Fill each point's `devices`: {name: {latency_ms, measured|estimated, …} or {incompatible: why}}."""
    for profile in how.profiles:
        if profile.name in how.remotes:
            _measure_remote(points, profile, how, log)
        elif profile.measured_live:
            _measure_here(points, how.settings, log)
        else:
            _estimate(points, profile)


def _measure_here(points: list[dict], settings: BenchSettings, log) -> None:
    from edgekit.measure.latency import bench_local

    with log.step(f"Measure {len(points)} artifacts on this host, one after another (batch 1)"):
        _timed(points, "host", lambda paths: bench_local(paths, settings), {})


def _measure_remote(points: list[dict], profile: DeviceProfile, how: Measuring, log) -> None:
    from dataclasses import replace

    from edgekit.measure.remote import bench_remote

    runnable = [p for p in points if not _problems(p, profile)]
    for point in points:
        if point not in runnable:
            point["devices"][profile.name] = {"incompatible": "; ".join(_problems(point, profile))}
    settings = replace(how.settings, threads=how.settings.threads or profile.threads,
                       providers=profile.onnx_providers, openvino_device=profile.openvino_device)
    destination = how.remotes[profile.name]
    with log.step(f"Measure {len(runnable)} artifacts on {profile.name} ({destination}, over SSH)"):
        _timed(runnable, profile.name,
               lambda paths: bench_remote(paths, settings, destination, how.remote_python, how.ssh_options),
               {"remote": destination})


def _timed(points: list[dict], device: str, bench, extra: dict) -> None:
    """Each point's latency on `device` from `bench(paths)`: all files in one benchmark run (a
    run per file would pay the interpreter start, or the SSH set-up, each time), or one file
    at a time when a file breaks its runtime, so that only that file is marked."""
    def record(point: dict, timing: dict) -> None:
        point["devices"][device] = {"latency_ms": timing["p50"], "p90_ms": timing["p90"], "measured": True,
                                    "threads": timing["threads"], "runs": timing["runs"], **extra}

    if not points:
        return
    try:
        for point, timing in zip(points, bench([p["_path"] for p in points])):
            record(point, timing)
        return
    except EdgekitError:
        pass
    for point in points:
        try:
            (timing,) = bench([point["_path"]])
        except EdgekitError as exc:
            point["devices"][device] = {"error": first_line(exc, 300)}
            continue
        record(point, timing)


def _facts(point: dict):
    if "_facts" not in point:
        from edgekit.formats.facts import read_facts

        point["_facts"] = read_facts(point["_path"], point["format"])
    return point["_facts"]


def _problems(point: dict, profile: DeviceProfile) -> list[str]:
    from edgekit.measure.estimate import compatibility_problems

    return compatibility_problems(profile, _facts(point))


def _estimate(points: list[dict], profile: DeviceProfile) -> None:
    from edgekit.measure.estimate import estimate_artifact

    for point in points:
        problems = _problems(point, profile)
        if problems:
            point["devices"][profile.name] = {"incompatible": "; ".join(problems)}
            continue
        estimate = estimate_artifact(profile, _facts(point))
        point["devices"][profile.name] = {"latency_ms": estimate["latency_ms"]["estimate"], "estimated": True,
                                          "likely_ms": estimate.get("likely_ms"), "basis": estimate["basis"]}


def public(points: list[dict]) -> list[dict]:
    """The points as sweep.json holds them (without the in-memory helpers)."""
    return [{k: v for k, v in p.items() if not k.startswith("_")} for p in points]
