"""`edgekit sweep`: check everything → plan the cells → run the missing ones → measure → fronts → files."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.errors import CellsFailed, InputError, Interrupted, OutputError
from edgekit.sweeps.cell import clear_place, read_record
from edgekit.sweeps.plan import DEFAULT_RECIPES, Cell, count_cells, expand, inputs_key, parse_grid, parse_recipes

SCHEMA = "edgekit.sweep/1"
OUTPUTS = ("sweep.json", "sweep.md", "sweep.html")


@dataclass
class SweepOptions:
    model: Path
    data: Path | None = None
    val: Path | None = None
    recipes: str = DEFAULT_RECIPES
    grid: list[str] = field(default_factory=list)
    devices: str = "host"
    max_accuracy_drop: float = 1.0
    output: Path = Path("sweep")
    store: Path | None = None  # where cell folders live (default OUTPUT/cells); with Ray, shared by every node
    jobs: int | None = None  # local pool: cells at a time (default: what cores and memory allow)
    ray: str | None = None  # None: local pool; "" : Ray's default cluster; else its ADDRESS
    cpus_per_cell: int | None = None
    retries: int = 2
    formats: str | None = None
    preprocess: str | None = None
    seed: int = 0
    trust_model: bool = False
    runs: int = 20
    min_time: float = 0.5
    threads: int | None = None
    remotes: list[str] = field(default_factory=list)  # NAME=USER@HOST
    remote_python: str = "python3"
    ssh_options: list[str] = field(default_factory=list)
    max_cells: int = 200  # a bigger grid is a typo more often than a plan: ask for it by name

    @property
    def cell_store(self) -> Path:
        return Path(self.store) if self.store else Path(self.output) / "cells"


def run_sweep(opts: SweepOptions, log) -> dict:
    with log.step("Check the model and data every cell shares"):  # decodes every image of a folder
        plan = _check_and_plan(opts)
    store = opts.cell_store
    done, todo = _split_finished(plan.cells, store)
    log.info(f"{len(plan.cells)} cells: {len(done)} finished earlier (reused), {len(todo)} to run"
             + (f" on {plan.engine_text}" if todo else ""))
    records = {r["key"]: r | {"reused": True} for r in done}
    started = time.perf_counter()
    if todo:
        records |= {r["key"]: r for r in _run_cells(opts, plan, todo, store, log)}
    cells_s = round(time.perf_counter() - started, 3)
    ordered = [records[c.key] for c in plan.cells]
    result = _measure_and_analyse(opts, plan, ordered, store, log)
    result["timings_s"] = {"cells": cells_s, "measure": result.pop("_measure_s")}
    result["engine"] = plan.engine
    result["output"] = str(opts.output)
    _write_outputs(result, Path(opts.output))
    failed = [r for r in ordered if r["status"] != "ok"]
    if failed:
        error = CellsFailed(f"{len(failed)} of {len(ordered)} cells failed ({'; '.join(_failure(r) for r in failed[:3])}"
                            f"{' …' if len(failed) > 3 else ''}); the sweep's files are written from the rest: "
                            f"see {Path(opts.output) / 'sweep.md'}")
        error.result = result
        raise error
    over = [r for r in ordered if r.get("exit_code") == 1]
    if over:  # each cell's files were written; compress would have exited 1 for each of them
        error = CellsFailed(f"{len(over)} of {len(ordered)} cells missed their accuracy target "
                            f"({'; '.join(_missed(r) for r in over[:3])}{' …' if len(over) > 3 else ''}); every "
                            f"cell's files were written: see {Path(opts.output) / 'sweep.md'}")
        error.result = result
        raise error
    return result


def _failure(record: dict) -> str:
    return f"{record['name']}: {record['error']}"


def _missed(record: dict) -> str:
    return f"{record['name']}: {record['note']}"


# --- check and plan -----------------------------------------------------------------------

@dataclass
class _Plan:
    cells: list[Cell]
    profiles: list
    remotes: dict[str, str]
    engine: dict
    engine_text: str
    cell_mb: float
    grid: dict


def _check_and_plan(opts: SweepOptions) -> _Plan:
    """Every option and input that can be wrong is refused here, before a folder is made."""
    from edgekit.intake.data import check_data_path
    from edgekit.measure.devices import load_profile
    from edgekit.intake.model import vet_model_file
    from edgekit.compression.recipe_flags import parse_formats

    _check_options(opts)
    names = dict.fromkeys(name.strip() for name in opts.devices.split(",") if name.strip())
    if not names:
        raise InputError(f"--devices {opts.devices!r}: name at least one device, e.g. --devices host,rpi4")
    profiles = [load_profile(name, option="--devices") for name in names]
    remotes = _parse_remotes(opts.remotes, profiles)
    overrides = {"formats": parse_formats(opts.formats) if opts.formats else None, "preprocess": opts.preprocess}
    choices = parse_recipes(opts.recipes)
    grid = parse_grid(opts.grid)
    planned = count_cells(choices, grid)
    if planned > opts.max_cells:
        raise InputError(f"--recipes and --grid make {planned:,} cells, over --max-cells {opts.max_cells}: "
                         "list fewer values, or raise --max-cells if you mean it")
    _check_output(Path(opts.output), opts.cell_store)
    # a missing, non-Keras or hostile file (a Lambda, a SavedModel that writes files) stops here, not in every cell
    info, _ = vet_model_file(Path(opts.model), opts.trust_model)
    for option, path in (("--data", opts.data), ("--val", opts.val)):
        if path is not None:
            check_data_path(Path(path), option)
    facts = _load_model_once(opts, info.size_bytes)
    _check_shared_data(opts, tuple(facts["image_shape"]), facts["num_classes"])
    cells = expand(choices, grid, overrides, inputs_key(Path(opts.model), opts.data, opts.val, opts.seed,
                                                        opts.trust_model))
    cell_mb = _cell_memory_mb(info.size_bytes)
    engine, text = _engine(opts, cell_mb)
    _check_cells_have_data(choices, opts.data)
    return _Plan(cells, profiles, remotes, engine, text, cell_mb, grid)


def _load_model_once(opts: SweepOptions, size_bytes: int) -> dict:
    """Load the model as every cell will (a non-classifier, NaN weights: exit 2 once, here). A big
    model loads in a child process, so the driver does not hold TensorFlow's memory while cells run."""
    from edgekit.support.isolated_steps import isolate_steps, run_step

    with tempfile.TemporaryDirectory(prefix="edgekit-sweep-") as scratch:
        return run_step("edgekit.intake.model:classifier_facts",
                        {"path": os.path.abspath(opts.model), "trust": opts.trust_model},
                        isolate=isolate_steps(size_bytes), workdir=Path(scratch), label="loading the model").result


