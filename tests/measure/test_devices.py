"""Device profiles: `edgekit devices`, `bench --device` estimates and compatibility checks."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from edgekit.formats.facts import read_facts
from edgekit.measure.devices import all_profiles
from tests.conftest import refusal_line, snapshot

REQUIRED = {"host", "rpi4", "rpi5", "jetson-nano", "jetson-orin-nano", "coral-edgetpu", "intel-npu", "hailo8",
            "x86-avx2-laptop"}


@pytest.fixture(scope="module")
def artifacts(digits, tmp_path_factory):
    """fp32 + int8 in every format, and the Edge TPU recipe's int8-I/O TFLite."""
    from typer.testing import CliRunner

    from edgekit.cli import app

    out = tmp_path_factory.mktemp("devices")
    for args, folder in ((["--int8"], "all"), (["--recipe", "edgetpu"], "edgetpu")):
        result = CliRunner().invoke(app, ["compress", str(digits["model"]), *args, "--data", str(digits["calib"]),
                                          "-o", str(out / folder), "-q", "--no-bench"])
        assert result.exit_code == 0, result.output
    return out


def test_every_required_profile_is_shipped_and_sourced(cli):
    result = cli("devices", "--json")
    assert result.exit_code == 0, result.output
    profiles = {p["name"]: p for p in json.loads(result.stdout)}
    assert REQUIRED <= set(profiles)
    for name, p in profiles.items():
        if name == "host":
            continue
        assert p["peak_gmacs"] and p["specs_source"].startswith("https://"), name
        ref = p.get("reference")
        if ref:
            assert ref["source"].startswith("https://") and ref["latency_ms"] > 0, name
        else:
            assert "borrow the efficiency" in " ".join(p["notes"].split()), name  # and say so
    table = cli("devices").stdout
    assert "rpi4" in table and "unseen within ±30%" in table and "a guess: too few to check" in table  # hailo8
    fitted = profiles["rpi4"]["latency_model"]  # what the per-layer model rests on, and how wrong it was
    assert fitted["published_latencies"] >= 30 and fitted["leave_one_model_out"]["rows"] >= 30
    assert 0 < fitted["band"][0] < 1 < fitted["band"][1] and "note" not in fitted
    assert "note" in profiles["hailo8"]["latency_model"]  # one published latency: said plainly
    one = cli("devices", "coral-edgetpu")
    assert one.exit_code == 0 and "coral.ai/docs/edgetpu/benchmarks" in one.stdout


@pytest.mark.heavy
def test_mac_count_read_from_each_file_matches_keras(artifacts):
    report = json.loads((artifacts / "all" / "report.json").read_text())
    for artifact in report["artifacts"]:
        facts = read_facts(artifacts / "all" / artifact["path"], artifact["format"])
        assert facts.macs == report["source"]["macs"], artifact["id"]
        assert facts.precision == artifact["precision"], artifact["id"]


def test_estimate_is_labelled_and_never_mixed_with_measurements(cli, artifacts):
    files = [artifacts / "all" / "digits.fp32.tflite", artifacts / "all" / "digits.int8.onnx"]
    result = cli("bench", *files, "--device", "rpi4", "--json")
    assert result.exit_code == 0, result.output
    for r in json.loads(result.stdout):
        assert r["estimated"] is True and r["measured"] is False and r["device"] == "rpi4"
        assert set(r["latency_ms"]) == {"estimate"} and "p50" not in r and r["latency_ms"]["estimate"] > 0
        low, high = r["likely_ms"]  # the band its leave-one-model-out error gives (issue 25)
        assert low < r["latency_ms"]["estimate"] < high
        assert "per-layer model" in r["method"] and "rpi4" in r["basis"] and "published" in r["basis"]
        assert r["error"]["rows"] >= 30 and 0 < r["error"]["within_30pct"] <= 1
        assert "devices/data/published_latencies.md" in r["basis"]
    table = cli("bench", *files, "--device", "rpi4").stdout
    assert "ESTIMATED latency on rpi4 (not measured)" in table


