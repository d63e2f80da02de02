"""A per-layer latency model fitted on measured latencies (issue 25), and its leave-one-model-out
error: how wrong it is on an architecture it has never seen.

For a group g of measurements (one device, runtime, precision, thread count and setting: one
source's versions and clocks, one host), a network x costs

    time(g, x) = s_g × W_f(x)
    W_f(x)     = Σ_layers max( MACs_l × r_{f,kind(l)},  bytes_l × b_f )  +  layers(x) × c_f  +  d_f

each layer bound by its arithmetic or by the bytes it moves, whichever is slower, plus a fixed cost
per layer and one per inference (the runtime's own call, the input's copy to an accelerator). A MAC
of a matrix-multiply layer (conv, pointwise, fully connected) costs 1; a depthwise MAC r_{f,dw};
bytes_l are the layer's activations read and written plus its weights (on a device with a parameter
cache, the weights past it: they stream on every run). The shape of W (r_dw, b, c, d) belongs to a
runtime family f (CPU runtimes, GPU runtimes, each accelerator; apart per precision), whose cost
structures differ; s_g scales it to one device setting. Everything in W scales with s_g, so for
given shape parameters s_g is the geometric mean of measured / W over the group's rows, and the
shape is fitted by least squares on log error with s_g profiled out. Each family's shape is drawn
towards the shape of all rows pooled, so a family whose rows never exercise a term takes the pooled
value.

On the published latencies the per-inference cost carries what the per-layer cost alone had been
fitted to (leave-one-model-out within ±30%: 61% → 65%, median |log2| 0.33 → 0.30), and the fitted
per-layer cost falls to nothing. The per-inference cost is large (on the CPUs what about 100 M MACs
cost): published time grows more slowly than the work from 14 MMAC to 20 GMAC. Being the fit's and
not a measured overhead, it is given to a network smaller than any its family was fitted on in
proportion to its MACs (`work`'s smallest_macs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

SHAPE = ("depthwise_mac", "byte", "layer", "inference")  # r_dw, b, c, d: what each costs relative to a GEMM MAC
BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "int8": 1}
FAMILIES = {"litert": "cpu", "ncnn": "cpu", "armnn": "cpu", "openvino-cpu": "cpu", "onnxruntime": "cpu",
            "opencv-dnn": "cpu", "ncnn-vulkan": "gpu", "tensorrt": "gpu", "edgetpu": "edgetpu",
            "hailort": "hailo", "openvino-npu": "intel-npu"}
PRIOR_WEIGHT = 1.0  # rows' worth of pull towards the pooled shape, per shape parameter (log scale)
START = np.log([3.0, 100, 1e5, 1e6])  # where the search starts: depthwise 3× a GEMM MAC, ...
FLOOR = -25.0  # log of the smallest shape value: "costs nothing"


def family_of(runtime: str, precision: str) -> str:
    """The runtime family and precision: int8 kernels price depthwise layers and bytes
    differently from float ones (leave-one-model-out within ±30%: 58% → 61%)."""
    return f"{FAMILIES.get(runtime, 'cpu')}/{precision}"


@dataclass(frozen=True)
class Sample:
    """One measured latency and the layers of the network it ran."""

    device: str
    runtime: str
    precision: str
    threads: int | None
    setting: str  # what else sets the speed: the source (versions, clocks), the host machine
    network: str  # architecture@size
    architecture: str  # the unit left out together
    layers: tuple  # (kind, macs, weights, activations) per layer, as layer_work.LayerWork
    latency_ms: float
    on_chip_bytes: float = 0.0  # the device's parameter cache (Coral: 8 MiB)

    @property
    def group(self) -> tuple:
        return self.device, self.runtime, self.precision, self.threads, self.setting

    @property
    def family(self) -> str:
        return family_of(self.runtime, self.precision)

    @cached_property  # computed once per sample: the fit evaluates every sample hundreds of times
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per layer: GEMM MACs, depthwise MACs, bytes moved."""
        size = BYTES_PER_ELEMENT[self.precision]
        kinds = [layer[0] for layer in self.layers]
        macs = np.array([layer[1] for layer in self.layers], dtype=np.float64)
        weight_bytes = np.array([layer[2] for layer in self.layers], dtype=np.float64) * size
        cached = np.cumsum(weight_bytes) <= self.on_chip_bytes  # the compiler fills the cache in order
        streamed = np.where(cached, 0.0, weight_bytes) if self.on_chip_bytes else weight_bytes
        moved = np.array([layer[3] for layer in self.layers], dtype=np.float64) * size + streamed
        depthwise = np.array([kind == "depthwise" for kind in kinds])
        return np.where(depthwise, 0.0, macs), np.where(depthwise, macs, 0.0), moved

    @cached_property
    def macs(self) -> float:
        return float(sum(layer[1] for layer in self.layers))


