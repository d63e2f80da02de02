"""Estimates from the per-layer latency model fitted on published latencies
(devices/latency_model.json, written by benchmarks/device_fit.py --write), each with the band
its leave-one-model-out error gives: "12.1 ms, likely 9-16 ms".

The file's own layers are costed (edgekit.measure.layer_work.file_network_work) at the scale of
the device setting closest to how the file runs there: the profile's runtime for the format
(`estimate_runtimes`), the precision it computes in, the profile's thread count. Where the
published data has no such setting (ONNX Runtime on a Pi: none published), the closest one of the
same device stands in and the basis says which.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache

from edgekit.formats.facts import ArtifactFacts
from edgekit.measure.devices import DeviceProfile
from edgekit.support.shipped import shipped_dirs

MODEL_FILE = "latency_model.json"


@lru_cache(maxsize=1)
def fitted_model():
    """(LatencyModel, its document) from the shipped devices folder, or None."""
    from edgekit.measure.latency_fit import from_document

    for folder in shipped_dirs("devices"):
        path = folder / MODEL_FILE
        if path.is_file():
            document = json.loads(path.read_text())
            return from_document(document), document
    return None


def per_layer_estimate(profile: DeviceProfile, facts: ArtifactFacts, runtime: str | None = None,
                       precision: str | None = None) -> dict | None:
    """The estimate record, or None where the model knows nothing of this device or format.
    runtime, precision: what the file would run on and compute in there (bench --runtime,
    --precision); by default the profile's runtime for the format and the file's precision."""
    from edgekit.measure.estimate import gpu_runtime_here
    from edgekit.measure.layer_work import file_network_work

    fitted = fitted_model()
    runtime = runtime or profile.estimate_runtimes.get(facts.format)
    if fitted is None or runtime is None:
        return None
    model, document = fitted
    precision = _model_precision(precision or profile.compute_precision(facts.precision))
    chosen = _closest_settings(model, profile, runtime, precision)
    if not chosen:
        return None
    estimate = _estimate(model, profile, runtime, precision, chosen, file_network_work(facts))
    error = document["errors"].get(profile.name) or {}
    band = error.get("band") or document["overall"]["band"]
    return {
        "path": str(facts.path), "format": facts.format, "precision": facts.precision, "device": profile.name,
        "measured": False, "estimated": True, "latency_ms": {"estimate": round(estimate, 4)},
        "likely_ms": [round(estimate * band[0], 4), round(estimate * band[1], 4)],
        "runtime": runtime, "computes_in": precision, "macs": facts.macs, "weight_bytes": facts.weight_bytes,
        "method": "per-layer model: each layer max(MACs × cost of its kind, bytes × cost of a byte) + a cost per "
                  "layer + one per inference, fitted on published latencies (benchmarks/device_fit.py)",
        "basis": _basis(profile, runtime, precision, chosen, model, error, document),
        "error": {k: error.get(k) for k in ("rows", "within_30pct", "median_abs_log2")} if error else None,
        "toolchain": profile.constraints.toolchain.strip() if profile.constraints.toolchain else None,
        "gpu_runtime_here": gpu_runtime_here() if profile.kind == "gpu" else None,
    }


def _estimate(model, profile: DeviceProfile, runtime: str, precision: str, chosen: list[tuple], network) -> float:
    from edgekit.measure.latency_fit import Sample, work

    layers = tuple((l.kind, l.macs, l.weights, l.activations) for l in network.layers)
    sample = Sample(profile.name, runtime, precision, profile.threads, "", "file", "file", layers, 1.0,
                    (profile.on_chip_mb or 0.0) * 2**20)
    scale = math.exp(sum(math.log(model.scales[g]) for g in chosen) / len(chosen))
    return scale * work(sample, model.shape_for(sample.family), model.smallest_for(sample.family))


def keras_estimate(profile: DeviceProfile, keras_model, fmt: str, precision: str) -> dict | None:
    """The per-layer model's estimate for a Keras model before it is exported: `fmt` run by the
    profile's runtime for it, in `precision`. {"ms", "likely_ms", "runtime"}, or None where the
    model knows nothing of this device or format."""
    from edgekit.measure.layer_work import keras_network_work

    fitted = fitted_model()
    runtime = profile.estimate_runtimes.get(fmt)
    if fitted is None or runtime is None:
        return None
    model, document = fitted
    precision = _model_precision(profile.compute_precision(precision))
    chosen = _closest_settings(model, profile, runtime, precision)
    if not chosen:
        return None
    estimate = _estimate(model, profile, runtime, precision, chosen, keras_network_work(keras_model))
    band = (document["errors"].get(profile.name) or {}).get("band") or document["overall"]["band"]
    return {"ms": estimate, "likely_ms": [estimate * band[0], estimate * band[1]], "runtime": runtime,
            "precision": precision}


def _model_precision(precision: str) -> str:
    """The fitted model's precisions: fp32, fp16, int8 (int8w runs as fp32: runs_as says so)."""
    return precision if precision in ("fp32", "fp16", "int8") else "fp32"