def test_calibrated_on_its_own_reference_the_estimate_reproduces_it(artifacts, tmp_path):
    """The calibration identity: a profile of your own (no published latencies in the per-layer
    model) falls back to the roofline, and if its reference is this very model, predicts it."""
    from edgekit.measure.devices import load_profile
    from edgekit.measure.estimate import estimate_all

    report = json.loads((artifacts / "all" / "report.json").read_text())
    profile = yaml.safe_load(load_profile("rpi4").model_dump_json())
    profile["name"] = "my-board"
    profile["reference"].update(macs=report["source"]["macs"], params=report["source"]["params"], latency_ms=7.0)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(profile))
    (estimate,) = estimate_all([artifacts / "all" / "digits.fp32.tflite"], load_profile(str(path)))
    assert estimate["latency_ms"]["estimate"] == pytest.approx(7.0, rel=0.02)
    # int8 on the same device computes at the int8 peak: faster, never slower.
    (int8,) = estimate_all([artifacts / "all" / "digits.int8.tflite"], load_profile(str(path)))
    assert int8["latency_ms"]["estimate"] < estimate["latency_ms"]["estimate"]


def test_an_estimate_says_which_published_setting_it_stands_on(cli, artifacts):
    """An ONNX file on a Pi runs on ONNX Runtime, which no published row measured there: the
    estimate scales like the Pi's published LiteRT latencies, and says so."""
    result = cli("bench", artifacts / "all" / "digits.int8.onnx", "--device", "rpi5", "--json")
    assert result.exit_code == 0, result.output
    (r,) = json.loads(result.stdout)
    assert r["runtime"] == "onnxruntime" and r["computes_in"] == "int8"
    assert r["basis"].startswith("no published onnxruntime int8 latency on rpi5: scaled like litert int8")
    tflite = json.loads(cli("bench", artifacts / "all" / "digits.int8.tflite", "--device", "rpi5", "--json").stdout)[0]
    assert tflite["basis"].startswith("scaled on") and tflite["runtime"] == "litert"


def test_coral_takes_only_full_int8_with_integer_io(cli, artifacts):
    fp32 = cli("bench", artifacts / "all" / "digits.fp32.tflite", "--device", "coral-edgetpu")
    refusal_line(fp32, ["digits.fp32.tflite", "coral-edgetpu", "fp32 model", "int8/uint8 I/O", "edgetpu_compiler"])
    float_io = cli("bench", artifacts / "all" / "digits.int8.tflite", "--device", "coral-edgetpu")
    refusal_line(float_io, ["input is float32", "ops it cannot run: DEQUANTIZE"])
    onnx = cli("bench", artifacts / "all" / "digits.int8.onnx", "--device", "coral-edgetpu")
    refusal_line(onnx, ["onnx files do not run there"])
    ready = cli("bench", artifacts / "edgetpu" / "digits.int8.tflite", "--device", "coral-edgetpu", "--json")
    assert ready.exit_code == 0, ready.output
    (r,) = json.loads(ready.stdout)
    assert r["precision"] == "int8" and "published coral-edgetpu latencies (edgetpu int8)" in r["basis"]


def test_intel_npu_needs_static_shapes(cli, artifacts, tmp_path):
    import openvino as ov

    dynamic = artifacts / "all" / "digits.int8.xml"
    refusal_line(cli("bench", dynamic, "--device", "intel-npu"), ["dynamic (batch) dimension", "model.reshape"])
    model = ov.Core().read_model(str(dynamic))
    model.reshape([1, 8, 8, 1])  # the digits model's input, batch fixed to 1
    static = tmp_path / "digits.static.xml"
    ov.save_model(model, str(static))
    result = cli("bench", static, "--device", "intel-npu", "--json")
    assert result.exit_code == 0, result.output
    (r,) = json.loads(result.stdout)
    assert r["computes_in"] == "int8" and r["runtime"] == "openvino-npu" and "intel-npu" in r["basis"]


def test_gpu_profiles_say_whether_a_gpu_runtime_is_here(cli, artifacts):
    import onnxruntime

    result = cli("bench", artifacts / "all" / "digits.fp32.onnx", "--device", "jetson-nano", "--json")
    assert result.exit_code == 0, result.output
    (r,) = json.loads(result.stdout)
    has_gpu = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    assert r["gpu_runtime_here"].startswith("yes" if has_gpu else "no")
    assert r["computes_in"] == "fp32"