def work(sample: Sample, shape: np.ndarray, smallest_macs: float = 0.0) -> float:
    """W_f(x) for shape = (r_dw, b, c, d). smallest_macs: the fewest MACs of a network the family
    was fitted on; below it the per-inference cost shrinks with the network, not extrapolated
    whole (fitted at 14 MMAC and up, it would price an 8×8-pixel classifier like a MobileNet)."""
    gemm, depthwise, moved = sample.arrays
    r_dw, b, c, d = shape
    per_inference = d * min(1.0, sample.macs / smallest_macs) if smallest_macs > 0 else d
    return float(np.sum(np.maximum(gemm + r_dw * depthwise, b * moved)) + c * len(gemm) + per_inference)


@dataclass
class LatencyModel:
    shapes: dict[str, np.ndarray]  # family → (r_dw, b, c, d)
    scales: dict[tuple, float]  # group → s_g (ms per unit of W)
    points: dict[tuple, int] = field(default_factory=dict)  # group → rows it rests on
    pooled: np.ndarray | None = None  # the shape of all rows together, for a family without rows
    smallest: dict[str, float] = field(default_factory=dict)  # family → fewest MACs of a fitted network

    def predict(self, sample: Sample) -> float | None:
        shape = self.shape_for(sample.family)
        scale = self.scales.get(sample.group) or self._borrowed_scale(sample)
        if scale is None or shape is None:
            return None
        return scale * work(sample, shape, self.smallest_for(sample.family))

    def smallest_for(self, family: str) -> float:
        return self.smallest.get(family, min(self.smallest.values(), default=0.0))

    def shape_for(self, family: str) -> np.ndarray | None:
        """The family's shape at this precision, else at another precision, else all rows pooled."""
        if family in self.shapes:
            return self.shapes[family]
        runtimes = family.split("/")[0]
        same = [shape for name, shape in self.shapes.items() if name.split("/")[0] == runtimes]
        return np.exp(np.mean(np.log(same), axis=0)) if same else self.pooled

    def _borrowed_scale(self, sample: Sample) -> float | None:
        """A group with no row of its own borrows the scales of its nearest kin on the device."""
        kin = nearest_settings(self.scales, sample.device, sample.runtime, sample.precision, sample.threads)
        return float(np.exp(np.mean(np.log([self.scales[g] for g in kin])))) if kin else None


def nearest_settings(groups, device: str, runtime: str, precision: str, threads: int | None) -> list[tuple]:
    """The device's fitted settings closest to one it has no rows for: the same runtime and precision
    in another setting, then the same family (scales in the same units of W), then the same kind of
    runtime (CPU, GPU), then the same runtime, then the thread count. Leave-one-model-out, Orin's
    TensorRT fp32 row: 8.6× → 1.8× once it borrows from TensorRT fp16, not the ncnn CPU groups."""
    def rank(group) -> tuple:
        _, their_runtime, their_precision, their_threads, _ = group
        return (their_runtime == runtime and their_precision == precision,
                family_of(their_runtime, their_precision) == family_of(runtime, precision),
                FAMILIES.get(their_runtime, "cpu") == FAMILIES.get(runtime, "cpu"),
                their_runtime == runtime, their_threads == threads or their_threads is None)

    mine = [g for g in groups if g[0] == device]
    best = max(map(rank, mine), default=None)
    return [g for g in mine if rank(g) == best]


def fit(samples: list[Sample], prior_weight: float = PRIOR_WEIGHT) -> LatencyModel:
    _check(samples)
    pooled = _fit_shape(samples, None, 0.0)
    shapes = {}
    for family in sorted({s.family for s in samples}):
        shapes[family] = _fit_shape([s for s in samples if s.family == family], pooled, prior_weight)
    scales = {}
    for family, shape in shapes.items():
        scales.update(_scales([s for s in samples if s.family == family], shape))
    points: dict[tuple, int] = {}
    for s in samples:
        points[s.group] = points.get(s.group, 0) + 1
    smallest: dict[str, float] = {}
    for s in samples:
        smallest[s.family] = min(smallest.get(s.family, math.inf), s.macs)
    return LatencyModel(shapes, scales, points, pooled, smallest)


def _check(samples: list[Sample]) -> None:
    """A fitting table with a latency that is not a positive number, or a network without layers,
    is refused whole: one NaN would make every fitted number NaN."""
    if not samples:
        raise ValueError("no measured latencies to fit on")
    for s in samples:
        if not (math.isfinite(s.latency_ms) and s.latency_ms > 0):
            raise ValueError(f"latency {s.latency_ms!r} ms for {s.network} on {s.device} is not a positive number")
        if not s.layers:
            raise ValueError(f"{s.network} has no layers to cost")