def _closest_settings(model, profile: DeviceProfile, runtime: str, precision: str) -> list[tuple]:
    """The device's fitted settings for this runtime and precision, else their nearest kin, as the
    leave-one-model-out check borrows them (so the error it prints is this estimate's)."""
    from edgekit.measure.latency_fit import nearest_settings

    return nearest_settings(model.scales, profile.name, runtime, precision, profile.threads)


def _basis(profile, runtime: str, precision: str, chosen: list[tuple], model, error: dict, document: dict) -> str:
    points = sum(model.points.get(g, 0) for g in chosen)
    used = sorted({f"{g[1]} {g[2]}" + (f", {g[3]} threads" if g[3] else "") for g in chosen})
    exact = all(g[1] == runtime and g[2] == precision for g in chosen)
    text = (f"scaled on {points} published {profile.name} latencies ({'; '.join(used)})" if exact else
            f"no published {runtime} {precision} latency on {profile.name}: scaled like {'; '.join(used)} "
            f"({points} published latencies)")
    if error and error.get("rows"):
        text += (f"; on {profile.name}, architectures the fit never saw came out within ±30% for "
                 f"{error['within_30pct']:.0%} of {error['rows']} published rows")
    rows = error.get("rows", 0) if error else 0
    if rows < 5:
        text += f"; {profile.name} rests on {rows} row(s) of its own: the band is that of all devices"
    return text + f" ({document['fitted_on']})"


def fitted_runtimes(device: str) -> list[str]:
    """The runtimes the published data has latencies of on this device."""
    fitted = fitted_model()
    return sorted({g[1] for g in fitted[0].scales if g[0] == device}) if fitted else []


def fitted_summary(device: str) -> dict | None:
    """What `edgekit devices NAME` says of the per-layer model for a device: how many published
    latencies it rests on, in which settings, and how wrong it was on architectures it never saw."""
    fitted = fitted_model()
    if fitted is None:
        return None
    model, document = fitted
    settings = [g for g in model.scales if g[0] == device]
    if not settings:
        return None
    error = document["errors"].get(device) or {}
    rows = error.get("rows", 0)
    summary = {"published_latencies": sum(model.points.get(g, 0) for g in settings),
               "settings": sorted({f"{g[1]} {g[2]}" + (f" ({g[3]} threads)" if g[3] else "") for g in settings}),
               "leave_one_model_out": {k: round(error[k], 3) for k in ("within_30pct", "median_abs_log2")
                                       if k in error} | {"rows": rows},
               "band": error.get("band") or document["overall"]["band"]}
    if rows < 5:
        summary["note"] = (f"rests on {rows} row(s) its fit could be checked on: its band is that of all devices, "
                           "and its estimates are a guess")
    return summary