def test_host_is_measured_not_estimated(cli, artifacts):
    result = cli("bench", artifacts / "all" / "digits.int8.tflite", "--device", "host", "--runs", "5",
                 "--min-time", "0", "--json")
    assert result.exit_code == 0, result.output
    (r,) = json.loads(result.stdout)
    assert r["measured"] is True and r["device"] == "host" and r["p50"] > 0


@pytest.mark.parametrize("argv, named", [(("bench", "ART", "--device", "nope"), "--device nope"),
                                         (("devices", "nope"), "device nope")])  # the argument, as typed
def test_unknown_device_exits_2_naming_the_known_ones(cli, artifacts, argv, named):
    argv = [str(artifacts / "all" / "digits.int8.tflite") if a == "ART" else a for a in argv]
    line = refusal_line(cli(*argv), [f"{named}: unknown device", "rpi4", "coral-edgetpu"])
    assert line.startswith(f"error: {named}:")


def test_a_corrupt_artifact_is_exit_2_for_estimates_too(cli, tmp_path):
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"\0\0\0\0TFL3" + b"\x07" * 100)
    refusal_line(cli("bench", bad, "--device", "rpi4"), ["broken.tflite", "corrupt"])


def test_a_bad_profile_file_names_the_field(cli, artifacts, tmp_path):
    profile = tmp_path / "mine.yaml"
    profile.write_text(yaml.safe_dump({**yaml.safe_load(all_profiles()[0].model_dump_json()), "speed": 3}))
    refusal_line(cli("bench", artifacts / "all" / "digits.int8.tflite", "--device", str(profile)),
                 ["mine.yaml", "speed", "extra inputs are not permitted"])


def test_onnx_runner_falls_back_to_cpu_when_the_profile_asks_for_a_missing_provider(artifacts):
    from edgekit.formats.runner import open_runner

    runner = open_runner(artifacts / "all" / "digits.fp32.onnx", providers=["TensorrtExecutionProvider",
                                                                           "CUDAExecutionProvider"])
    assert runner.execution.endswith("CPUExecutionProvider")


def test_openvino_runner_falls_back_to_cpu_when_the_profile_device_is_absent(artifacts):
    from edgekit.formats.runner import open_runner

    # A device name no machine has, so the fallback is exercised everywhere (no skip on NPU hosts).
    runner = open_runner(artifacts / "all" / "digits.int8.xml", openvino_device="NO_SUCH_DEVICE")
    assert runner.execution == "OpenVINO CPU (NO_SUCH_DEVICE not present)"


def test_estimates_need_no_tensorflow(artifacts):
    """On a Pi with only `edgekit[tflite]` or `[onnx]`, estimates still work."""
    import subprocess
    import sys

    files = [artifacts / "all" / "digits.int8.tflite", artifacts / "all" / "digits.int8.onnx"]
    code = ("import sys; from edgekit.measure.devices import load_profile; from edgekit.measure.estimate import estimate_all; "
            f"r = estimate_all([r'{files[0]}', r'{files[1]}'], load_profile('rpi4')); "
            "heavy = [m for m in ('tensorflow', 'tf_keras', 'tf2onnx', 'nncf') if m in sys.modules]; "
            "print(heavy, len(r))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[] 2"


def test_a_profile_naming_an_unknown_runtime_is_refused_with_the_known_ones(cli, artifacts, tmp_path):
    profile = yaml.safe_load(all_profiles()[0].model_dump_json())
    profile["estimate_runtimes"] = {"tflite": "tpu-magic"}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(profile))
    result = cli("bench", artifacts / "all" / "digits.int8.tflite", "--device", str(path), "--json")
    refusal_line(result, ["mine.yaml", "estimate_runtimes", "unknown runtime tpu-magic", "litert", "edgetpu"])
    assert result.stdout == ""  # no estimate printed


