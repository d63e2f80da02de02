"""The Python API: what the CLI does, as functions with typed results.

    from edgekit import compress, evaluate, bench, gate
    report = compress(model, int8=True, data=(x_train, y_train), val=(x_val, y_val), output="out")
    report.artifacts[1].accuracy.top1, report.save("report.json")

A model is a path or an in-memory tf_keras / Keras 3 model; data is a path or `(x, y)` numpy
arrays (x preprocessed float32 NHWC, as the model takes it). In-memory inputs are written to a
private temporary folder and go through exactly the path a file takes: the same checks, the
same report. Errors are edgekit's exceptions (edgekit.errors: InputError, ModelError,
GateFailure, …) with the same messages the CLI prints.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, ValidationError, validate_call

from edgekit.errors import InputError, first_line
from edgekit.reports.report_schema import Report as _ReportSchema


class _Result(BaseModel):
    """A result as the JSON the CLI writes, with typed access to the fields edgekit defines."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=indent, allow_nan=False)

    def save(self, path) -> Path:
        path = Path(path)
        path.write_text(self.to_json() + "\n")
        return path


class Report(_ReportSchema, _Result):
    """report.json of a compress run: the schema the gate reads strictly (report_schema.Report)."""


class Evaluation(_Result):
    data: dict
    artifacts: list[dict]
    agreement: dict


class Benchmark(_Result):
    results: list[dict]
    estimated: bool = False  # a device profile's roofline estimates, not measurements


class Sweep(_Result):
    """sweep.json: the cells, every artifact's accuracy and latency per device, and per device the
    Pareto front and the pick (the fastest artifact within the accuracy budget)."""

    cells: list[dict]
    points: list[dict]
    devices: list[dict]
    reference_top1: Optional[float] = None

    def pick(self, device: str = "host") -> Optional[dict]:
        """The picked point for a device (None when nothing fits the budget there)."""
        entry = next((d for d in self.devices if d["device"] == device), None)
        if entry is None:
            raise KeyError(f"{device!r} was not a device of this sweep ({', '.join(d['device'] for d in self.devices)})")
        return next((p for p in self.points if p["id"] == entry["pick"]), None)

    @property
    def failed(self) -> list[dict]:
        return [c for c in self.cells if c["status"] != "ok"]


class GateResult(_Result):
    report: str
    baseline: str
    thresholds: dict
    checks: list[dict]
    passed: bool


# --- arguments: checked at the boundary, so only edgekit's errors come out -------------------

PathArg = Union[str, os.PathLike]


def _checked(function):
    """Each argument is checked against the function's annotations before it runs (pydantic):
    `seed=1.5`, `formats=[1, 2]`, `output=123` or `recipes=None` is an InputError naming the
    argument, as the CLI refuses a bad option, not a TypeError from deep inside."""
    import inspect

    validated = validate_call(config=ConfigDict(arbitrary_types_allowed=True))(function)
    parameters = list(inspect.signature(function).parameters)

    @functools.wraps(function)
    def call(*args, **kwargs):
        try:
            return validated(*args, **kwargs)
        except ValidationError as exc:
            if exc.title != function.__name__:
                raise  # a model checked inside the call: not about the arguments
            error = exc.errors()[0]
            name = error["loc"][0] if error["loc"] else "arguments"
            name = parameters[name] if isinstance(name, int) and name < len(parameters) else name
            wanted = str(function.__annotations__.get(name, "another type")).replace("PathArg", "str | os.PathLike")
            raise InputError(f"{function.__name__}(): {name} must be {wanted}, got {type(error.get('input')).__name__}"
                             f" {str(error.get('input'))[:60]!r}") from None
    return call


# --- inputs: paths, or objects written to a private folder ------------------------------------

def _model_path(model, folder: Path) -> Path:
    if isinstance(model, (str, Path)):
        return Path(model)
    if not hasattr(model, "save") or not hasattr(model, "layers"):
        raise InputError(f"model: expected a path or a Keras model, got {type(model).__name__}")
    keras3 = not type(model).__module__.startswith("tf_keras")  # Keras 3 writes .keras, tf_keras .h5
    path = folder / ("model.keras" if keras3 else "model.h5")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf_keras calls .h5 "legacy": it is what it reads fastest
        try:
            model.save(path)
        except Exception as exc:  # noqa: BLE001 - the user's object failed: bad input, named
            raise InputError(f"model: saving the in-memory {type(model).__name__} failed ({type(exc).__name__}: "
                             f"{first_line(exc)}); save it yourself and pass the path") from None
    return path


