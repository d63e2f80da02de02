"""Published batch-1 latencies (devices/data/published_latencies.md) as rows a latency model can
be fitted on: which device, which architecture at which input size, which runtime and precision,
how many threads, and whether the figure is a real latency.

The file is written for people: every number with its source and caveats. This reads its tables
as they stand, normalising names ("MobileNet v2 1.0", "mobilenet_v2_1.0", "mobilenet-v2" are one
architecture) and keeping the caveats as flags: `derived` (1000 / FPS, not a latency: for a
pipelined accelerator it understates latency several times) and `uncertain` (the file marks the
setting "(?)" or says "likely").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Section number → device profile name (devices/*.yaml).
SECTION_DEVICES = {1: "rpi4", 2: "rpi5", 3: "jetson-nano", 4: "jetson-orin-nano", 5: "coral-edgetpu",
                   6: "hailo8", 7: "intel-npu", 8: "x86-avx2-laptop"}

# (pattern on the lower-cased model name, architecture key); the first match wins, so the
# specific names come before the families.
ARCHITECTURES = [
    (r"mobilenet v1 0\.25", "mobilenet_v1_0.25"),
    (r"mobilenet ?v3-small", "mobilenet_v3_small"),
    (r"mobilenet[ _]?v3", "mobilenet_v3_large"),  # ncnn's and Hailo's: the Large-style head (file's conventions)
    (r"mobilenet[ _-]?v2", "mobilenet_v2"),
    (r"^mobilenet[ _]?v1|^mobilenet v1", "mobilenet_v1"),
    (r"efficientnet-edgetpu-s|efficientnet_s\b", "efficientnet_edgetpu_s"),
    (r"efficientnet-edgetpu-m", "efficientnet_edgetpu_m"),
    (r"efficientnet-edgetpu-l", "efficientnet_edgetpu_l"),
    (r"efficientnet-lite0", "efficientnet_lite0"),
    (r"efficientnet-b0", "efficientnet_b0"),
    (r"squeezenet", "squeezenet_v1.1"),
    (r"googlenet|inception[ _]v1", "googlenet"),
    (r"inception-resnet v2", "inception_resnet_v2"),
    (r"inception v4", "inception_v4"),
    (r"inception v3", "inception_v3"),
    (r"resnet-152", "resnet152_v2"),
    (r"resnet[-_ ]?(v1_)?18", "resnet18"),
    (r"resnet[-_ ]?34", "resnet34"),
    (r"resnet[-_ ]?(v1_)?50", "resnet50"),
    (r"densenet", "densenet121"),
    (r"vgg16", "vgg16"),
    (r"alexnet", "alexnet"),
    (r"regnetx_800mf", "regnetx_800mf"),
]

# (pattern on the runtime and config text, runtime key); first match wins. Runtimes, not file
# formats: "litert" is TensorFlow Lite's interpreter (with XNNPACK or ruy), "openvino-cpu" OpenVINO
# on the CPU.
RUNTIMES = [
    (r"tflite cpu", "litert-cpu"),
    (r"xnnpack", "litert"),
    (r"armnn", "armnn"),
    (r"ncnn vulkan", "ncnn-vulkan"),
    (r"ncnn", "ncnn"),
    (r"tensorrt|torch2trt", "tensorrt"),
    (r"hailo", "hailort"),
    (r"npu", "openvino-npu"),
    (r"openvino", "openvino-cpu"),
    (r"tflite|litert", "litert"),
    (r"opencv", "opencv-dnn"),
]
# A runtime cell of "same" refers to rows the file leaves out; the source says which it was.
SAME_BY_SOURCE = {"S7": None, "S10": "tensorrt"}


@dataclass(frozen=True)
class PublishedRow:
    device: str
    row: int  # the "#" column of the device's table
    model: str  # as the file writes it
    architecture: str | None  # normalised key, None when no rule knows it
    input_size: int | None
    classes: int | None  # the head's width where it is not ImageNet's 1000 ("3-class" rows)
    precision: str  # fp32 | fp16 | int8
    runtime: str | None  # normalised key
    threads: int | None
    host: str | None  # the machine where one device section spans several (x86 laptops, Intel NPUs)
    latency_ms: float
    derived: bool  # 1000 / FPS, not a latency
    uncertain: bool
    source: str
    notes: str

    @property
    def network(self) -> str:
        """"architecture@size[/classes]": the network as rebuilt (benchmarks/published_architectures.py)."""
        return network_key(self.architecture, self.input_size, self.classes)


DEFAULT_SIZE = 224  # rows that do not state their input size ran at ImageNet's usual one


def network_key(architecture: str | None, size: int | None, classes: int | None) -> str:
    return f"{architecture}@{size or DEFAULT_SIZE}" + (f"/{classes}" if classes else "")


def read_published(path: Path) -> list[PublishedRow]:
    return parse_published(Path(path).read_text(encoding="utf-8"))


def parse_published(text: str) -> list[PublishedRow]:
    """Every table row of every device section."""
    rows, section, previous = [], None, None
    for line in text.splitlines():
        heading = re.match(r"^## (\d+)\. ", line)
        if heading:
            section, previous = int(heading.group(1)), None
            continue
        if line.startswith("## "):
            section = None
        if section not in SECTION_DEVICES or not re.match(r"^\| *\d+ *\|", line):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 10:
            raise ValueError(f"published latencies: a row of section {section} has {len(cells)} cells, not 10: {line}")
        row = _row(SECTION_DEVICES[section], cells, previous)
        if row is not None:
            rows.append(row)
            previous = row
    return rows


def _row(device: str, cells: list[str], previous: PublishedRow | None) -> PublishedRow | None:
    number, model, size, precision, runtime, config, value, stat, source, notes = cells
    latency, derived = _latency(value)
    if latency is None:
        return None
    if "hailo-8l" in runtime.lower():
        device = "hailo8l"  # the file's one Hailo-8L row, for contrast: not the Hailo-8
    return PublishedRow(
        device=device, row=int(number), model=model, architecture=_architecture(model), input_size=_first_int(size),
        classes=3 if "3-class" in model else None,
        precision=previous.precision if precision == "same" and previous else _precision(precision), runtime=_runtime(device, runtime, config, precision, source, previous),
        threads=_threads(config), host=_host(device, config, previous), latency_ms=latency, derived=derived or "derived" in value.lower(),
        uncertain="(?)" in " ".join(cells) or "likely" in precision.lower(), source=source.split()[0],
        notes=notes)


def _latency(value: str) -> tuple[float | None, bool]:
    """(milliseconds, derived from FPS): "3305 FPS → 0.303 **derived**", "**2.93646 ms** ...", "72"."""
    text = value.replace("*", "")
    fps = re.search(r"→\s*([\d.]+)", text)
    if fps:
        return float(fps.group(1)), True
    number = re.search(r"[\d.]+", text)
    return (float(number.group(0)), False) if number else (None, False)


def _architecture(model: str) -> str | None:
    name = model.lower()
    for pattern, key in ARCHITECTURES:
        if re.search(pattern, name):
            return key
    return None


def _precision(text: str) -> str:
    """fp32 | fp16 | int8, as the file states it or, for "fp32*", the model's own (float)."""
    lower = text.lower()
    if "int8" in lower or "uint8" in lower:
        return "int8"
    if "fp16" in lower and "fp32" not in lower:
        return "fp16"
    return "fp32"