def _calibrated(tmp_path, edit=None):
    """A profile as `edgekit devices calibrate` writes it (prices made up), optionally edited."""
    from edgekit.measure.calibration.costs import COLUMNS

    costs: dict = {"overhead_us": 20.0}
    for kind, term in COLUMNS:
        costs.setdefault(kind, {})[term] = {"ns_per_mac": 0.02, "ns_per_element": 0.3, "ns_per_weight": 0.05,
                                            "us_per_layer": 2.0}[term]
    setting = {"runtime": "litert", "precision": "fp32", "threads": 1, "costs": costs, "points": 40,
               "band": [0.8, 1.25], "within_20pct": 0.9}
    profile = {"name": "mybox", "title": "a calibrated test box", "kind": "cpu", "arch": "x86_64",
               "runtimes": ["tflite", "onnx"], "precisions": ["fp32", "int8"], "threads": 1,
               "estimate_runtimes": {"tflite": "litert", "onnx": "onnxruntime"},
               "calibration": {"suite": "edgekit calibration suite v1", "measured_on": "a test", "date": "2026-12-06",
                               "settings": [setting, {**copy.deepcopy(setting), "precision": "int8"}]}}
    if edit:
        edit(profile)
    path = tmp_path / "mybox.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def test_a_calibrated_profile_prices_the_files_own_layers(cli, artifacts, tmp_path):
    from edgekit.measure.calibration.costs import predict_ms
    from edgekit.measure.layer_work import file_network_work

    profile = _calibrated(tmp_path)
    shown = cli("devices", profile)
    assert shown.exit_code == 0, shown.output
    assert "litert fp32, 1 thread(s): 40 suite files; its networks 90% within ±20%" in shown.stdout
    for name in ("digits.fp32.tflite", "digits.int8.tflite"):
        result = cli("bench", artifacts / "all" / name, "--device", profile, "--json")
        assert result.exit_code == 0, result.output
        (estimate,) = json.loads(result.stdout)
        costs = yaml.safe_load(profile.read_text())["calibration"]["settings"][0]["costs"]
        expected = predict_ms(costs, file_network_work(read_facts(artifacts / "all" / name, "tflite")))
        assert estimate["latency_ms"]["estimate"] == pytest.approx(expected, abs=1e-4)
        assert estimate["likely_ms"] == pytest.approx([expected * 0.8, expected * 1.25], abs=1e-4)
        assert estimate["runtime"] == "litert" and estimate["computes_in"] == name.split(".")[1]
        assert "calibrated on a test" in estimate["basis"]
    # ONNX Runtime was not calibrated: exit 2 naming what was
    before = snapshot(tmp_path)
    line = refusal_line(cli("bench", artifacts / "all" / "digits.fp32.onnx", "--device", profile),
                        ["calibrated for litert fp32, litert int8", "not onnxruntime fp32", "--runtime"])
    assert "Traceback" not in line and snapshot(tmp_path) == before


def test_weights_past_the_calibrated_cache_are_priced_as_streamed(cli, artifacts, tmp_path):
    """A profile that knows its machine's cache prices the weight bytes past it; without the
    streamed-weight price or the cache size (profiles from suite v1 and v2) nothing changes."""
    name = artifacts / "all" / "digits.fp32.tflite"
    weight_bytes = read_facts(name, "tflite").weight_bytes
    cache_mb = weight_bytes / 2 / 2**20  # half the file's weights fit

    def streaming(profile):
        profile["calibration"]["cache_mb"] = cache_mb
        for setting in profile["calibration"]["settings"]:
            setting["costs"]["ns_per_streamed_byte"] = 1.0

    estimates = {}
    for label, edit in (("plain", None), ("streaming", streaming)):
        folder = tmp_path / label
        folder.mkdir()
        result = cli("bench", name, "--device", _calibrated(folder, edit), "--json")
        assert result.exit_code == 0, result.output
        estimates[label] = json.loads(result.stdout)[0]["latency_ms"]["estimate"]
    streamed = weight_bytes - int(cache_mb * 2**20)
    assert estimates["streaming"] - estimates["plain"] == pytest.approx(streamed * 1.0 * 1e-6, abs=2e-4)
    assert estimates["streaming"] > estimates["plain"] + 0.01


def _drop(profile):
    del profile["calibration"]["settings"][0]["costs"]["conv"]["ns_per_mac"]