def _data_path(data, folder: Path, name: str, option: str) -> Optional[Path]:
    if data is None or isinstance(data, (str, Path)):
        return None if data is None else Path(data)
    import numpy as np

    if not (isinstance(data, (tuple, list)) and len(data) in (1, 2)):
        raise InputError(f"{option}: expected a path or an (x, y) tuple of numpy arrays, got {type(data).__name__}")
    arrays = {"x": _array(data[0], f"{option} x")}
    if len(data) == 2 and data[1] is not None:
        arrays["y"] = _array(data[1], f"{option} y")
    path = folder / f"{name}.npz"
    np.savez(path, **arrays)
    return path


def _array(value, what: str):
    """A numeric numpy array of value: ragged lists, generators and objects are refused here."""
    import numpy as np

    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{what}: not an array of numbers ({first_line(exc)})") from None
    if array.dtype.hasobject or not np.issubdtype(array.dtype, np.number) or array.ndim == 0:
        raise InputError(f"{what}: expected a numpy array of numbers, got {type(value).__name__} "
                         f"(dtype {array.dtype}, {array.ndim} dimensions)")
    return array


def _private_folder(stack: ExitStack) -> Path:
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgekit-api-")))


# --- the functions -------------------------------------------------------------------------

@_checked
def compress(model: Any, *, int8: bool = False, fp16: bool = False, prune: float | None = None,
             prune_structure: str | None = None, qat: bool = False, epochs: int | None = None,
             recipe: str | None = None, data: Any = None, val: Any = None,
             formats: str | Sequence[str] | None = None,
             preprocess: str | None = None, calib_samples: int | None = None, io_dtype: str | None = None,
             max_accuracy_drop: float | None = None, learning_rate: float | None = None,
             accuracy_tolerance: float | None = None, equalize: bool = False, integer_only: bool = False,
             target: str | None = None, per_tensor: bool = False, bias_correction: bool = False,
             relu6: bool = False, ranges: str | None = None, int16x8: bool = False, adaround: bool = False,
             prune_channels: float | None = None, prune_channels_target_macs: float | None = None,
             prune_channels_target_latency: float | None = None, device: str | None = None,
             remote: str | None = None, remote_python: str = "python3", ssh_options: Sequence[str] = (),
             output: PathArg | None = None,
             force: bool = False, seed: int = 0, trust_model: bool = False, custom_objects: str | None = None, bench: bool = True,
             quiet: bool = True) -> Report:
    """`edgekit compress`: export, verify, measure; returns the report (also written to `output`,
    default ./<model stem>-edgekit, or ./model-edgekit for an in-memory model). `remote`
    ("USER@HOST", over SSH): where `prune_channels_target_latency` is measured instead of
    estimated on `device`."""
    from edgekit.compression.pipeline import CompressOptions, compress as run_compress
    from edgekit.support.progress import StepLog
    from edgekit.compression.recipe_flags import recipe_from_flags

    if formats is not None and not isinstance(formats, str):
        formats = ",".join(formats)
    resolved = recipe_from_flags(recipe, int8=int8, fp16=fp16, prune=prune, prune_structure=prune_structure,
                                 qat=qat, epochs=epochs, formats=formats, preprocess=preprocess,
                                 calib_samples=calib_samples, io_dtype=io_dtype, max_accuracy_drop=max_accuracy_drop,
                                 learning_rate=learning_rate, accuracy_tolerance=accuracy_tolerance,
                                 equalize=equalize, integer_only=integer_only, target=target,
                                 per_tensor=per_tensor, bias_correction=bias_correction, relu6=relu6,
                                 ranges=ranges, int16x8=int16x8, adaround=adaround, prune_channels=prune_channels,
                                 prune_channels_target_macs=prune_channels_target_macs,
                                 prune_channels_target_latency=prune_channels_target_latency, device=device)
    with ExitStack() as stack:
        folder = _private_folder(stack)
        model_path = _model_path(model, folder)
        if output is None and not isinstance(model, (str, Path)):
            output = Path("model-edgekit")
        opts = CompressOptions(model=model_path, recipe=resolved, data=_data_path(data, folder, "data", "data"),
                               val=_data_path(val, folder, "val", "val"), outdir=Path(output) if output else None,
                               force=force, seed=seed, trust_model=trust_model, custom_objects=custom_objects,
                               quiet=quiet, bench=bench, remote=remote, remote_python=remote_python,
                               ssh_options=list(ssh_options))
        report = run_compress(opts, StepLog(quiet=quiet))
    return Report.model_validate(_json_ready(report))