def _check_shared_data(opts: SweepOptions, image_shape: tuple[int, int, int], num_classes: int) -> None:
    """Data every cell would read is read once here, as the cells will read it (resized to the
    model's input): exit 2 before any cell, not the same failure in each. An .npz: pickled, NaN,
    complex, no `x`, the wrong shape, a --val without labels, labels beyond the model's classes;
    a folder: a FIFO, a broken or oversized image."""
    from edgekit.intake.data import check_labels, load_dataset

    for option, path, labels in (("--data", opts.data, False), ("--val", opts.val, True)):
        if path is not None:
            check_labels(load_dataset(Path(path), image_shape, opts.preprocess, option, need_labels=labels),
                         num_classes, option)


def _check_cells_have_data(choices, data: Path | None) -> None:
    """Pruning and QAT fine-tune on --data: without it every such cell would fail the same way."""
    needing = [c.label for c in choices if c.recipe is not None and c.recipe.stages]
    if needing and data is None:
        raise InputError(f"--recipes {', '.join(needing)} fine-tune the model and need labelled training data: pass "
                         "--data (an image folder or .npz with x, y), or choose recipes without stages (int8, fp16)")


def _check_options(opts: SweepOptions) -> None:
    """The options that need no file."""
    if opts.val is None:
        raise InputError("sweep ranks artifacts by accuracy: pass --val VAL (labelled validation data)")
    if not 0 <= opts.max_accuracy_drop <= 100:
        raise InputError(f"--max-accuracy-drop {opts.max_accuracy_drop:g}: choose top-1 points from 0 to 100")
    if opts.jobs is not None and not 1 <= opts.jobs <= 256:
        raise InputError(f"--jobs {opts.jobs}: choose 1 to 256 cells at a time")
    if opts.cpus_per_cell is not None and not 1 <= opts.cpus_per_cell <= 1024:
        raise InputError(f"--cpus-per-cell {opts.cpus_per_cell}: choose 1 to 1024")
    if not 1 <= opts.max_cells <= 100_000:
        raise InputError(f"--max-cells {opts.max_cells}: choose 1 to 100000")
    if not 0 <= opts.retries <= 100:
        raise InputError(f"--retries {opts.retries}: choose 0 to 100")
    if opts.ray is not None and opts.jobs is not None:
        raise InputError("--jobs sets the local pool; with --ray the cluster's resources decide (see --cpus-per-cell)")
    if not 0 <= opts.seed < 2 ** 32:
        raise InputError(f"--seed {opts.seed}: choose a whole number from 0 to {2 ** 32 - 1}")
    if opts.preprocess not in (None, "unit", "symmetric", "none"):
        raise InputError(f"--preprocess {opts.preprocess}: choose unit, symmetric or none")
    _bench_settings(opts).check()


