"""Estimates from a profile `edgekit devices calibrate` wrote: the file's layers priced with the
costs measured on that device, at the runtime, precision and thread count that were calibrated."""

from __future__ import annotations

from edgekit.errors import InputError
from edgekit.formats.facts import ArtifactFacts
from edgekit.measure.devices import CalibratedSetting, DeviceProfile


def calibrated_estimate(profile: DeviceProfile, facts: ArtifactFacts, runtime: str | None = None,
                        precision: str | None = None) -> dict:
    from edgekit.measure.calibration.costs import predict_ms, streamed_bytes
    from edgekit.measure.layer_work import file_network_work

    setting = choose_setting(profile, facts, runtime, precision)
    calibration = profile.calibration
    cache_bytes = int(calibration.cache_mb * 2**20) if calibration.cache_mb else None
    estimate = predict_ms(setting.costs.model_dump(), file_network_work(facts),
                          streamed_bytes(facts.weight_bytes, cache_bytes))
    low, high = setting.band
    return {
        "path": str(facts.path), "format": facts.format, "precision": facts.precision, "device": profile.name,
        "measured": False, "estimated": True, "latency_ms": {"estimate": round(estimate, 4)},
        "likely_ms": [round(estimate * low, 4), round(estimate * high, 4)],
        "runtime": setting.runtime, "computes_in": setting.precision, "threads": setting.threads,
        "macs": facts.macs, "weight_bytes": facts.weight_bytes,
        "method": "per-layer model: each layer's MACs, elements moved, weights and the layer itself, priced per kind "
                  "of layer, and the weights past the device's cache, with costs measured on the device "
                  "(edgekit devices calibrate)",
        "basis": (f"calibrated on {calibration.measured_on} ({calibration.date}): {setting.runtime} {setting.precision}, "
                  f"{setting.threads or 'default'} thread(s), {setting.points} suite files; "
                  f"its networks {setting.within_20pct:.0%} within ±20% when each was left out of the fit"),
        "error": {"rows": setting.points, "within_20pct": setting.within_20pct},
        "toolchain": None, "gpu_runtime_here": None,
    }


def choose_setting(profile: DeviceProfile, facts: ArtifactFacts, runtime: str | None,
                   precision: str | None) -> CalibratedSetting:
    """The calibrated setting for the file: its format's runtime (or --runtime), the precision it
    computes in (or --precision); exit 2 naming the calibrated ones where none matches."""
    runtime = runtime or profile.estimate_runtimes.get(facts.format)
    precision = precision or profile.compute_precision(facts.precision)
    for setting in profile.calibration.settings:
        if setting.runtime == runtime and setting.precision == precision:
            return setting
    offered = ", ".join(f"{s.runtime} {s.precision}" for s in profile.calibration.settings)
    raise InputError(f"{facts.path}: {profile.name} was calibrated for {offered}, not {runtime or facts.format} "
                     f"{precision}; calibrate that too (edgekit devices calibrate --runtime, --precision) "
                     "or choose one of those with --runtime/--precision")