@_checked
def evaluate(artifacts: PathArg | Sequence[PathArg], data: Any, *, preprocess: str | None = None,
             threads: int | None = None, timeout: float = 600.0) -> Evaluation:
    """`edgekit eval`: top-1/top-5, confusion and agreement of each artifact on labelled data."""
    from edgekit.quality.evaluation import evaluate_artifacts

    with ExitStack() as stack:
        folder = _private_folder(stack)
        result = evaluate_artifacts(_paths(artifacts), _data_path(data, folder, "data", "data"), preprocess, threads,
                                    timeout)
    return Evaluation.model_validate(result)


@_checked
def bench(artifacts: PathArg | Sequence[PathArg], *, device: str | None = None, remote: str | None = None,
          remote_python: str = "python3", ssh_options: Sequence[str] = (), threads: int | None = None, runs: int = 50,
          min_time: float = 1.0, warmup: int = 1, warmup_time: float = 0.5, timeout: float = 300.0,
          runtime: str | None = None, precision: str | None = None) -> Benchmark:
    """`edgekit bench`: batch-1 latency percentiles per artifact, measured on this host or on
    `remote` ("USER@HOST", over SSH); with a `device` profile (a name or a profile YAML) and no
    remote, that device's estimate and compatibility checks instead (`estimated` says which), for
    `runtime` at `precision` where given (what the profile offers; anything else is an InputError)."""
    from edgekit.measure.latency import BenchSettings, bench_local

    paths = _paths(artifacts)
    profile = None
    if remote is not None:  # checked first, "" included: nothing else runs on a bad destination
        from edgekit.measure.remote import parse_destination

        parse_destination(remote)
    if (runtime or precision) and (not device or remote):
        raise InputError("--runtime and --precision choose what an estimate assumes: give them with --device "
                         "and without --remote (a measurement runs the file as it is)")
    if device:
        from edgekit.measure.devices import load_profile

        profile = load_profile(device)
        if not remote and not profile.measured_live:
            from edgekit.measure.estimate import estimate_all

            return Benchmark(results=estimate_all(paths, profile, runtime, precision), estimated=True)
        if runtime or precision:
            raise InputError(f"--runtime and --precision choose what an estimate assumes; {profile.name} is measured here")
    if threads is None and profile and remote:
        threads = profile.threads
    settings = BenchSettings(threads=threads, runs=runs, min_time_s=min_time, warmup_runs=warmup,
                             warmup_time_s=warmup_time, timeout_s=timeout,
                             providers=profile.onnx_providers if profile else None,
                             openvino_device=profile.openvino_device if profile else None)
    if remote is not None:
        from edgekit.measure.remote import bench_remote

        results = bench_remote(paths, settings, remote, remote_python, list(ssh_options))
    else:
        results = bench_local(paths, settings)
    for result in results:
        result["device"] = profile.name if profile else result.get("remote", "host")
    return Benchmark(results=results)


@_checked
def calibrate(output: PathArg, *, name: str = "calibrated", threads: int | None = None,
              runtimes: Sequence[str] | None = None, precisions: Sequence[str] | None = None,
              remote: str | None = None, remote_python: str = "python3", ssh_options: Sequence[str] = (),
              quiet: bool = True) -> dict:
    """`edgekit devices calibrate`: measure the suite here (or on `remote`), fit each runtime's
    per-layer costs and write the profile YAML to `output` (a new .yaml); returns the profile as
    written. `bench(..., device=output)` estimates with it."""
    from edgekit.measure.calibration.run import CalibrateOptions, calibrate as run_calibration

    return run_calibration(CalibrateOptions(
        output=Path(output), name=name, threads=threads, runtimes=list(runtimes) if runtimes is not None else None,
        precisions=list(precisions) if precisions is not None else None, remote=remote, remote_python=remote_python,
        ssh_options=tuple(ssh_options), quiet=quiet))


@_checked
def gate(report: Any, baseline: Any, *, max_accuracy_drop: float | None = None,
         max_latency_increase: float | None = None, max_size_increase: float | None = None,
         min_accuracy: float | None = None, allow_missing: bool = False,
         config: PathArg | None = None, junit: PathArg | None = None, summary: PathArg | None = None,
         raise_on_failure: bool = False, remeasure: bool = True) -> GateResult:
    """`edgekit gate`: compare a report (a path or a Report) with a baseline. `passed` says the
    verdict; with raise_on_failure a regression raises GateFailure, as the CLI exits 1. remeasure: when
    both reports' files are beside them, their latency is measured again side by side."""
    from edgekit.reports.gating import load_thresholds, raise_if_failed, run_gate

    limits = load_thresholds(Path(config) if config else None, {
        "max_accuracy_drop": max_accuracy_drop, "min_accuracy": min_accuracy,
        "max_latency_increase": max_latency_increase, "max_size_increase": max_size_increase,
        "allow_missing": True if allow_missing else None})
    with ExitStack() as stack:
        folder = _private_folder(stack)
        paths = [_report_path(r, folder, name) for r, name in ((report, "report"), (baseline, "baseline"))]
        result = run_gate(paths[0], paths[1], limits, Path(junit) if junit else None,
                          Path(summary) if summary else None, remeasure=remeasure)
    if raise_on_failure:
        raise_if_failed(result)
    return GateResult.model_validate(result)


