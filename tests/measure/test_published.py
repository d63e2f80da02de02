"""The published latencies (devices/data/published_latencies.md) read as rows to fit a latency
model on (issue 25): names normalised, caveats kept as flags."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from edgekit.measure.published import parse_published, read_published

DATA = Path(__file__).resolve().parents[2] / "devices" / "data" / "published_latencies.md"


@pytest.fixture(scope="module")
def rows():
    return read_published(DATA)


def _row(rows, device, number):
    return next(r for r in rows if r.device == device and r.row == number)


def test_every_row_of_every_device_table_is_read_and_named(rows):
    counts = Counter(r.device for r in rows)
    assert counts == {"rpi4": 44, "coral-edgetpu": 26, "x86-avx2-laptop": 18, "jetson-orin-nano": 17, "rpi5": 15,
                      "jetson-nano": 15, "hailo8": 10, "intel-npu": 6, "hailo8l": 1}
    assert all(r.architecture and r.runtime and r.latency_ms > 0 for r in rows)


def test_names_runtimes_and_caveats_as_the_file_states_them(rows):
    xnnpack = _row(rows, "rpi4", 12)  # "MobileNet v2 1.0 | 224 (?) | int8 | XNNPACK, ARM64"
    assert (xnnpack.architecture, xnnpack.precision, xnnpack.runtime, xnnpack.uncertain) == \
        ("mobilenet_v2", "int8", "litert", True)
    fps = _row(rows, "hailo8", 7)  # "1372 FPS → 0.729 derived": throughput, not a latency
    assert fps.derived and fps.latency_ms == 0.729 and fps.architecture == "resnet50"
    hardware = _row(rows, "hailo8", 11)  # hailortcli's "Latency (hw)"
    assert not hardware.derived and hardware.latency_ms == 2.93646
    assert _row(rows, "hailo8l", 12).latency_ms == 15.5  # the Hailo-8L row is not the Hailo-8's
    assert _row(rows, "coral-edgetpu", 42).runtime == "litert-cpu"  # a CPU-only reference row
    assert _row(rows, "coral-edgetpu", 16).runtime == "edgetpu"
    assert _row(rows, "jetson-orin-nano", 8).runtime == "tensorrt"  # "same" row of source S10
    assert _row(rows, "jetson-nano", 1).runtime == "ncnn-vulkan" and _row(rows, "jetson-nano", 1).threads == 4
    assert _row(rows, "jetson-nano", 9).runtime == "ncnn" and _row(rows, "jetson-nano", 16).threads == 1
    assert _row(rows, "rpi5", 21).classes == 3 and _row(rows, "rpi5", 21).architecture == "mobilenet_v3_small"
    assert _row(rows, "intel-npu", 6).precision == _row(rows, "intel-npu", 5).precision  # "same"
    # x86 and Intel NPU rows come from several machines: each row knows its own
    assert _row(rows, "x86-avx2-laptop", 2).host == _row(rows, "x86-avx2-laptop", 1).host == "i7-1185G7"
    assert _row(rows, "x86-avx2-laptop", 18).host == 'MacBook Pro 15" 2019'  # "1 thread": the rows above
    assert _row(rows, "rpi4", 13).host is None


def test_a_row_that_lost_a_cell_is_an_error_not_a_shifted_row():
    text = "## 1. Raspberry Pi 4\n\n| 1 | MobileNet v1 1.0 | 224 | fp32 | ncnn | 4 | 61.17 | avg | S2 |\n"
    with pytest.raises(ValueError, match="9 cells, not 10"):
        parse_published(text)