def _negative(profile):
    profile["calibration"]["settings"][1]["costs"]["depthwise"]["ns_per_element"] = -0.1


def _nan(profile):
    profile["calibration"]["settings"][0]["costs"]["overhead_us"] = float("nan")


def _no_band(profile):
    profile["calibration"]["settings"][0]["band"] = [0.0, 1.2]


def _negative_streaming(profile):
    profile["calibration"]["settings"][0]["costs"]["ns_per_streamed_byte"] = -0.02


def _zero_cache(profile):
    profile["calibration"]["cache_mb"] = 0


@pytest.mark.parametrize("edit, words", [
    (_drop, ["calibration.settings.0.costs.conv.ns_per_mac", "field required"]),
    (_negative, ["calibration.settings.1.costs.depthwise.ns_per_element", "greater than or equal to 0"]),
    (_nan, ["calibration.settings.0.costs.overhead_us", "finite number"]),
    (_no_band, ["calibration.settings.0.band.0", "greater than 0"]),
    (_negative_streaming, ["calibration.settings.0.costs.ns_per_streamed_byte", "greater than or equal to 0"]),
    (_zero_cache, ["calibration.cache_mb", "greater than 0"]),
])
def test_a_profile_with_missing_negative_or_nan_parameters_is_exit_2(cli, artifacts, tmp_path, edit, words):
    profile = _calibrated(tmp_path, edit)
    before = snapshot(tmp_path)
    refusal_line(cli("bench", artifacts / "all" / "digits.fp32.tflite", "--device", profile), [str(profile), *words])
    refusal_line(cli("devices", profile), words)
    assert snapshot(tmp_path) == before


def test_bench_runtime_and_precision_choose_what_the_estimate_assumes(cli, artifacts, tmp_path):
    fp32 = artifacts / "all" / "digits.fp32.tflite"
    default = json.loads(cli("bench", fp32, "--device", "rpi4", "--json").stdout)[0]
    armnn = cli("bench", fp32, "--device", "rpi4", "--runtime", "armnn", "--json")
    assert armnn.exit_code == 0, armnn.output
    armnn = json.loads(armnn.stdout)[0]
    assert (default["runtime"], armnn["runtime"]) == ("litert", "armnn")
    assert armnn["latency_ms"]["estimate"] != default["latency_ms"]["estimate"]  # another setting's scale
    as_int8 = json.loads(cli("bench", fp32, "--device", "rpi4", "--precision", "int8", "--json").stdout)[0]
    assert as_int8["computes_in"] == "int8"
    before = snapshot(tmp_path)
    refusal_line(cli("bench", fp32, "--device", "rpi4", "--runtime", "tensorrt"),
                 ["--runtime tensorrt", "rpi4 offers", "armnn", "litert", "ncnn", "onnxruntime"])
    refusal_line(cli("bench", fp32, "--device", "coral-edgetpu", "--precision", "fp32"),
                 ["--precision fp32", "coral-edgetpu computes in int8"])
    refusal_line(cli("bench", fp32, "--runtime", "litert"), ["--runtime and --precision", "--device"])
    refusal_line(cli("bench", fp32, "--device", "host", "--precision", "int8"), ["host is measured here"])
    assert snapshot(tmp_path) == before


def test_a_roofline_profile_refuses_a_runtime_it_cannot_model(cli, artifacts, tmp_path):
    """A profile of your own with no published latencies is estimated by the roofline, which knows
    one efficiency: --runtime/--precision would have been ignored silently; now exit 2 with the way out."""
    from edgekit.measure.devices import load_profile

    profile = yaml.safe_load(load_profile("rpi4").model_dump_json())
    profile["name"] = "my-board"
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(profile))
    fp32 = artifacts / "all" / "digits.fp32.tflite"
    assert json.loads(cli("bench", fp32, "--device", path, "--json").stdout)[0]["method"].startswith("roofline")
    before = snapshot(tmp_path)
    for option in (["--runtime", "litert"], ["--precision", "int8"]):
        refusal_line(cli("bench", fp32, "--device", path, *option),
                     ["my-board has no per-layer model", "its estimate is a roofline", "edgekit devices calibrate"])
    assert snapshot(tmp_path) == before