@_checked
def sweep(model: Any, *, data: Any = None, val: Any = None,
          recipes: str | Sequence[str] = "int8,prune50-int8,qat-int8,fp16",
          grid: dict | Sequence[str] | None = None, devices: str | Sequence[str] = "host",
          max_accuracy_drop: float = 1.0, output: PathArg = "sweep", store: PathArg | None = None,
          jobs: int | None = None, ray: bool | str | None = None, cpus_per_cell: int | None = None, retries: int = 2,
          max_cells: int = 200,
          formats: str | Sequence[str] | None = None, preprocess: str | None = None, seed: int = 0,
          trust_model: bool = False, runs: int = 20, min_time: float = 0.5, threads: int | None = None,
          remote: dict[str, str] | Sequence[str] | None = None, remote_python: str = "python3",
          ssh_options: Sequence[str] = (), quiet: bool = True, raise_on_failure: bool = False) -> Sweep:
    """`edgekit sweep`: one compress per recipe × grid value (cells reused from an earlier run of
    the same output folder), every artifact measured or estimated per device, fronts and picks.
    `grid={"sparsity": [0.3, 0.5]}`; `ray=True` for Ray's default cluster or "HOST:PORT";
    `remote={"rpi4": "pi@raspberrypi"}`. Failed cells are in `.failed` (with raise_on_failure,
    CellsFailed is raised after the files are written, as the CLI exits 1).
    In-memory models and arrays are saved afresh on each call, so only paths let a rerun reuse cells."""
    from edgekit.support.progress import StepLog
    from edgekit.sweeps.run import CellsFailed, SweepOptions, run_sweep

    with ExitStack() as stack:
        folder = _private_folder(stack)
        opts = SweepOptions(
            model=_model_path(model, folder), data=_data_path(data, folder, "data", "data"),
            val=_data_path(val, folder, "val", "val"), recipes=_joined(recipes), grid=_grid_items(grid),
            devices=_joined(devices), max_accuracy_drop=max_accuracy_drop, output=Path(output),
            store=Path(store) if store else None, jobs=jobs, ray=_ray_address(ray), cpus_per_cell=cpus_per_cell,
            retries=retries, max_cells=max_cells, formats=_joined(formats) if formats else None, preprocess=preprocess,
            seed=seed, trust_model=trust_model, runs=runs, min_time=min_time, threads=threads,
            remotes=[f"{k}={v}" for k, v in remote.items()] if isinstance(remote, dict) else list(remote or []),
            remote_python=remote_python, ssh_options=list(ssh_options))
        try:
            return Sweep.model_validate(run_sweep(opts, StepLog(quiet=quiet)))
        except CellsFailed as failure:
            failure.result = Sweep.model_validate(failure.result).model_dump(mode="json")
            if raise_on_failure:
                raise
            return Sweep.model_validate(failure.result)


def _joined(value) -> str:
    return value if isinstance(value, str) else ",".join(str(v) for v in value)


def _grid_items(grid) -> list[str]:
    if grid is None:
        return []
    if isinstance(grid, dict):
        return [f"{key}={_joined(values) if not isinstance(values, (int, float)) else values}"
                for key, values in grid.items()]
    return [grid] if isinstance(grid, str) else list(grid)


def _ray_address(ray) -> str | None:
    """False/None: the local pool; True: Ray's default cluster (""); a string: its address."""
    if ray is None or ray is False:
        return None
    return "" if ray is True else str(ray)


def _report_path(report, folder: Path, name: str) -> Path:
    if isinstance(report, (str, Path)):
        return Path(report)
    if isinstance(report, _Result):
        try:
            return report.save(folder / f"{name}.json")
        except ValueError as exc:  # NaN or infinity set on a field: JSON has no such numbers
            raise InputError(f"{name}: the Report cannot be written as JSON ({first_line(exc)})") from None
    raise InputError(f"{name}: expected a path to a report.json or a Report, got {type(report).__name__}")


def _paths(artifacts) -> list[Path]:
    items = [artifacts] if isinstance(artifacts, (str, Path)) else list(artifacts)
    if not items:
        raise InputError("artifacts: give at least one .tflite, .onnx or OpenVINO .xml")
    return [Path(a) for a in items]


def _json_ready(report: dict) -> Any:
    """The report as it was written: JSON types only (paths as strings)."""
    return json.loads(json.dumps(report, default=str))