def _bench_settings(opts: SweepOptions):
    from edgekit.measure.latency import BenchSettings

    return BenchSettings(threads=opts.threads, runs=opts.runs, min_time_s=opts.min_time, warmup_runs=1,
                         warmup_time_s=min(0.5, opts.min_time))


def _parse_remotes(items: list[str], profiles: list) -> dict[str, str]:
    from edgekit.measure.remote import parse_destination

    names = {p.name for p in profiles}
    remotes = {}
    for item in items:
        name, sep, destination = item.partition("=")
        if not sep or name not in names:
            raise InputError(f"--remote {item}: write DEVICE=USER@HOST with a DEVICE of --devices "
                             f"({', '.join(sorted(names))})")
        parse_destination(destination)
        remotes[name] = destination
    return remotes


def _check_output(output: Path, store: Path) -> None:
    """A sweep folder is reused (that is how a rerun resumes), but a folder of something else is not taken over."""
    from edgekit.support.output_folders import check_output_folder

    for folder in (output, store):
        check_output_folder(folder, [], force=True)  # a folder, or one that can be made, and writable
    if output.is_dir():
        foreign = [p.name for p in output.iterdir() if p.name not in (*OUTPUTS, "cells") and not p.name.startswith(".")]
        if foreign:
            raise OutputError(f"-o {output} holds files that are not a sweep's ({', '.join(sorted(foreign)[:3])}); "
                              "choose an empty or new folder")


def _cell_memory_mb(model_bytes: int) -> float:
    """A cell's peak: a whole compress run grows by about 15 MiB per MiB of weights on top of
    ~1.5 GiB (benchmarks/memory.py: VGG16 9.4 GiB, ResNet50 3.0, MobileNetV2 1.5; digits 1.0)."""
    return 1500 + 15 * model_bytes / (1 << 20)


