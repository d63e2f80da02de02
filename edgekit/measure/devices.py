"""Device profiles (devices/NAME.yaml): what a target runs, how fast it is on paper, and the
published latency its estimates are calibrated on, each with its source.

    name: rpi4
    kind: cpu                      # cpu | gpu | npu
    runtimes: [tflite, onnx]       # in order of preference
    precisions: [fp32, int8]       # artifact precisions it accepts
    runs_as: {int8w: fp32}         # the precision it really computes them in, where different
    peak_gmacs: {fp32: 48, int8: 96}
    memory_gbps: 12.8
    reference: {model, macs, precision, latency_ms, runtime, source}

Validated by pydantic like recipes: an unknown key is an error, not silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgekit.support.shipped import shipped_files
from edgekit.errors import InputError

Precision = Literal["fp32", "fp16", "int8w", "int8"]
Format = Literal["tflite", "onnx", "openvino"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Reference(_Strict):
    """One published latency on this device: the point the roofline is calibrated on."""
    model: str
    macs: int = Field(gt=0)
    params: int = Field(gt=0)
    precision: Precision
    latency_ms: float = Field(gt=0)
    runtime: str
    source: str


# A profile's supported_ops are TFLite builtin op names (the Edge TPU compiler's list): other
# formats' files are not checked against it.
SUPPORTED_OPS_FORMAT = "tflite"


class Constraints(_Strict):
    io_dtypes: Optional[list[Literal["float32", "int8", "uint8"]]] = None
    supported_ops: Optional[list[str]] = None  # op names in the vocabulary of SUPPORTED_OPS_FORMAT
    static_shapes: bool = False
    # every op must compute in integers (the Edge TPU compiler runs everything after the first
    # float op on the host CPU): `compress --target` then checks each int8 file for float ops
    integer_only: bool = False
    # its kernels take one scale per weight tensor, not one per output channel
    per_tensor_weights: bool = False
    toolchain: Optional[str] = None


class KindCosts(_Strict):
    """What one layer of a kind costs (edgekit/measure/calibration/costs.py): all required, none negative."""
    ns_per_mac: float = Field(ge=0)
    ns_per_element: float = Field(ge=0)
    ns_per_weight: float = Field(ge=0)
    us_per_layer: float = Field(ge=0)


class OpCosts(_Strict):
    """What one layer without MACs costs, per group (elementwise, activation, pool, move, fallback)."""
    ns_per_element: float = Field(ge=0)
    us_per_layer: float = Field(ge=0)


class CalibratedCosts(_Strict):
    overhead_us: float = Field(ge=0)
    # weight bytes past the cache (Calibration.cache_mb) stream on every run; absent before suite v3
    ns_per_streamed_byte: float = Field(0.0, ge=0)
    conv: KindCosts
    pointwise: KindCosts
    depthwise: KindCosts
    dense: KindCosts
    elementwise: OpCosts
    activation: OpCosts
    pool: OpCosts
    move: OpCosts
    # ops the runtime's fast path leaves to slower kernels; absent from profiles calibrated before
    # the suite measured them (suite v1): those price them as pool (calibration/costs.py STANDS_IN)
    fallback: Optional[OpCosts] = None


class CalibratedSetting(_Strict):
    """One runtime at one precision and thread count, as `edgekit devices calibrate` measured it."""
    runtime: str
    precision: Literal["fp32", "fp16", "int8"]
    threads: Optional[int] = Field(None, ge=1)
    costs: CalibratedCosts
    points: int = Field(ge=1)  # suite files measured
    # measured / estimated, p10-p90, and the share within ±20%, of the suite's whole networks, each
    # predicted by a fit without it
    band: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]]
    within_20pct: float = Field(ge=0, le=1)

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, value: str) -> str:
        return _check_runtimes([value])[0]


class Calibration(_Strict):
    suite: str
    measured_on: str
    date: str
    cache_mb: Optional[float] = Field(None, gt=0)  # the measuring machine's largest cache; None: unknown
    settings: list[CalibratedSetting] = Field(min_length=1)


def _check_runtimes(names: list[str]) -> list[str]:
    from edgekit.measure.latency_fit import FAMILIES

    unknown = sorted(set(names) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown runtime {', '.join(unknown)} (known: {', '.join(sorted(FAMILIES))})")
    return names


class DeviceProfile(_Strict):
    name: str
    title: str
    kind: Literal["cpu", "gpu", "npu"]
    arch: str
    runtimes: list[Format] = Field(min_length=1)
    onnx_providers: Optional[list[str]] = None
    openvino_device: Optional[str] = None
    precisions: list[Precision] = Field(min_length=1)
    runs_as: dict[Precision, Precision] = Field(default_factory=dict)
    threads: Optional[int] = Field(None, ge=1)
    memory_mb: Optional[int] = Field(None, gt=0)
    peak_gmacs: dict[Precision, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    memory_gbps: Optional[float] = Field(None, gt=0)
    on_chip_mb: Optional[float] = Field(None, gt=0)
    specs_source: Optional[str] = None
    peak_derivation: Optional[str] = None
    constraints: Constraints = Field(default_factory=Constraints)
    reference: Optional[Reference] = None
    # The runtime each file format runs on there, in the per-layer latency model's names
    # (edgekit/measure/latency_fit.py FAMILIES): tflite → litert or edgetpu, onnx → onnxruntime or tensorrt, ...
    estimate_runtimes: dict[Format, str] = Field(default_factory=dict)
    # What `edgekit devices calibrate` measured there: estimates from this profile use it first
    calibration: Optional[Calibration] = None
    notes: Optional[str] = None

    @field_validator("estimate_runtimes")
    @classmethod
    def _known_runtimes(cls, value: dict) -> dict:
        _check_runtimes(list(value.values()))
        return value

    @property
    def measured_live(self) -> bool:
        return self.name == "host"

    def compute_precision(self, precision: str) -> str:
        return self.runs_as.get(precision, precision)


def shipped_devices() -> dict[str, Path]:
    return shipped_files("devices")


def load_profile(name: str, option: str = "--device") -> DeviceProfile:
    """--device NAME (a shipped profile) or a path to a profile YAML; `option` is how the
    command line named it, for messages."""
    from edgekit.support.untrusted import load_yaml

    shipped = shipped_devices()
    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        if name not in shipped:
            raise InputError(f"{option} {name}: unknown device (known: {', '.join(shipped) or 'none'}; "
                             "`edgekit devices` lists them)")
        path = shipped[name]
    data = load_yaml(path, "device profile")
    if not isinstance(data, dict):
        raise InputError(f"device profile {path} must be a YAML mapping of fields")
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise InputError(f"device profile {path}: {where}: {error['msg'].lower()}") from None


def all_profiles() -> list[DeviceProfile]:
    return [load_profile(name) for name in shipped_devices()]
