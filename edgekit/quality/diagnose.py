"""Per-layer quantization error: each conv/dense layer's output in an exported file against
the Keras float model's, on the same inputs, with the activation ranges that explain it.

For every unit (edgekit.quality.layer_graph) and file:
- SQNR (dB) = −10·log10 of the mean over channels of Σ (file − float)² / Σ float² (each
  channel against its own scale, see _Stats), and the relative RMSE, the root of that mean;
- added (dB): the SQNR of the layer's inputs minus its own, i.e. what this layer costs.
  Error flows downstream, so every layer after a bad one looks bad too; layers are ranked
  by what they add. A first layer's input is taken at the 8-bit ideal (INPUT_SQNR_DB);
- the float activation range (min, max) and the outlier ratio: the largest channel's peak
  |value| over the median channel's. Per-tensor int8 spends its 256 steps on that peak.

Only the files' own runtimes run them: LiteRT keeps every tensor (preserve_all_tensors),
ONNX Runtime and OpenVINO get the layer outputs added as graph outputs. Statistics are
accumulated batch by batch, so memory does not grow with the sample count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.formats.graph import Chain, Unit, match
from edgekit.quality.layer_graph import keras_tap_model, keras_units, to_keras_layout

INPUT_SQNR_DB = round(6.02 * 8 + 1.76, 2)  # a full-scale signal on an ideal 8-bit grid
MAX_SQNR_DB = 150.0  # identical outputs: JSON has no infinity
DIAGNOSE_SAMPLES = 64  # `edgekit diagnose`: on MobileNetV2 within 0.1 dB of 200 inputs per layer
BATCH = 32
# Input values per batch: 21 images of 64×64×3, one of 224×224×3. Every layer's output of the
# batch is held in each runtime at once; on MobileNetV2 224 one image per batch took 4.4 s and
# 1.3 GiB where six took 7.3 s and 2.7 GiB (smaller arrays stay in cache).
BATCH_ELEMENTS = 1 << 18


@dataclass
class _Stats:
    """Per-channel sums: a channel hundreds of times larger than the rest holds nearly all
    of a tensor's energy, so a tensor-wide SQNR would hide the other channels being rounded
    to nothing. Each channel's error is taken relative to its own signal, then averaged."""

    signal: np.ndarray | None = None  # Σ float² per channel
    error: np.ndarray | None = None  # Σ (file − float)² per channel
    low: float = math.inf
    high: float = -math.inf
    peak: np.ndarray | None = None  # max |float| per channel

    def add(self, ref: "_Reference", got: np.ndarray) -> None:
        err2 = got.reshape(ref.flat.shape) - ref.flat
        # float32 within a batch (a relative error ~1e-6, far below what is measured), float64 across
        error = np.einsum("ij,ij->j", err2, err2).astype(np.float64)
        if self.signal is None:
            self.signal, self.error, self.peak = ref.signal, error, ref.peak
        else:
            self.signal, self.error = self.signal + ref.signal, self.error + error
            self.peak = np.maximum(self.peak, ref.peak)
        self.low, self.high = min(self.low, ref.low), max(self.high, ref.high)

    @property
    def noise_ratio(self) -> float:
        """Mean over live channels of error energy / signal energy (dead channels: no signal to lose)."""
        live = self.signal > 0
        return float(np.mean(self.error[live] / self.signal[live])) if live.any() else 0.0

    @property
    def sqnr_db(self) -> float:
        ratio = self.noise_ratio
        if ratio == 0:
            return MAX_SQNR_DB
        return float(min(MAX_SQNR_DB, max(-MAX_SQNR_DB, -10 * math.log10(ratio))))

    @property
    def outlier_ratio(self) -> float | None:
        median = float(np.median(self.peak))
        return round(float(self.peak.max()) / median, 2) if median > 0 else None


class _Reference:
    """One layer's float output on one batch, with the sums that depend on it alone: worked
    out once per batch and shared by every file compared against it."""

    def __init__(self, value: np.ndarray):
        self.value = value
        self.flat = value.reshape(-1, value.shape[-1])
        self.signal = np.einsum("ij,ij->j", self.flat, self.flat).astype(np.float64)
        self.peak = np.abs(self.flat).max(axis=0)
        self.low, self.high = float(self.flat.min()), float(self.flat.max())


