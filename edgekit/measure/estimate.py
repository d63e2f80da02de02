"""Latency estimates for a device that is not attached, and whether it can run the file at all.

Three sources, the first that knows the device wins:
- a profile written by `edgekit devices calibrate` prices each layer of the file with the costs
  measured there (edgekit/measure/calibration/estimate.py);
- a shipped device with published latencies uses the per-layer model fitted on them
  (edgekit/measure/layer_estimate.py);
- any other profile gets a roofline calibrated on its one reference measurement:

    ideal(model) = max(MACs / peak MAC rate at the precision the device computes in,
                       weight bytes that must stream / memory bandwidth)
    efficiency   = ideal(reference model) / published reference latency
    estimate     = ideal(artifact) / efficiency

  A profile without a verified reference borrows the mean efficiency of the calibrated
  profiles of its kind (cpu, gpu, npu), and its estimates say so.

Estimates are never put in the same record or table as measured latency.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.formats.facts import ArtifactFacts, read_facts
from edgekit.measure.devices import SUPPORTED_OPS_FORMAT, DeviceProfile, all_profiles
from edgekit.errors import Incompatible, InputError

BYTES_PER_WEIGHT = {"fp32": 4, "fp16": 2, "int8": 1, "int8w": 1, "int16x8": 1}


def compatibility_problems(profile: DeviceProfile, facts: ArtifactFacts) -> list[str]:
    problems = []
    if facts.format not in profile.runtimes:
        problems.append(f"{facts.format} files do not run there (runtimes: {', '.join(profile.runtimes)})")
    if facts.precision not in profile.precisions:
        problems.append(f"it is a {facts.precision} model; {profile.name} runs {', '.join(profile.precisions)}")
    rules = profile.constraints
    if rules.io_dtypes:
        bad_io = [f"{side} is {dtype}" for side, dtype in (("input", facts.input_dtype), ("output", facts.output_dtype))
                  if dtype not in rules.io_dtypes]
        if bad_io:
            problems.append(f"{' and '.join(bad_io)}; it needs {'/'.join(rules.io_dtypes)} I/O (--io-dtype uint8)")
    if rules.supported_ops and facts.format == SUPPORTED_OPS_FORMAT:
        unsupported = [op for op in facts.ops if op not in rules.supported_ops]
        if unsupported:
            problems.append(f"ops it cannot run: {', '.join(unsupported)}")
    if rules.static_shapes and facts.dynamic_dims:
        problems.append("the input has a dynamic (batch) dimension and this device compiles static shapes only")
    return problems


def ideal_ms(profile: DeviceProfile, macs: int, weight_bytes: float, precision: str) -> tuple[float, str]:
    """The roofline's lower bound on time, and which roof binds."""
    computes_in = profile.compute_precision(precision)
    peak = profile.peak_gmacs.get(computes_in)
    if peak is None:
        raise InputError(f"device profile {profile.name} gives no peak rate for {computes_in}")
    compute_ms = macs / (peak * 1e9) * 1e3
    streamed = max(weight_bytes - (profile.on_chip_mb or 0) * 2**20, 0)
    memory_ms = streamed / (profile.memory_gbps * 1e9) * 1e3 if profile.memory_gbps else 0.0
    return (compute_ms, "compute") if compute_ms >= memory_ms else (memory_ms, "memory")


def reference_weight_bytes(profile: DeviceProfile) -> float:
    ref = profile.reference
    return ref.params * BYTES_PER_WEIGHT[ref.precision]


def efficiency(profile: DeviceProfile) -> tuple[float, str]:
    """The fraction of the roofline the device reached on its reference, and where it came from."""
    ref = profile.reference
    if ref is not None:
        ideal, _ = ideal_ms(profile, ref.macs, reference_weight_bytes(profile), ref.precision)
        return ideal / ref.latency_ms, (f"calibrated on {ref.model} {ref.precision} = {ref.latency_ms:g} ms "
                                        f"({ref.runtime}; {ref.source})")
    peers = [p for p in all_profiles() if p.kind == profile.kind and p.reference is not None]
    if not peers:
        raise InputError(f"device profile {profile.name} has no reference latency and no calibrated {profile.kind} "
                         "profile to borrow an efficiency from")
    values = [efficiency(p)[0] for p in peers]
    return sum(values) / len(values), (f"uncalibrated: no verified published latency for {profile.name}; "
                                       f"efficiency borrowed from {', '.join(p.name for p in peers)}")