def _runtime(device: str, runtime: str, config: str, precision: str, source: str,
             previous: PublishedRow | None) -> str | None:
    text = f"{runtime} {precision}".lower()
    if runtime.lower() == "same":
        key = source.split()[0]
        if previous is not None and previous.source == key:
            return previous.runtime
        return SAME_BY_SOURCE.get(key) or ("tensorrt" if device.startswith("jetson") else "litert")
    if device == "coral-edgetpu":
        return "litert-cpu" if "tflite cpu" in text else "edgetpu"
    for pattern, key in RUNTIMES:
        if re.search(pattern, text):
            return key
    return None


# Sections whose rows come from different machines: the config column names the machine.
MANY_HOSTS = {"x86-avx2-laptop", "intel-npu"}


def _host(device: str, config: str, previous: PublishedRow | None) -> str | None:
    if device not in MANY_HOSTS:
        return None
    if config.lower().startswith("same") and previous is not None:
        return previous.host
    machine = re.search(r"i[3579]-\d{4,5}[A-Z0-9]*|Ultra \d+ \d{3}[A-Z]*|MacBook Pro[^,]*", config)
    if machine:
        return machine.group(0).strip()
    return previous.host if previous is not None else None  # "1 thread": the machine of the rows above


def _threads(config: str) -> int | None:
    match = re.search(r"(\d+) threads?\b", config) or re.fullmatch(r"\s*(\d+)\s*", config)
    return int(match.group(1)) if match else None


def _first_int(text: str) -> int | None:
    match = re.search(r"\d+", text)
    return int(match.group(0)) if match else None


def fitting_samples(rows: list[PublishedRow], networks: dict) -> tuple[list, dict[str, int]]:
    """The rows a latency model can be fitted on, as latency_fit.Sample with the layers of their
    network (`networks`: devices/data/network_work.json's), and how many were left out, by reason."""
    from collections import defaultdict

    from edgekit.measure.latency_fit import Sample

    kept, left_out = [], defaultdict(int)
    for row in rows:
        if row.derived:
            left_out["throughput, not latency (1000 / FPS)"] += 1
        elif "suspicious" in row.notes.lower():
            left_out["marked suspicious in the collection"] += 1
        elif row.runtime == "litert-cpu":
            left_out["CPU-only reference on an unstated host"] += 1
        elif row.network not in networks:
            left_out[f"no builder for {row.architecture}"] += 1
        else:
            layers = tuple(map(tuple, networks[row.network]["layers"]))
            kept.append(Sample(row.device, row.runtime, row.precision, row.threads, row.host or "", row.network,
                               row.architecture, layers, row.latency_ms, _on_chip_bytes(row.device)))
    return kept, dict(left_out)


def _on_chip_bytes(device: str) -> float:
    """The parameter cache its profile states (devices/NAME.yaml on_chip_mb), 0 without one."""
    from edgekit.measure.devices import load_profile, shipped_devices

    if device not in shipped_devices():
        return 0.0
    return (load_profile(device).on_chip_mb or 0.0) * 2**20
