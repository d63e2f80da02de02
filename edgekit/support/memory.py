"""How much memory a step will need, how much there is, and refusing what cannot fit.

Each heavy step's peak grows with the model's weight bytes. The costs below are the peak
resident memory of each step in its own process, measured by benchmarks/memory.py on
ResNet50 (90 MiB of weights) and VGG16 (512 MiB): a fixed part (the runtime itself) plus
the slope between the two, both set about 10% under the measurements, so the check refuses
only what cannot fit; a step that outgrows memory anyway is caught when the system kills it.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import WontFit

# step kind → (fixed MiB, MiB per MiB of weights); measured (ResNet50, VGG16) peaks in MiB:
STEP_COST = {
    "freeze": (600, 10.5),             # 1,655, 6,595
    "tflite-convert": (900, 11.0),           # int8: 2,140, 7,363 (fp32 needs less)
    "onnx-convert": (900, 6.0),        # 1,631, 4,394 (large weights kept out of tf2onnx)
    "onnx-quantize": (300, 4.5),       # 714, 2,720
    "openvino-convert": (500, 5.5),    # 1,091, 3,567
    "openvino-quantize": (250, 1.8),   # 432, 1,266
}


STEP_TITLES = {"freeze": "trace and freeze the model", "tflite-convert": "TFLite conversion",
               "onnx-convert": "ONNX conversion (tf2onnx)", "onnx-quantize": "ONNX quantization",
               "openvino-convert": "OpenVINO conversion", "openvino-quantize": "OpenVINO quantization (NNCF)"}


def estimate_mb(kind: str, weight_bytes: int) -> float:
    """The peak a step is expected to reach (a little under what was measured)."""
    fixed, ratio = STEP_COST[kind]
    return fixed + ratio * weight_bytes / (1 << 20)


def available_mb() -> float:
    """Memory this process can still take: MemAvailable, capped by a cgroup limit if any."""
    available = _meminfo_mb("MemAvailable")
    limit = _cgroup_room_mb()
    return min(available, limit) if limit is not None else available


def _meminfo_mb(key: str) -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")  # not Linux: nothing to check against


def _cgroup_room_mb() -> float | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        usage = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else (int(limit) - usage) / (1 << 20)


def check_fits(kind: str, label: str, weight_bytes: int, way_out: str) -> None:
    """Refuse a step whose estimated peak is above the memory available now; `way_out` is the
    rerun that skips it (edgekit.formats.exporter knows which formats need which step)."""
    need, have = estimate_mb(kind, weight_bytes), available_mb()
    if need <= have:
        return
    raise WontFit(f"step '{label}' needs about {need:,.0f} MiB ({weight_bytes / (1 << 20):,.0f} MiB of weights) "
                  f"but only {have:,.0f} MiB are available; free memory or leave it out: {way_out}")