def estimate_all(paths: list[Path], profile: DeviceProfile, runtime: str | None = None,
                 precision: str | None = None) -> list[dict]:
    """Check every artifact first, so one incompatible file fails before any output."""
    from edgekit.formats.runner import artifact_format, load_checked

    check_runtime_choice(profile, runtime, precision)
    facts = []
    for path in map(Path, paths):
        fmt = artifact_format(path)
        facts.append(load_checked(path, fmt, lambda: read_facts(path, fmt)))
    return [estimate_artifact(profile, f, runtime, precision) for f in facts]


def offered_runtimes(profile: DeviceProfile) -> list[str]:
    """What `bench --runtime` may name for this device: the calibrated runtimes of a calibrated
    profile, else the runtimes its files run on and those the published data has latencies of."""
    if profile.calibration is not None:
        return sorted({s.runtime for s in profile.calibration.settings})
    from edgekit.measure.layer_estimate import fitted_runtimes

    return sorted(set(profile.estimate_runtimes.values()) | set(fitted_runtimes(profile.name)))


def offered_precisions(profile: DeviceProfile) -> list[str]:
    """What `bench --precision` may name: the precisions the device computes in."""
    if profile.calibration is not None:
        return sorted({s.precision for s in profile.calibration.settings})
    return sorted({profile.compute_precision(p) for p in profile.precisions} & {"fp32", "fp16", "int8"})


def check_runtime_choice(profile: DeviceProfile, runtime: str | None, precision: str | None) -> None:
    """bench --runtime/--precision: exit 2 naming what the profile offers."""
    if runtime is not None and runtime not in offered_runtimes(profile):
        offered = offered_runtimes(profile)
        raise InputError(f"--runtime {runtime}: {profile.name} offers "
                         f"{', '.join(offered) if offered else 'no runtime to choose from (its estimate is a roofline)'}")
    if precision is not None and precision not in offered_precisions(profile):
        raise InputError(f"--precision {precision}: {profile.name} computes in {', '.join(offered_precisions(profile))}")


def estimate_artifact(profile: DeviceProfile, facts: ArtifactFacts, runtime: str | None = None,
                      precision: str | None = None) -> dict:
    path = facts.path
    problems = compatibility_problems(profile, facts)
    if problems:
        raise Incompatible(f"{path} cannot run on {profile.name}: {'; '.join(problems)}"
                           + (f". {profile.constraints.toolchain.strip()}" if profile.constraints.toolchain else ""))
    if profile.calibration is not None:
        from edgekit.measure.calibration.estimate import calibrated_estimate

        return calibrated_estimate(profile, facts, runtime, precision)
    from edgekit.measure.layer_estimate import per_layer_estimate

    fitted = per_layer_estimate(profile, facts, runtime, precision)
    if fitted is not None:
        return fitted
    if runtime or precision:  # the roofline knows one efficiency, not runtimes: never ignore the choice silently
        raise InputError(f"--runtime/--precision: {profile.name} has no per-layer model for {facts.format} files to "
                         "estimate another runtime or precision with (its estimate is a roofline); leave them out, or "
                         "calibrate the device (edgekit devices calibrate)")
    return _roofline_estimate(profile, facts)


def _roofline_estimate(profile: DeviceProfile, facts: ArtifactFacts) -> dict:
    """For a profile the per-layer model has no published latency of (a profile file of your own)."""
    path, fmt = facts.path, facts.format
    ideal, bound = ideal_ms(profile, facts.macs, facts.weight_bytes, facts.precision)
    eff, basis = efficiency(profile)
    return {
        "path": str(path), "format": fmt, "precision": facts.precision, "device": profile.name,
        "measured": False, "estimated": True, "latency_ms": {"estimate": round(ideal / eff, 4)},
        "macs": facts.macs, "weight_bytes": facts.weight_bytes, "bound": bound,
        "computes_in": profile.compute_precision(facts.precision), "efficiency": round(eff, 4),
        "method": "roofline: max(MACs / peak MAC rate, streamed weight bytes / bandwidth) / efficiency",
        "basis": basis, "toolchain": profile.constraints.toolchain.strip() if profile.constraints.toolchain else None,
        "gpu_runtime_here": gpu_runtime_here() if profile.kind == "gpu" else None,
    }


def gpu_runtime_here() -> str:
    """Whether this machine could run GPU inference itself (it never changes the estimate)."""
    found = []
    try:
        import onnxruntime

        found += [p for p in onnxruntime.get_available_providers() if p in ("CUDAExecutionProvider",
                                                                            "TensorrtExecutionProvider")]
    except ImportError:
        pass
    try:
        import openvino

        found += [f"openvino {d}" for d in openvino.Core().available_devices if d.startswith("GPU")]
    except ImportError:
        pass
    return f"yes ({', '.join(found)})" if found else "no (onnxruntime has no CUDA/TensorRT provider, OpenVINO sees no GPU)"
