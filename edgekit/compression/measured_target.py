"""--prune-channels-target-latency MS --remote USER@HOST: the latency target measured, not estimated.

Each candidate the target search tries (a smaller model, before its fine-tune: the fine-tune
changes weights, not the architecture, so not the latency) is exported to the run's first
format at the run's precision and benchmarked on that machine over SSH (measure/remote.py),
p50 at batch 1. The exports go to a scratch folder with a log of their own: the run's step
timings and the output folder never see them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.formats import exporter_for, get_format
from edgekit.formats.exporter import ExportRequest
from edgekit.formats.source import forget_live, keras_source
from edgekit.measure.latency import BenchSettings
from edgekit.support.progress import StepLog

CALIBRATION_SAMPLES = 16  # int8 latency does not depend on the ranges: a few inputs make a valid file
# Shorter than `edgekit bench`'s defaults: a search measures up to 8 candidates; p50 is what it compares.
SEARCH_BENCH = dict(runs=30, min_time_s=0.5, warmup_runs=2, warmup_time_s=0.3)


@dataclass
class RemoteLatency:
    """Callable: a tf_keras model → its p50 in ms on `destination`, as a file of `fmt` at `precision`."""

    destination: str
    fmt: str
    precision: str  # "int8" (calibrated on `calibration`) or "fp32"
    image_shape: tuple
    scratch: Path
    log: StepLog
    calibration: np.ndarray | None = None
    custom_objects: str | None = None  # the run's --custom-objects and --trust-model, for a child's load
    trust: bool = False
    remote_python: str = "python3"
    ssh_options: list[str] = field(default_factory=list)
    settings: BenchSettings = field(default_factory=lambda: BenchSettings(**SEARCH_BENCH))
    measured: list[float] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.destination} ({get_format(self.fmt).label} {self.precision}, p50)"

    def __call__(self, keras_model) -> float:
        from edgekit.measure.remote import bench_remote

        folder = self.scratch / f"candidate-{len(self.measured)}"
        folder.mkdir()
        path = self._export(keras_model, folder)
        (result,) = bench_remote([path], self.settings, self.destination, self.remote_python, self.ssh_options)
        ms = float(result["p50"])
        self.measured.append(ms)
        self.log.info(f"channels: candidate {len(self.measured)}: {ms:.3f} ms on {self.where}")
        return ms

    def _export(self, keras_model, folder: Path) -> Path:
        # with a log of its own, see above; in a child process where the run's own export would be
        # (support/isolated_steps.py: large models, so that a VGG16's conversion memory is not added
        # to this process once per candidate), else in-process from the model already in memory
        import warnings

        from edgekit.support.isolated_steps import isolate_steps

        weight_bytes = 4 * int(keras_model.count_params())
        isolate = isolate_steps(weight_bytes)
        path = folder / "candidate.h5"
        if isolate:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tf_keras calls HDF5 "legacy": it is what tf_keras loads fastest
                keras_model.save(path)
        source = keras_source(path, self.image_shape, self.custom_objects, self.trust,
                              live=None if isolate else keras_model)
        request = ExportRequest(source=source, image_shape=self.image_shape, stem="candidate", outdir=folder,
                                scratch=folder, precisions=[self.precision], formats=[self.fmt], isolate=isolate,
                                weight_bytes=weight_bytes)
        if self.precision == "int8":
            request.calibration = str(folder / "calibration.npy")
            np.save(request.calibration, self.calibration[:CALIBRATION_SAMPLES])
            request.calibration_samples = min(len(self.calibration), CALIBRATION_SAMPLES)
        try:
            artifacts = exporter_for(self.fmt).export(request, StepLog(quiet=True))
        finally:
            forget_live(request.source)
        return next(a.path for a in artifacts if a.precision == self.precision)