def _engine(opts: SweepOptions, cell_mb: float) -> tuple[dict, str]:
    cores = os.cpu_count() or 1
    if opts.ray is not None:
        from edgekit.sweeps.ray_engine import check_reachable

        check_reachable(opts.ray)
        cpus = opts.cpus_per_cell or 1
        return ({"name": "ray", "address": opts.ray or None, "cpus_per_cell": cpus, "memory_mb_per_cell": round(cell_mb),
                 "retries": opts.retries},
                f"Ray ({opts.ray or 'default cluster'}; {cpus} CPU and {cell_mb:,.0f} MiB per cell, "
                f"{opts.retries} retries)")
    from edgekit.support.memory import available_mb

    jobs = opts.jobs or max(1, min(cores, int(available_mb() // cell_mb)))
    threads = opts.cpus_per_cell or max(1, cores // jobs)
    return ({"name": "local", "jobs": jobs, "threads_per_cell": threads},
            f"this machine ({jobs} at a time, {threads} thread{'s' if threads > 1 else ''} each)")


def _split_finished(cells: list[Cell], store: Path) -> tuple[list[dict], list[Cell]]:
    """A cell is finished when its folder's record says ok for the same key and its report and
    every file the report names are there, whole; anything less is run again."""
    done, todo = [], []
    for cell in cells:
        record = read_record(store / cell.folder)
        if record and record.get("key") == cell.key and record.get("status") == "ok" \
                and _intact(store / cell.folder):
            done.append(record)
        else:
            todo.append(cell)
    return done, todo


def _intact(folder: Path) -> bool:
    from edgekit.reports.report_schema import ReportError, parse_strict_json, validate_report
    from edgekit.sweeps.cell import path_in_folder
    from edgekit.support.untrusted import read_text

    try:
        if path_in_folder(folder, "report.json") is None:
            return False
        report = validate_report(parse_strict_json(read_text(folder / "report.json", "report")))
        paths = [(path_in_folder(folder, getattr(a, "path", None) or ""), a.size_bytes) for a in report.artifacts]
        return all(path is not None and path.stat().st_size == size for path, size in paths)
    except (ReportError, InputError, OSError, ValueError, AttributeError):
        return False


# --- run ---------------------------------------------------------------------------------

def _specs(opts: SweepOptions, plan: _Plan, cells: list[Cell], store: Path) -> list[dict]:
    threads = plan.engine.get("threads_per_cell") or plan.engine.get("cpus_per_cell") or 1
    return [{**cell.describe(), "error": cell.error, "model": str(Path(opts.model).resolve()),
             "data": str(Path(opts.data).resolve()) if opts.data else None, "val": str(Path(opts.val).resolve()),
             "outdir": str((store / cell.folder).resolve()), "seed": opts.seed, "trust_model": opts.trust_model,
             "threads": threads} for cell in cells]


def _run_cells(opts: SweepOptions, plan: _Plan, cells: list[Cell], store: Path, log) -> list[dict]:
    records: list[dict] = []

    def done(record: dict) -> None:
        records.append(record)
        _record_missing(store, record)
        log.done(f"[{len(records)}/{len(cells)}] {_cell_line(record)}", record["status"] == "ok")

    for cell in cells:
        clear_place(store / cell.folder)
    specs = _specs(opts, plan, cells, store)
    try:
        if plan.engine["name"] == "ray":
            from edgekit.sweeps.ray_engine import RayEngine

            inputs = {"model": Path(opts.model), "data": Path(opts.data) if opts.data else None, "val": Path(opts.val)}
            engine = RayEngine(opts.ray or None, store, opts.store is not None, plan.engine["cpus_per_cell"],
                               plan.cell_mb, opts.retries)
            try:
                engine.run(specs, done, inputs)
            finally:
                plan.engine["cluster"] = engine.cluster
        else:
            from edgekit.sweeps.local_pool import LocalPool

            store.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="edgekit-sweep-") as scratch:
                LocalPool(plan.engine["jobs"], Path(scratch)).run(specs, done)
    except KeyboardInterrupt:
        finished = sum(r["status"] == "ok" for r in records)
        raise Interrupted(f"interrupted: the running cells were stopped; {finished} cell(s) finished in this run are "
                          f"kept in {store}; rerun the same command to resume") from None
    return records


def _cell_line(record: dict) -> str:
    where = record["worker"].get("node")
    took = f" ({record['seconds']:.1f} s{' on ' + where if where else ''})" if record.get("seconds") else ""
    return record["name"] + took + ("" if record["status"] == "ok" else f": {record['error']}")


def _record_missing(store: Path, record: dict) -> None:
    """A cell that never wrote its record (killed, lost with its Ray task) gets one, so the store
    says why, and an older record of the folder does not speak for this run."""
    from edgekit.sweeps.cell import write_record

    existing = read_record(store / record["folder"])
    if existing is None or (existing.get("key"), existing.get("status")) != (record["key"], record["status"]):
        write_record(store / record["folder"], record)


# --- measure, analyse, write ----------------------------------------------------------------

def _measure_and_analyse(opts: SweepOptions, plan: _Plan, records: list[dict], store: Path, log) -> dict:
    from edgekit.sweeps.measure import Measuring, collect_points, measure_points, public, shown_path
    from edgekit.sweeps.pareto import analyse

    started = time.perf_counter()
    points = collect_points(records, store, Path(opts.output))
    measure_points(points, Measuring(plan.profiles, _bench_settings(opts), plan.remotes, opts.remote_python,
                                     opts.ssh_options), log)
    reference = _reference_top1(records, store)
    return {
        "schema": SCHEMA, "edgekit_version": _version(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": str(opts.model), "data": str(opts.data) if opts.data else None, "val": str(opts.val),
        "store": shown_path(store, Path(opts.output)), "max_accuracy_drop": opts.max_accuracy_drop,
        "reference_top1": reference, "grid": plan.grid,
        "cells": [_cell_entry(r, store, Path(opts.output)) for r in records],
        "points": public(points),
        "devices": analyse(points, plan.profiles, reference, opts.max_accuracy_drop),
        "_measure_s": round(time.perf_counter() - started, 3),
    }


def _reference_top1(records: list[dict], store: Path) -> float | None:
    """The Keras model's own top-1 on --val, as every cell measured it before any stage."""
    for record in records:
        if record["status"] == "ok":
            report = json.loads((store / record["folder"] / "report.json").read_text())
            accuracy = (report.get("reference") or {}).get("accuracy") or {}
            if accuracy.get("top1") is not None:
                return accuracy["top1"]
    return None


def _cell_entry(record: dict, store: Path, output: Path) -> dict:
    from edgekit.sweeps.measure import shown_path

    entry = {k: record.get(k) for k in ("name", "key", "status", "error", "note", "seconds", "peak_rss_mb", "worker")}
    entry["reused"] = bool(record.get("reused"))
    entry["folder"] = shown_path(store / record["folder"], output)
    return entry


def _version() -> str:
    from edgekit.support.version import __version__

    return __version__


def _write_outputs(result: dict, output: Path) -> None:
    """Each file whole or not at all: written beside, then moved into place; sweep.json last."""
    from edgekit.support.output_folders import write_text_atomically
    from edgekit.sweeps.render import render_html, render_markdown

    texts = {"sweep.md": render_markdown(result), "sweep.html": render_html(result),
             "sweep.json": json.dumps(result, indent=2, allow_nan=False) + "\n"}
    output.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS[1:] + OUTPUTS[:1]:
        write_text_atomically(output / name, texts[name], "the sweep's")
