"""The `edgekit` command. Thin: parse options → call the library → render → exit code."""

from __future__ import annotations

import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup
from rich.text import Text

from edgekit.support.version import __version__
from edgekit.errors import EXIT_INTERNAL, EdgekitError, GateFailure, first_line, printable
from edgekit.support.progress import StepLog, console as err_console, escaping_console, one_line

app = typer.Typer(
    name="edgekit",
    help="Compress Keras image classifiers and export verified int8 TFLite, ONNX and OpenVINO models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no `<bool>` after flags, `[default: …]` in help texts kept
)
out_console = escaping_console()  # text from files prints as it is, its control characters made visible
PIPE_WIDTH = 1000


def _print(renderable) -> None:
    """A result on stdout. Where stdout is not a terminal (a pipe, a CI log) tables keep their
    natural width instead of Rich's default 80 columns, which cut key numbers to `97.2…`."""
    out_console.width = None if out_console.is_terminal else PIPE_WIDTH
    out_console.print(renderable)


_state = {"debug": False}


@contextmanager
def _errors_to_exit_codes():
    """EdgekitError → one line and its exit code; anything else is a bug: exit 3."""
    try:
        yield
    except EdgekitError as exc:
        if _state["debug"]:
            err_console.print_exception()
            if getattr(exc, "child_traceback", None):  # a step that failed in its child process
                err_console.print(exc.child_traceback, markup=False)
        err_console.print(Text.assemble(("error:", "red"), f" {one_line(printable(str(exc)))}"), soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except BrokenPipeError:  # `edgekit ... --json | head`: the reader left; not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(0) from None
    except KeyboardInterrupt:
        err_console.print(Text.assemble(("interrupted", "red"), ": nothing was written"))
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if _state["debug"]:
            err_console.print_exception()
        err_console.print(Text.assemble(
            ("internal error:", "red"), f" {type(exc).__name__}: {one_line(printable(first_line(exc))) if str(exc).strip() else ''} "
            "— this is a bug in edgekit; rerun with --debug and report the output"), soft_wrap=True)
        raise typer.Exit(EXIT_INTERNAL) from None


def _version(value: bool):
    if value:
        print(f"edgekit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
):
    from edgekit.support.quiet_libraries import configure

    _state["debug"] = debug
    configure(debug, quiet_on=False)  # a command's -q turns it on


@app.command()
def compress(
    model: Path = typer.Argument(..., help="Keras model: .h5 or .keras (tf_keras or Keras 3), or a SavedModel folder."),
    int8: bool = typer.Option(False, "--int8", help="Quantize to int8 (full int8 with --data, else weights only)."),
    fp16: bool = typer.Option(False, "--fp16", help="float16 TFLite and OpenVINO FP16 (for GPUs)."),
    int16x8: bool = typer.Option(False, "--int16x8", help="With --data: also a TFLite file with int16 activations "
        "and int8 weights (TFLite's 16x8 mode), closer to float than int8; for targets with 16-bit kernels (LiteRT "
        "runs it on reference kernels, many times slower than fp32 on a CPU)."),
    prune: Optional[float] = typer.Option(None, "--prune", help="Prune to this sparsity (0 < S < 1), fine-tuning on --data."),
    prune_structure: Optional[str] = typer.Option(None, "--prune-structure", help="unstructured (default) or 2:4."),
    prune_channels: Optional[float] = typer.Option(None, "--prune-channels", help="Remove this fraction (0 < R < 1) "
        "of the output channels of every conv/dense group that can lose them (residual adds, squeeze-excite and "
        "concatenations kept consistent), rebuild a smaller model and fine-tune it on --data with distillation from "
        "the original: faster on every runtime, unlike --prune."),
    prune_channels_target_macs: Optional[float] = typer.Option(None, "--prune-channels-target-macs", help="Instead "
        "of a ratio: remove channels until the MACs are at most this fraction of the original's (e.g. 0.5), the "
        "groups that cost least top-1 on --val first."),
    prune_channels_target_latency: Optional[float] = typer.Option(None, "--prune-channels-target-latency", help="Instead "
        "of a ratio: remove channels until the latency estimated on --device (or measured on --remote) is at most "
        "this many ms."),
    device: Optional[str] = typer.Option(None, "--device", help="With --prune-channels-target-latency: the device "
        "profile (`edgekit devices`) the latency is estimated on (with --remote: its threads and providers)."),
    remote: Optional[str] = typer.Option(None, "--remote", help="With --prune-channels-target-latency: measure each "
        "candidate on USER@HOST over SSH (key-based; edgekit installed there) instead of estimating."),
    remote_python: str = typer.Option("python3", "--remote-python", help="The Python on the remote that has edgekit."),
    ssh_option: list[str] = typer.Option([], "--ssh-option", help="Extra ssh/scp -o option, e.g. Port=2222 (repeatable)."),
    qat: bool = typer.Option(False, "--qat", help="Quantization-aware training on --data, then int8 from its learned ranges."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Fine-tuning epochs for --prune/--qat (default 2) "
        "and --prune-channels (default 3)."),
    learning_rate: Optional[float] = typer.Option(None, "--learning-rate", help="Fine-tuning peak learning rate for "
        "--prune/--qat (default: the rate the file's Adam-family optimizer recorded, else 3e-4; warm-up, then cosine "
        "decay; a diverging run restarts lower)."),
    accuracy_tolerance: Optional[float] = typer.Option(None, "--accuracy-tolerance", help="Top-1 points a result may "
        "lose against the original: a fine-tuning stage that loses more stops the run (default 3); an int8 file that "
        "loses more exits 1 with everything written."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="A recipe YAML file or the name of a shipped one (edgekit recipes)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Calibration/training data: image folder (one sub-folder per class) or .npz with x, y."),
    val: Optional[Path] = typer.Option(None, "--val", help="Validation data, same forms as --data; gives accuracy."),
    formats: Optional[str] = typer.Option(None, "--formats", help="Comma-separated: tflite, onnx, openvino (default all)."),
    preprocess: Optional[str] = typer.Option(None, "--preprocess", help="unit (x/255, default for folders), symmetric (x/127.5-1), none (default for .npz)."),
    calib_samples: Optional[int] = typer.Option(None, "--calib-samples", help="Calibration samples, drawn at random (seeded) from --data (default 200)."),
    io_dtype: Optional[str] = typer.Option(None, "--io-dtype", help="TFLite int8 input/output type: float32, int8 or uint8."),
    max_accuracy_drop: Optional[float] = typer.Option(
        None, "--max-accuracy-drop", help="With --int8 --data --val: where int8 loses more top-1 points than this, "
        "keep the most sensitive layers in float until it does not."),
    equalize: bool = typer.Option(False, "--equalize", help="With --int8: cross-layer equalization first, so that "
        "one channel far wider than the rest no longer spoils a per-tensor int8 grid (every layer stays integer; "
        "the float function is unchanged)."),
    relu6: bool = typer.Option(False, "--relu6", help="With --equalize (turns it on): ReLU6 becomes ReLU so that "
        "equalization reaches MobileNet-style blocks; changes the float function where an activation passed 6 "
        "(report.json repairs.change says by how much)."),
    bias_correction: bool = typer.Option(False, "--bias-correction", help="With --int8 --data: subtract the mean "
        "int8 weight-rounding error, measured on the calibration data, from each conv/dense bias."),
    adaround: bool = typer.Option(False, "--adaround", help="With --int8 --data: learned weight rounding "
        "(AdaRound): each weight rounds up or down to whichever int8 step moves its layer's output least on the "
        "calibration data; each int8 file is checked to hold those weights."),
    integer_only: bool = typer.Option(False, "--integer-only", help="With --int8 --data: every op of each int8 file "
        "computes in integers (what NPUs need); a float op left in any file is exit 2, naming it. Turns on "
        "--equalize, the dead-channel repair and the rewrite of BatchNorms that do not fold, unless a recipe sets "
        "them itself."),
    per_tensor: bool = typer.Option(False, "--per-tensor", help="With --int8: one scale per weight tensor instead of "
        "one per output channel, for NPUs that take no per-channel scales (checked in each int8 file). Silences "
        "BatchNorm channels of ~0 variance first (recipe repairs.dead_channels), whose folded kernels would set "
        "the whole tensor's step."),
    ranges: Optional[str] = typer.Option(None, "--ranges", help="With --int8 --data: how activation ranges are "
        "calibrated: default (each library's own), minmax, percentile (99.99th, drops rare extremes) or mse (least "
        "expected squared error)."),
    target: Optional[str] = typer.Option(None, "--target", help="A device profile (name or YAML, `edgekit devices`): "
        "it decides the formats, int8/uint8 I/O and integer-only, and each int8 file is checked against it."),
    outdir: Optional[Path] = typer.Option(None, "-o", "--output", help="Output folder (default ./<model stem>-edgekit)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
    seed: int = typer.Option(0, "--seed", help="Seed for calibration sampling."),
    trust_model: bool = typer.Option(False, "--trust-model", help="Load Lambda layers and custom classes (runs code from the file)."),
    custom_objects: Optional[str] = typer.Option(None, "--custom-objects", help="Module that defines the model's custom classes (with --trust-model)."),
    no_bench: bool = typer.Option(False, "--no-bench", help="Skip measuring each artifact's latency on this host."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
):
    """Export a Keras classifier to TFLite, ONNX and OpenVINO (fp32 and int8), verify, report."""
    from edgekit import api
    from edgekit.support.quiet_libraries import configure

    configure(_state["debug"], quiet)
    with _errors_to_exit_codes():
        try:
            report = api.compress(model, int8=int8, fp16=fp16, prune=prune, prune_structure=prune_structure, qat=qat,
                                  epochs=epochs, recipe=recipe, data=data, val=val, formats=formats,
                                  preprocess=preprocess, calib_samples=calib_samples, io_dtype=io_dtype,
                                  max_accuracy_drop=max_accuracy_drop, learning_rate=learning_rate,
                                  accuracy_tolerance=accuracy_tolerance, equalize=equalize,
                                  integer_only=integer_only, target=target, per_tensor=per_tensor,
                                  bias_correction=bias_correction, relu6=relu6, ranges=ranges, int16x8=int16x8,
                                  adaround=adaround, prune_channels=prune_channels,
                                  prune_channels_target_macs=prune_channels_target_macs,
                                  prune_channels_target_latency=prune_channels_target_latency, device=device,
                                  remote=remote, remote_python=remote_python, ssh_options=ssh_option,
                                  output=outdir, force=force, seed=seed,
                                  trust_model=trust_model, custom_objects=custom_objects, bench=not no_bench,
                                  quiet=quiet)
        except GateFailure as failure:  # accuracy_tolerance: the results were written; show them first
            if getattr(failure, "report", None):
                _show(failure.report)
            raise
        _show(report.model_dump(mode="json", by_alias=True))


@app.command(name="eval")
def evaluate(
    artifacts: list[Path] = typer.Argument(..., help="Artifacts: .tflite, .onnx, OpenVINO .xml."),
    data: Path = typer.Option(..., "--data", help="Labelled data: image folder (one sub-folder per class) or .npz with x, y."),
    preprocess: Optional[str] = typer.Option(None, "--preprocess", help="unit, symmetric or none (default: unit for folders, none for .npz)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Runtime threads."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds before a hanging evaluation is given up."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (with confusion matrices) instead of a table."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
):
    """Top-1/top-5 accuracy of each artifact on labelled data, and how often they agree."""
    from edgekit import api
    from edgekit.reports.terminal import render_evaluation

    with _errors_to_exit_codes(), _progress(f"Evaluate {len(artifacts)} artifact(s) on {data}", quiet):
        result = api.evaluate(artifacts, data, preprocess=preprocess, threads=threads, timeout=timeout)
        _emit(result.model_dump(mode="json"), as_json, render_evaluation)


@app.command()
def diagnose(
    model: Path = typer.Argument(..., help="The Keras model the files were exported from (.h5, .keras)."),
    artifacts: list[Path] = typer.Argument(..., help="Exported files: .tflite, .onnx, OpenVINO .xml."),
    data: Path = typer.Option(..., "--data", help="Inputs to compare on: image folder or .npz with x (labels unused)."),
    samples: int = typer.Option(64, "--samples", help="Compare on the first N inputs."),
    top: int = typer.Option(10, "--top", help="Layers shown per file in the table (--json has all)."),
    preprocess: Optional[str] = typer.Option(None, "--preprocess", help="unit, symmetric or none (default: unit for folders, none for .npz)."),
    trust_model: bool = typer.Option(False, "--trust-model", help="Load Lambda layers and custom classes (runs code from the file)."),
    custom_objects: Optional[str] = typer.Option(None, "--custom-objects", help="Module that defines the model's custom classes (with --trust-model)."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds before a hanging diagnosis is given up."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (every layer) instead of a table."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
):
    """Per-layer int8 error of each file against the Keras model: SQNR, the error each layer adds, activation ranges."""
    from edgekit.quality.diagnose import diagnose_artifacts
    from edgekit.reports.terminal import render_diagnosis

    with _errors_to_exit_codes():
        if top < 1:
            from edgekit.errors import InputError

            raise InputError(f"--top {top}: show at least 1 layer per file")
        with _progress(f"Diagnose {len(artifacts)} file(s) layer by layer against {model}", quiet):
            result = diagnose_artifacts(model, artifacts, data, samples, preprocess, trust_model, custom_objects,
                                        timeout)
        _emit(result, as_json, lambda r: render_diagnosis(r, top))


@app.command()
def bench(
    artifacts: list[Path] = typer.Argument(..., help="Artifacts: .tflite, .onnx, OpenVINO .xml."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Runtime threads (default: the runtime's own)."),
    runs: int = typer.Option(50, "--runs", help="At least this many measured runs."),
    min_time: float = typer.Option(1.0, "--min-time", help="And at least this many seconds of measured runs."),
    warmup: int = typer.Option(1, "--warmup", help="At least this many warm-up runs."),
    warmup_time: float = typer.Option(0.5, "--warmup-time", help="And at least this many seconds of warm-up."),
    timeout: float = typer.Option(300.0, "--timeout", help="Seconds before a hanging artifact is given up."),
    remote: Optional[str] = typer.Option(None, "--remote", help="Run on USER@HOST over SSH (key-based; edgekit installed there)."),
    remote_python: str = typer.Option("python3", "--remote-python", help="The Python on the remote that has edgekit."),
    ssh_option: list[str] = typer.Option([], "--ssh-option", help="Extra ssh/scp -o option, e.g. Port=2222 (repeatable)."),
    device: Optional[str] = typer.Option(None, "--device", help="A device profile (`edgekit devices`) or a profile "
                                         "YAML: estimated unless --remote runs it there; host measures here."),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="With --device: the runtime to estimate for "
                                          "(default: the profile's for the file's format)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="With --device: the precision it would compute "
                                            "in (default: the file's)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
):
    """Latency of each artifact on this machine (or --remote): batch 1, warm-up, then percentiles.
    With --device and no --remote: an estimate for that device, labelled as such."""
    from edgekit import api
    from edgekit.reports.terminal import render_bench, render_estimates

    with _errors_to_exit_codes(), _progress(f"Benchmark {len(artifacts)} artifact(s)", quiet):
        result = api.bench(artifacts, device=device, remote=remote, remote_python=remote_python,
                           ssh_options=ssh_option, threads=threads, runs=runs, min_time=min_time, warmup=warmup,
                           warmup_time=warmup_time, timeout=timeout, runtime=runtime, precision=precision)
        _emit(result.results, as_json, render_estimates if result.estimated else render_bench)


@app.command()
def gate(
    report: Path = typer.Argument(..., help="The new report.json (from compress)."),
    baseline: Path = typer.Option(..., "--baseline", help="The baseline report.json to compare with."),
    max_accuracy_drop: Optional[float] = typer.Option(None, "--max-accuracy-drop", help="Top-1 points [default: 0.5]."),
    max_latency_increase: Optional[float] = typer.Option(None, "--max-latency-increase", help="p50, percent [default: 10]."),
    max_size_increase: Optional[float] = typer.Option(None, "--max-size-increase", help="Percent [default: 5]."),
    min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy", help="Top-1 floor in percent, for every artifact."),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="A baseline artifact missing from the report is skipped, not an error."),
    config: Optional[Path] = typer.Option(None, "--config", help="gate.yaml with the same thresholds (flags win)."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write JUnit XML: one testcase per check."),
    summary: Optional[Path] = typer.Option(None, "--summary", help="Append a Markdown summary (e.g. $GITHUB_STEP_SUMMARY)."),
    remeasure: bool = typer.Option(True, "--remeasure/--no-remeasure", help="When both reports' files are beside "
        "them, measure their latency again now, interleaved (a busy machine slows both alike)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
):
    """Compare a report with a baseline: exit 1 if accuracy, latency or size regressed, 0 if not."""
    from edgekit import api
    from edgekit.reports.gating import raise_if_failed
    from edgekit.reports.terminal import render_gate

    with _errors_to_exit_codes():
        with _progress(f"Compare {report} with {baseline}", quiet):
                result = api.gate(report, baseline, max_accuracy_drop=max_accuracy_drop,
                              max_latency_increase=max_latency_increase, max_size_increase=max_size_increase,
                              min_accuracy=min_accuracy, allow_missing=allow_missing, config=config, junit=junit,
                              summary=summary, remeasure=remeasure).model_dump(mode="json")
        _emit(result, as_json, render_gate)
        raise_if_failed(result)


@app.command()
def sweep(
    model: Path = typer.Argument(..., help="Keras model: .h5 or .keras (tf_keras or Keras 3), or a SavedModel folder."),
    data: Optional[Path] = typer.Option(None, "--data", help="Calibration/training data: image folder or .npz with x, y."),
    val: Optional[Path] = typer.Option(None, "--val", help="Labelled validation data: every artifact's top-1 (required)."),
    recipes: str = typer.Option("int8,prune50-int8,qat-int8,fp16", "--recipes",
                                help="Comma-separated shipped recipe names (edgekit recipes) or recipe YAML files."),
    grid: list[str] = typer.Option([], "--grid", help="KEY=V1,V2 to try every value of (repeatable): sparsity, "
                                   "calib_samples, epochs. Applied to the recipes that have the key."),
    devices: str = typer.Option("host", "--devices", help="Comma-separated device profiles (edgekit devices): host "
                                "is measured, the others estimated (or measured with --remote)."),
    max_accuracy_drop: float = typer.Option(1.0, "--max-accuracy-drop", help="The pick: the fastest artifact within "
                                            "this many top-1 points of the float model."),
    outdir: Path = typer.Option(Path("sweep"), "-o", "--output", help="Folder for sweep.json/md/html and cells/ "
                                "(rerun with the same folder to resume)."),
    store: Optional[Path] = typer.Option(None, "--store", help="Where cell folders live (default OUTPUT/cells); "
                                         "with --ray, a folder every node shares, written by the tasks directly."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Cells at a time on this machine (default: "
                                       "as many as cores and memory allow)."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Run the cells on Ray: --ray alone (Ray's default cluster) "
                                      "or --ray HOST:PORT. Needs pip install \"edgekit[ray]\"."),
    cpus_per_cell: Optional[int] = typer.Option(None, "--cpus-per-cell", help="Threads (local) or Ray CPUs per cell."),
    retries: int = typer.Option(2, "--retries", help="With --ray: times a cell whose worker died is run again."),
    max_cells: int = typer.Option(200, "--max-cells", help="Refuse a sweep of more cells than this (before any runs)."),
    formats: Optional[str] = typer.Option(None, "--formats", help="Only these formats in every cell: tflite,onnx,openvino."),
    preprocess: Optional[str] = typer.Option(None, "--preprocess", help="unit, symmetric or none (as in compress)."),
    seed: int = typer.Option(0, "--seed", help="Seed for calibration sampling."),
    trust_model: bool = typer.Option(False, "--trust-model", help="Load Lambda layers and custom classes (runs code from the file)."),
    runs: int = typer.Option(20, "--runs", help="Latency: at least this many measured runs per artifact."),
    min_time: float = typer.Option(0.5, "--min-time", help="Latency: and at least this many seconds per artifact."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Latency: runtime threads (default: the runtime's own)."),
    remote: list[str] = typer.Option([], "--remote", help="DEVICE=USER@HOST: measure that device over SSH instead "
                                     "of estimating it (repeatable)."),
    remote_python: str = typer.Option("python3", "--remote-python", help="The Python on the remotes that has edgekit."),
    ssh_option: list[str] = typer.Option([], "--ssh-option", help="Extra ssh/scp -o option (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
):
    """Compress with every recipe × grid value, measure every artifact on every device, and pick per device."""
    from edgekit import api
    from edgekit.support.quiet_libraries import configure
    from edgekit.sweeps.render import render_summary

    configure(_state["debug"], quiet)
    with _errors_to_exit_codes():
        from edgekit.sweeps.run import CellsFailed

        try:
            result = api.sweep(model, data=data, val=val, recipes=recipes, grid=grid, devices=devices,
                               max_accuracy_drop=max_accuracy_drop, output=outdir, store=store, jobs=jobs, ray=ray,
                               cpus_per_cell=cpus_per_cell, retries=retries, max_cells=max_cells, formats=formats,
                               preprocess=preprocess, seed=seed, trust_model=trust_model, runs=runs, min_time=min_time,
                               threads=threads, remote=remote, remote_python=remote_python, ssh_options=ssh_option, quiet=quiet,
                               raise_on_failure=True)
        except CellsFailed as failure:  # the sweep's files were written from the other cells: show them first
            _print(render_summary(failure.result))
            raise
        _print(render_summary(result.model_dump(mode="json")))


class _DevicesGroup(TyperGroup):
    """`edgekit devices NAME` shows a profile while `edgekit devices calibrate` is a command: a
    first word that names no subcommand is a profile to show."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["show", *args]
        return super().resolve_command(ctx, args)


devices_app = typer.Typer(cls=_DevicesGroup, add_completion=False, pretty_exceptions_enable=False,
                          rich_markup_mode=None, help="List the device profiles, show one (devices NAME), or "
                          "calibrate this machine or a remote one (devices calibrate).")
app.add_typer(devices_app, name="devices")


def _shown_profile(profile) -> dict:
    from edgekit.measure.layer_estimate import fitted_summary

    fitted = None if profile.calibration else fitted_summary(profile.name)
    return profile.model_dump(exclude_none=True) | ({"latency_model": fitted} if fitted else {})


@devices_app.callback(invoke_without_command=True)
def devices(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """List the device profiles, or show one: specs, constraints and the published latency it is calibrated on."""
    if ctx.invoked_subcommand is not None:
        return
    from edgekit.measure.devices import all_profiles
    from edgekit.reports.terminal import render_devices

    with _errors_to_exit_codes():
        _emit([_shown_profile(p) for p in all_profiles()], as_json, render_devices)


@devices_app.command("show", hidden=True)
def devices_show(
    name: str = typer.Argument(..., help="A shipped profile's name or a profile YAML."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
):
    """Show one profile in full, with how wrong its estimates were measured to be."""
    from edgekit.measure.devices import load_profile
    from edgekit.reports.terminal import render_device

    with _errors_to_exit_codes():
        _emit(_shown_profile(load_profile(name, option="device")), as_json, render_device)


@devices_app.command("calibrate")
def devices_calibrate(
    output: Path = typer.Option(..., "-o", "--output", help="The profile YAML to write (must not exist)."),
    name: str = typer.Option("calibrated", "--name", help="The profile's name."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Runtime threads to calibrate at (default: every core there)."),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="Comma-separated: litert, onnxruntime, openvino-cpu "
                                          "(default: all three)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="Comma-separated: fp32, int8 (default: both)."),
    remote: Optional[str] = typer.Option(None, "--remote", help="Calibrate USER@HOST over SSH (edgekit's light install "
                                         "there: the suite is copied as files)."),
    remote_python: str = typer.Option("python3", "--remote-python", help="The Python on the remote that has edgekit."),
    ssh_option: list[str] = typer.Option([], "--ssh-option", help="Extra ssh/scp -o option, e.g. Port=2222 (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
):
    """Measure a fixed suite of layers and small networks here (or --remote), fit each runtime's
    per-layer costs, and write a profile that `bench --device PROFILE.yaml` estimates with."""
    from edgekit.measure.calibration.run import CalibrateOptions, calibrate
    from edgekit.reports.terminal import render_calibration
    from edgekit.support.quiet_libraries import configure

    configure(_state["debug"], quiet)
    with _errors_to_exit_codes():
        options = CalibrateOptions(output=output, name=name, threads=threads, runtimes=_csv(runtime),
                                   precisions=_csv(precision), remote=remote, remote_python=remote_python,
                                   ssh_options=tuple(ssh_option), quiet=quiet)
        profile = calibrate(options)
        _print(render_calibration(profile, output))


def _csv(text: Optional[str]) -> Optional[list[str]]:
    return [part.strip() for part in text.split(",") if part.strip()] if text is not None else None


@app.command()
def recipes():
    """List the shipped recipes, one line each (use with --recipe NAME)."""
    from edgekit.compression.config import load_recipe, shipped_recipes

    with _errors_to_exit_codes():
        for name in shipped_recipes():
            out_console.print(Text.assemble((f"{name:<18}", "bold"), f" {load_recipe(name).description or ''}"),
                              soft_wrap=True)


@app.command()
def inspect(
    model: Path = typer.Argument(..., help="Keras model: .h5 or .keras (tf_keras or Keras 3), or a SavedModel folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    trust_model: bool = typer.Option(False, "--trust-model", help="Load Lambda layers and custom classes (runs code from the file)."),
    custom_objects: Optional[str] = typer.Option(None, "--custom-objects", help="Module that defines the model's custom classes."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
):
    """Show a model's format, Keras flavour, signature, size, MACs, and what QAT and the bridge cannot handle."""
    from edgekit.compression.inspection import inspect_file
    from edgekit.reports.terminal import render_inspection

    with _errors_to_exit_codes(), _progress(f"Inspect {model}", quiet):
        facts = inspect_file(model, trust=trust_model, custom_objects=custom_objects)
        _emit(facts, as_json, render_inspection)


@app.command()
def demo(
    outdir: Path = typer.Option(Path("edgekit-demo"), "-o", "--output", help="Folder for the demo model, data and outputs."),
    force: bool = typer.Option(False, "--force", help="Overwrite an earlier demo's files."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
):
    """Train a small CNN on scikit-learn's digits, then compress it to int8 in every format."""
    from edgekit.demo import run_demo
    from edgekit.support.quiet_libraries import configure

    configure(_state["debug"], quiet)
    with _errors_to_exit_codes():
        report = run_demo(outdir, force, StepLog(quiet=quiet))
        _show(report)


def _finite(value):
    """Strict JSON has no NaN or Infinity: a number that is not finite is printed as null."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


@contextmanager
def _progress(title: str, quiet: bool):
    """A spinner while a command works, then one line with its time and peak memory (stderr)."""
    from edgekit.support.progress import StepLog

    with StepLog(quiet=quiet).step(title):
        yield


def _emit(result, as_json: bool, render) -> None:
    """--json: the result on stdout, alone; otherwise the rich table `render` makes of it."""
    if as_json:
        import json

        print(json.dumps(_finite(result), indent=2, allow_nan=False))
    else:
        _print(render(result))


def _show(report: dict) -> None:
    from edgekit.reports.terminal import render_table
    from edgekit.reports.text import accuracy_aware_lines, worst_layer_lines

    _print(render_table(report))
    for line in [*accuracy_aware_lines(report), *worst_layer_lines(report)]:  # long: plain lines, not a caption
        _print(line)
    _print(f"Wrote {report['output']}/report.json, report.md and report.html")


def _silence_native_stderr() -> None:
    """TensorFlow, LiteRT and OpenVINO log from C++ straight to fd 2, ignoring
    TF_CPP_MIN_LOG_LEVEL (TF 2.21). Point fd 2 at /dev/null and give Python's sys.stderr
    (rich progress, errors, warnings) a copy of the real stderr. --debug keeps it all."""
    import os

    try:
        real_stderr = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        sys.stderr = os.fdopen(real_stderr, "w", buffering=1)
    except OSError:
        pass  # no usable fd 2 (unusual hosts): keep the noise rather than fail


def _terminate_like_interrupt(signum, frame):
    """SIGTERM (CI cancels, `kill`, container stop) unwinds like Ctrl-C: staging and scratch
    folders are removed and a running step's child process is stopped."""
    raise KeyboardInterrupt


def debug_first(args: list[str]) -> list[str]:
    """`--debug` wherever it is typed (every error says "rerun with --debug", and people add it
    at the end): moved in front of the subcommand, where it is defined. After a `--`, an
    argument named --debug is left alone."""
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[:end]:
        return args
    return ["--debug", *[a for a in args[:end] if a != "--debug"], *args[end:]]


RAY_ADDRESS = re.compile(r"(auto|local|ray://\S+|\S+:\d+)")


def ray_flag_alone(args: list[str]) -> list[str]:
    """`edgekit sweep --ray model.h5 …`: --ray takes an ADDRESS only when the next word is one
    (HOST:PORT, auto, local, ray://…); otherwise it stands alone, meaning Ray's default cluster."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--":
            break
        if arg == "--ray" and not (i + 1 < len(out) and RAY_ADDRESS.fullmatch(out[i + 1])):
            out[i] = "--ray="
    return out


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate_like_interrupt)
    args = ray_flag_alone(debug_first(sys.argv[1:]))
    if "--debug" not in args:
        _silence_native_stderr()
    app(args=args, prog_name="edgekit")


if __name__ == "__main__":
    sys.exit(main())