# --- tapping each runtime ----------------------------------------------------------------
# Each takes the file and a flat list of taps (format-specific handles) and returns, per batch,
# one array per tap.

def _open_taps(path: Path, fmt: str, units: list[Unit]):
    """The runtime with every tap of every matched chain readable; the (unit, depth) of each tap
    in order; the matched chains."""
    from edgekit.formats import get_format

    kind = get_format(fmt)
    source = kind.part("graph")(path)
    paired = match(units, kind.part("chains")(source))

    # Depth is counted back from the chain's end: a quantizer's pre-pass may fuse the first ops
    # of a chain (ONNX Runtime joins MatMul and Add into Gemm), never what follows the last one.
    # Some formats are read at the chain's end only (Format.taps_inside_chains).
    def backs(chain: Chain) -> range:
        return range(len(chain.taps) if kind.taps_inside_chains else 1)

    keys = [(u.name, back) for u in units if u.name in paired for back in backs(paired[u.name])]
    taps = [paired[name].taps[-1 - back] for name, back in keys]
    return kind.part("taps")(source, taps), keys, paired


# --- the diagnosis -----------------------------------------------------------------------

@dataclass
class _FileRun:
    name: str
    path: Path
    fmt: str
    taps: object
    keys: list[tuple[str, int]]  # (unit, taps back from its chain's end) of each tap
    paired: dict[str, Chain]
    stats: dict[tuple[str, int], _Stats] = field(default_factory=dict)