def _scales(samples: list[Sample], shape: np.ndarray) -> dict[tuple, float]:
    logs: dict[tuple, list[float]] = {}
    for s in samples:
        logs.setdefault(s.group, []).append(math.log(s.latency_ms) - math.log(work(s, shape)))
    return {g: math.exp(sum(v) / len(v)) for g, v in logs.items()}


def _log_residuals(samples: list[Sample], shape: np.ndarray) -> np.ndarray:
    """log measured − log predicted, with each group's scale at its best."""
    logs = np.array([math.log(s.latency_ms) - math.log(work(s, shape)) for s in samples])
    groups = [s.group for s in samples]
    means = {g: float(np.mean([v for v, h in zip(logs, groups) if h == g])) for g in set(groups)}
    return logs - np.array([means[g] for g in groups])


def _fit_shape(samples: list[Sample], prior: np.ndarray | None, prior_weight: float) -> np.ndarray:
    from scipy.optimize import least_squares

    pull = math.sqrt(prior_weight) if prior is not None and prior_weight > 0 else 0.0

    def residuals(theta):
        parts = [_log_residuals(samples, np.exp(theta))]
        if pull:
            parts.append(pull * (theta - np.log(prior)) / 4.0)  # a factor e^4 off the prior costs one row's unit
        return np.concatenate(parts)

    start = np.log(prior) if prior is not None else START
    solved = least_squares(residuals, start, bounds=(FLOOR, 40.0), method="trf", diff_step=1e-3)
    return np.exp(solved.x)


def leave_one_model_out(samples: list[Sample]) -> list[tuple[Sample, float | None]]:
    """Each sample predicted by a model fitted without any row of its architecture."""
    predictions = []
    for architecture in sorted({s.architecture for s in samples}):
        held_out = [s for s in samples if s.architecture == architecture]
        model = fit([s for s in samples if s.architecture != architecture])
        predictions.extend((s, model.predict(s)) for s in held_out)
    return predictions


def error_summary(pairs: list[tuple[Sample, float | None]]) -> dict:
    """Median |estimate / measured − 1|, share within ±30%, median |log2 ratio|, worst ratio,
    over the pairs that have an estimate; `unpredicted` counts the rest."""
    ratios = np.array([p / s.latency_ms for s, p in pairs if p is not None])
    if not len(ratios):
        return {"rows": 0, "unpredicted": len(pairs)}
    worst = ratios[np.argmax(np.abs(np.log(ratios)))]
    return {"rows": int(len(ratios)), "unpredicted": len(pairs) - int(len(ratios)),
            "median_abs_error": float(np.median(np.abs(ratios - 1))),
            "within_30pct": float(np.mean(np.abs(ratios - 1) <= 0.3)),
            "median_abs_log2": float(np.median(np.abs(np.log2(ratios)))), "worst_ratio": float(worst)}


# An estimate's band: the 10th to 90th percentile of measured / estimated over the device's
# leave-one-model-out rows; a device with fewer rows than this takes the band of all devices.
BAND_PERCENTILES = (10, 90)
MIN_BAND_ROWS = 5


def to_document(model: LatencyModel, held_out: list[tuple[Sample, float | None]], about: dict) -> dict:
    """The fitted model and its measured error as JSON-ready data (devices/latency_model.json)."""
    errors = {}
    for device in sorted({s.device for s, _ in held_out}):
        pairs = [(s, p) for s, p in held_out if s.device == device]
        errors[device] = {**error_summary(pairs), "band": _band(pairs)}
    settings = [{"device": g[0], "runtime": g[1], "precision": g[2], "threads": g[3], "setting": g[4],
                 "scale": scale, "points": model.points.get(g, 0)} for g, scale in sorted(model.scales.items(), key=str)]
    return {**about, "shape_terms": list(SHAPE), "shapes": {f: list(map(float, v)) for f, v in model.shapes.items()},
            "pooled": list(map(float, model.pooled)), "smallest_macs": model.smallest, "settings": settings,
            "errors": errors,
            "overall": {**error_summary(held_out), "band": _band(held_out)}}


def from_document(document: dict) -> LatencyModel:
    scales = {(s["device"], s["runtime"], s["precision"], s["threads"], s["setting"]): float(s["scale"])
              for s in document["settings"]}
    points = {(s["device"], s["runtime"], s["precision"], s["threads"], s["setting"]): int(s["points"])
              for s in document["settings"]}
    return LatencyModel({f: np.array(v) for f, v in document["shapes"].items()}, scales, points,
                        np.array(document["pooled"]), {f: float(v) for f, v in document["smallest_macs"].items()})


def _band(pairs: list[tuple[Sample, float | None]]) -> list[float] | None:
    ratios = [s.latency_ms / p for s, p in pairs if p]
    if len(ratios) < MIN_BAND_ROWS:
        return None
    return [round(float(v), 3) for v in np.percentile(ratios, BAND_PERCENTILES)]