def diagnose_files(keras_model, files: list[tuple[str, Path, str]], x: np.ndarray,
                   samples: int = DIAGNOSE_SAMPLES, checks: dict[str, str] | None = None,
                   twins: list[tuple[str, Path, str]] = ()) -> list[dict]:
    """`files`: (name, path, format). One entry per file of `files`, layers worst first.

    `checks` maps a file's name to the name of an fp32 file of the same format, among `files`
    or `twins` (fp32 files used only for this): its layers are then read at the depth where
    the fp32 file reproduces the Keras layer (a converter may fuse a later scale or bias into
    the conv, or leave it apart), and layers the fp32 file does not reproduce are listed as
    not compared. Without one, a layer is read at the end of its chain."""
    units = keras_units(keras_model)
    if not units:
        return [_empty(name, fmt, "the model has no conv/dense layers at its top level") for name, _, fmt in files]
    twin_names = {name for name, _, _ in twins}
    from edgekit.support.keras_compat import tensorflow

    tap_model = keras_tap_model(keras_model, units)
    tf = tensorflow()
    # graph mode (~2× eager), traced once for every batch size
    forward = tf.function(lambda batch: tap_model(batch, training=False),
                          input_signature=[tf.TensorSpec((None, *x.shape[1:]), tf.float32)])
    runs = []
    for name, path, fmt in [*files, *twins]:
        taps, keys, paired = _open_taps(Path(path), fmt, units)
        runs.append(_FileRun(name, Path(path), fmt, taps, keys, paired))
    x = x[:samples]
    # every layer's output of a batch is held at once: for 224² inputs (VGG16's first convs hold
    # 3.2 M values per image) batches shrink, as the runners' do (Runner.chunk_elements)
    size = max(1, min(BATCH, BATCH_ELEMENTS // max(1, int(np.prod(x.shape[1:])))))
    for start in range(0, len(x), size):
        batch = x[start:start + size]
        reference = forward(batch)
        reference = [np.asarray(r) for r in (reference if isinstance(reference, (list, tuple)) else [reference])]
        by_unit = {u.name: _Reference(r) for u, r in zip(units, reference)}
        for run in runs:
            if run.taps is not None:
                _accumulate(run, by_unit, batch)
        for run in runs:
            # An fp32 twin only says at which depth each layer is read: its match with Keras
            # (> 100 dB, or structurally absent) shows on one batch. Closed after it, it no
            # longer costs time or memory (it was half of the diagnosis's runtime work).
            if run.name in twin_names:
                run.taps = None
    by_name = {run.name: run for run in runs}
    depths = {run.name: _depths_matching(by_name[checks[run.name]]) for run in runs
              if checks and run.name in checks}
    return [_summary(run, units, len(x), depths.get(run.name)) for run in runs[:len(files)]]


def _accumulate(run: _FileRun, reference: dict[str, _Reference], batch: np.ndarray) -> None:
    for (name, depth), got in zip(run.keys, run.taps.run(batch)):
        ref = reference[name]
        value = to_keras_layout(got, ref.value.shape, run.paired[name].channels_first)
        if value is not None:
            run.stats.setdefault((name, depth), _Stats()).add(ref, value)


FLOAT_MATCH_DB = 40.0  # an fp32 file's tap within 1% RMS of Keras: the right tensor
# Rounding a value onto a grid that holds it errs by at most the value itself (0 dB), and even
# a layer fed garbage errs by about twice its signal's energy (-3 dB). Far below that, the two
# files differ in structure at this layer (ONNX Runtime's pre-pass folds MobileNetV3's
# hard-sigmoid "+3" into the conv bias of the int8 file only): not compared, never shown.
IMPLAUSIBLE_DB = -10.0


def _depths_matching(fp32: _FileRun) -> dict[str, int]:
    """Per unit, the tap nearest the chain's end at which the fp32 file reproduces the Keras layer."""
    found = {}
    for (name, back), stats in sorted(fp32.stats.items(), key=lambda item: -item[0][1]):
        if stats.sqnr_db >= FLOAT_MATCH_DB:
            found[name] = back
    return found


def _summary(run: _FileRun, units: list[Unit], samples: int, depths: dict[str, int] | None = None) -> dict:
    chosen = {}
    for unit in units:
        back = depths.get(unit.name) if depths is not None else 0
        stats = run.stats.get((unit.name, back)) if back is not None else None
        if stats is not None and stats.sqnr_db >= IMPLAUSIBLE_DB:
            chosen[unit.name] = stats
    sqnr = {name: s.sqnr_db for name, s in chosen.items()}
    layers = []
    for unit in units:
        stats = chosen.get(unit.name)
        if stats is None:
            continue
        upstream = [sqnr[u] for u in unit.upstream if u in sqnr]
        before = min(upstream) if upstream else INPUT_SQNR_DB
        layers.append({
            "layer": unit.name, "kind": unit.kind, "compared_at": unit.end + (" (before its activation)"
                                                                              if unit.linear_twin else ""),
            "sqnr_db": round(stats.sqnr_db, 2), "added_db": round(max(0.0, before - stats.sqnr_db), 2),
            "relative_rmse": round(math.sqrt(stats.noise_ratio), 6),
            "float_range": [round(stats.low, 6), round(stats.high, 6)], "outlier_ratio": stats.outlier_ratio,
            "macs": unit.macs,
        })
    layers.sort(key=lambda l: -l["added_db"])
    return {"artifact": run.name, "path": str(run.path), "format": run.fmt, "samples": samples,
            "layers": layers, "not_compared": [u.name for u in units if u.name not in chosen]}


def _empty(name: str, fmt: str, why: str) -> dict:
    return {"artifact": name, "format": fmt, "samples": 0, "layers": [], "not_compared": [], "note": why}


# --- `edgekit diagnose` --------------------------------------------------------------------

MAX_SAMPLES = 100_000


def diagnose_artifacts(model, paths, data_path, samples: int = DIAGNOSE_SAMPLES, preprocess: str | None = None,
                       trust_model: bool = False, custom_objects: str | None = None, timeout_s: float = 600.0) -> dict:
    """Options and paths checked here; the model and the files run in a child interpreter with
    a timeout, as `edgekit eval` does (a file that hangs its runtime is exit 2, not a hang)."""
    import json
    import sys

    from edgekit.support.children import check_seconds, run_child
    from edgekit.intake.data import check_data_path
    from edgekit.errors import InputError, check_path_name
    from edgekit.formats.runner import artifact_format

    if not 1 <= samples <= MAX_SAMPLES:
        raise InputError(f"--samples {samples}: choose 1 to {MAX_SAMPLES}")
    check_seconds("--timeout", timeout_s)
    check_path_name(Path(model), "model")
    if not Path(model).exists():
        raise InputError(f"{model}: no such model file or folder")
    for path in paths:
        artifact_format(Path(path))
    check_data_path(Path(data_path), "--data")
    job = {"model": str(model), "paths": [str(p) for p in paths], "data_path": str(data_path), "samples": samples,
           "preprocess": preprocess, "trust_model": trust_model, "custom_objects": custom_objects}
    command = [sys.executable, "-I", "-m", "edgekit.quality.diagnose", json.dumps(job)]
    return run_child(command, timeout_s, ", ".join(str(p) for p in paths), work="diagnosis")


def diagnose_here(model, paths, data_path, samples: int, preprocess: str | None, trust_model: bool,
                  custom_objects: str | None) -> dict:
    from edgekit.intake.data import load_dataset
    from edgekit.errors import InputError, ModelError
    from edgekit.quality.evaluation import unique_names
    from edgekit.intake.model import load_model
    from edgekit.formats.runner import artifact_format, open_runner

    loaded = load_model(Path(model), trust=trust_model, custom_objects=custom_objects)
    if loaded.keras_model is None:
        raise ModelError(f"{model}: diagnose compares layer outputs of a tf_keras model (or a Keras 3 model edgekit "
                         f"can rebuild); this one has none ({loaded.notes[0] if loaded.notes else loaded.file.format})")
    files = []
    for path, name in zip(paths, unique_names([Path(p) for p in paths])):
        runner = open_runner(Path(path))
        if runner.input_shape != loaded.image_shape:
            raise InputError(f"{path} takes {runner.input_shape} inputs and {model} takes {loaded.image_shape}: "
                             "it is not an export of this model")
        files.append((name, Path(path), artifact_format(Path(path))))
    checks, extra = _fp32_beside(files)
    data = load_dataset(Path(data_path), loaded.image_shape, preprocess, "--data")
    results = diagnose_files(loaded.keras_model, files, data.x, samples, checks, twins=extra)
    for result in results:
        if result["artifact"] in checks:
            result["checked_with"] = Path(dict((n, p) for n, p, _ in files + extra)[checks[result["artifact"]]]).name
    for result, (_, path, _) in zip(results, files):
        if result["layers"] == [] and result["not_compared"]:
            raise InputError(f"{path}: none of the model's {len(result['not_compared'])} conv/dense layers is in "
                             f"this file; is it an export of {model}?")
    return {"model": str(model), "data": {"path": str(data.source), "samples": min(samples, len(data)),
                                          "preprocess": data.preprocess}, "artifacts": results}


def _fp32_beside(files: list[tuple[str, Path, str]]):
    """An int8 file `NAME.int8.EXT` written by compress has its fp32 twin `NAME.fp32.EXT` beside
    it: used, when present, to check every layer's tap (see diagnose_files)."""
    from edgekit.formats import get_format
    from edgekit.formats.runner import artifact_format

    checks, extra = {}, []
    given = {path.resolve(): name for name, path, _ in files}
    for name, path, fmt in files:
        if ".int8." not in path.name:
            continue
        twin = path.with_name(path.name.replace(".int8.", ".fp32."))
        if not all(twin.with_suffix(suffix).is_file() for suffix in get_format(fmt).suffixes):  # .xml needs its .bin
            continue
        artifact_format(twin)
        if twin.resolve() not in given:
            given[twin.resolve()] = f"{name} (fp32 check)"
            extra.append((given[twin.resolve()], twin, fmt))
        checks[name] = given[twin.resolve()]
    return checks, extra


def main(argv: list[str]) -> int:
    """The child of diagnose_artifacts (see edgekit.support.children.child_main)."""
    from edgekit.support.children import child_main

    return child_main(lambda job: diagnose_here(**job), argv)


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
