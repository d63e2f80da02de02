"""`compress --target DEVICE` and `--integer-only` (issue 26): the profile decides what is built,
every int8 file is checked against it (read back from the file), and bad combinations are exit 2
before any work, with nothing written."""

from __future__ import annotations

import json

import pytest

from tests.conftest import refusal_line, snapshot


@pytest.fixture(scope="module")
def twice(outlier_digits, tmp_path_factory):
    """Activation outliers ~400× in conv1 and in fc: plain int8 is near chance."""
    from edgekit.demo import add_activation_outliers

    path = tmp_path_factory.mktemp("twice") / "twice.h5"
    add_activation_outliers(outlier_digits["model"], path, layer="conv1", consumer="conv2")
    return path


def _compress(cli, model, data, out, *flags) -> dict:
    """compress with calibration and validation data; the report it wrote."""
    result = cli("compress", model, *flags, "--data", data["calib"], "--val", data["val"], "-o", out, "-q")
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text())


def test_target_coral_builds_what_the_edge_tpu_runs_and_checks_it(twice, outlier_digits, cli, tmp_path):
    from edgekit.formats.facts import read_facts
    from edgekit.measure.devices import load_profile
    from edgekit.measure.estimate import compatibility_problems

    out = tmp_path / "out"
    report = _compress(cli, twice, outlier_digits, out, "--target", "coral-edgetpu")
    assert sorted(a["id"] for a in report["artifacts"]) == ["tflite-fp32", "tflite-int8"]  # Coral runs TFLite only
    assert report["recipe"]["io_dtype"] == "int8" and report["recipe"]["integer_only"] is True
    assert report["repairs"]["equalize"]["pairs"]  # integer-only turned the repair on
    assert report["target"] == {"device": "coral-edgetpu", "integer_only": True, "per_tensor": False,
                                "checked": [{"file": "twice.int8.tflite", "problems": []}]}
    top1 = {a["id"]: a["accuracy"]["top1"] for a in report["artifacts"]}
    assert top1["tflite-int8"] >= top1["tflite-fp32"] - 0.01, top1
    facts = read_facts(out / "twice.int8.tflite", "tflite")  # read back, not taken from the report
    assert facts.input_dtype == "int8" and facts.output_dtype == "int8"
    assert all(op.int8_compute for op in facts.mac_ops)
    assert compatibility_problems(load_profile("coral-edgetpu"), facts) == []


def test_integer_only_writes_every_format_with_every_conv_and_dense_integer(twice, outlier_digits, cli, tmp_path):
    from edgekit.formats.facts import read_facts

    out = tmp_path / "out"
    report = _compress(cli, twice, outlier_digits, out, "--int8", "--integer-only")
    assert [c["problems"] for c in report["target"]["checked"]] == [[], [], []]
    top1 = {a["id"]: a["accuracy"]["top1"] for a in report["artifacts"]}
    for entry in report["artifacts"]:
        if entry["id"].endswith("int8"):
            fmt = entry["id"].split("-")[0]
            assert top1[entry["id"]] >= top1[f"{fmt}-fp32"] - 0.01, top1
            facts = read_facts(out / entry["path"].split("/")[-1], fmt)
            assert facts.mac_ops and all(op.int8_compute for op in facts.mac_ops), fmt


def test_a_float_op_in_an_integer_only_file_is_named(validated_run):
    """The check itself, on a file that holds float kernels where int8 ones belong."""
    from edgekit.compression.config import Recipe
    from edgekit.compression.targets import check_written
    from edgekit.errors import Incompatible
    from edgekit.formats.exporter import Artifact

    posing = Artifact("tflite", "int8", [validated_run / "digits.fp32.tflite"])
    with pytest.raises(Incompatible) as caught:
        check_written(Recipe(int8=True, integer_only=True), [posing])
    message = str(caught.value)
    assert "digits.fp32.tflite" in message and "4 conv/dense op(s) compute in float" in message
    assert "conv1" in message and "nothing was written" in message
    with pytest.raises(Incompatible) as caught:
        check_written(Recipe(int8=True, target="coral-edgetpu"), [posing])
    assert "input is float32" in str(caught.value)


def test_per_tensor_writes_one_weight_scale_per_layer_in_every_format(twice, outlier_digits, cli, tmp_path):
    """Read back from each file: every int8 conv/dense weight has one scale; the repairs keep
    top-1 where float is (plain per-tensor int8 of this model is near chance)."""
    from edgekit.formats.facts import read_facts

    out = tmp_path / "out"
    report = _compress(cli, twice, outlier_digits, out, "--int8", "--per-tensor", "--integer-only")
    assert report["target"]["per_tensor"] is True
    assert [c["problems"] for c in report["target"]["checked"]] == [[], [], []]
    top1 = {a["id"]: a["accuracy"]["top1"] for a in report["artifacts"]}
    for entry in report["artifacts"]:
        if entry["id"].endswith("int8"):
            fmt = entry["id"].split("-")[0]
            assert entry["settings"]["weights"] == "int8 per-tensor"
            assert top1[entry["id"]] >= top1[f"{fmt}-fp32"] - 0.01, top1
            facts = read_facts(out / entry["path"].split("/")[-1], fmt)
            assert len(facts.mac_ops) == 4 and [op.weight_scales for op in facts.mac_ops] == [1] * 4, fmt


def test_an_op_left_in_float_in_an_onnx_file_is_named(validated_run, tmp_path, monkeypatch):
    """ONNX files tell which ops besides conv/dense run in float: a Softmax the quantizer was told
    to leave out is named by the integer-only check; the file quantized whole has none."""
    import numpy as np
    import onnx

    from edgekit.compression.config import Recipe
    from edgekit.compression.targets import check_written
    from edgekit.errors import Incompatible
    from edgekit.formats.exporter import Artifact
    from edgekit.formats.facts import read_facts
    from edgekit.formats.onnx.export import prepare, quantize_static

    assert read_facts(validated_run / "digits.int8.onnx", "onnx").float_other_ops == []
    monkeypatch.chdir(tmp_path)
    prepared = prepare(str(validated_run / "digits.fp32.onnx"))
    graph = onnx.load(prepared).graph
    softmax = next(n.name for n in graph.node if n.op_type == "Softmax")
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).uniform(0, 1, (16, 8, 8, 1)).astype(np.float32))
    mixed = tmp_path / "mixed.int8.onnx"
    quantize_static(prepared, str(mixed), str(tmp_path / "calib.npy"), graph.input[0].name, exclude=[softmax],
                    prepared=True)
    assert read_facts(mixed, "onnx").float_other_ops == [f"Softmax {softmax}"]
    with pytest.raises(Incompatible, match=r"1 other op\(s\) compute in float \(Softmax "):
        check_written(Recipe(int8=True, integer_only=True), [Artifact("onnx", "int8", [mixed])])


def test_an_op_left_in_float_in_a_tflite_file_is_named(digits, validated_run, tmp_path):
    """TFLite files tell too (their tensor types are explicit): a Softmax the converter was told to
    leave in float is named with the QUANTIZE/DEQUANTIZE around it; the float input's QUANTIZE and
    output's DEQUANTIZE of a whole-int8 file are its edges, not float ops."""
    import numpy as np
    import tensorflow as tf
    import tf_keras
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.python import convert as tflite_convert

    from edgekit.compression.config import Recipe
    from edgekit.compression.targets import check_written
    from edgekit.errors import Incompatible
    from edgekit.formats.exporter import Artifact
    from edgekit.formats.facts import read_facts

    whole = read_facts(validated_run / "digits.int8.tflite", "tflite")
    assert whole.float_other_ops == [] and whole.input_dtype == "float32"  # QUANTIZE/DEQUANTIZE at its ends
    x = np.load(digits["calib"])["x"][:32].astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(tf_keras.models.load_model(digits["model"]))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in x)
    converter._experimental_calibrate_only = True  # noqa: SLF001 - as formats/tflite/search.py does
    calibrated = converter.convert()
    interpreter = Interpreter(model_content=calibrated)
    ops = interpreter._get_ops_details()  # noqa: SLF001
    tensors = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    softmax = tensors[next(int(op["outputs"][0]) for op in ops if op["op_name"] == "SOFTMAX")]
    mixed = tmp_path / "mixed.int8.tflite"
    mixed.write_bytes(tflite_convert.mlir_quantize(calibrated, denylisted_nodes=[softmax]))
    named = read_facts(mixed, "tflite").float_other_ops
    assert f"SOFTMAX {softmax}" in named and any(op.startswith("DEQUANTIZE ") for op in named), named
    with pytest.raises(Incompatible, match=r"other op\(s\) compute in float \(.*SOFTMAX"):
        check_written(Recipe(int8=True, integer_only=True), [Artifact("tflite", "int8", [mixed])])


def test_openvino_names_float_ops_between_quantized_ones_and_notes_those_at_the_ends(twice, outlier_digits, cli,
                                                                                      tmp_path):
    """NNCF never quantizes the final Softmax: it is named at the file's edge (a note, the run passes);
    an op between quantized ones reading float (a FakeQuantize taken out) is a problem, exit 2."""
    import openvino as ov

    from edgekit.compression.config import Recipe
    from edgekit.compression.targets import check_written
    from edgekit.errors import Incompatible
    from edgekit.formats.exporter import Artifact
    from edgekit.formats.facts import read_facts

    out = tmp_path / "out"
    result = cli("compress", twice, "--int8", "--integer-only", "--formats", "openvino", "--data",
                 outlier_digits["calib"], "-o", out)
    assert result.exit_code == 0, result.output
    assert "run in float" in result.output and "pre/post-processing" in result.output
    report = json.loads((out / "report.json").read_text())
    [entry] = report["target"]["checked"]
    assert entry["problems"] == [] and [op.split()[0] for op in entry["float_at_edges"]] == ["Softmax"]
    facts = read_facts(out / "twice.int8.xml", "openvino")
    assert facts.float_other_ops == [] and facts.float_edge_ops == entry["float_at_edges"]

    model = ov.Core().read_model(str(out / "twice.int8.xml"))
    quantizes = [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    reader = next(fq for fq in quantizes if fq.input_value(0).get_node().get_type_name() != "Parameter"
                  and any(t.get_node().get_type_name() == "Transpose" for t in fq.output(0).get_target_inputs()))
    reader.output(0).replace(reader.input_value(0))  # the op after it now reads float
    broken = tmp_path / "broken.int8.xml"
    ov.save_model(model, str(broken), compress_to_fp16=False)
    named = read_facts(broken, "openvino").float_other_ops
    assert len(named) == 1 and named[0].startswith("Transpose "), named
    with pytest.raises(Incompatible, match=r"1 other op\(s\) compute in float \(Transpose "):
        check_written(Recipe(int8=True, integer_only=True), [Artifact("openvino", "int8", [broken])])


def test_per_channel_weights_in_a_per_tensor_file_are_named(validated_run):
    """The check on files written per-channel (the default): each names its per-channel ops."""
    from edgekit.compression.config import Recipe
    from edgekit.compression.targets import check_written
    from edgekit.errors import Incompatible
    from edgekit.formats.exporter import Artifact
    from edgekit.formats.facts import read_facts

    for fmt, name in (("tflite", "digits.int8.tflite"), ("onnx", "digits.int8.onnx")):
        facts = read_facts(validated_run / name, fmt)
        assert all(op.weight_scales and op.weight_scales > 1 for op in facts.mac_ops), fmt
        with pytest.raises(Incompatible) as caught:
            check_written(Recipe(int8=True, per_tensor=True), [Artifact(fmt, "int8", [validated_run / name])])
        assert "per-channel weight scales" in str(caught.value) and "--per-tensor" in str(caught.value)


BAD = [
    (["--target", "coral-tpu"], ["--target coral-tpu", "unknown device", "coral-edgetpu"]),
    (["--target", "coral-edgetpu", "--formats", "onnx"], ["coral-edgetpu runs tflite files, not onnx"]),
    (["--integer-only"], ["--integer-only makes int8 files", "--int8"]),
    (["--per-tensor"], ["--per-tensor", "needs int8"]),
    (["--int8", "--per-tensor", "--qat"], ["per_tensor", "QAT"]),
]


@pytest.mark.parametrize("args, words", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_target_options_are_refused_before_any_work(args, words, digits, cli, tmp_path):
    before = snapshot(tmp_path)
    result = cli("compress", digits["model"], *args, "--data", digits["calib"], "-o", tmp_path / "out")
    refusal_line(result, words)
    assert snapshot(tmp_path) == before


def test_a_target_without_calibration_data_is_refused(digits, cli, tmp_path):
    before = snapshot(tmp_path)
    result = cli("compress", digits["model"], "--target", "coral-edgetpu", "-o", tmp_path / "out")
    refusal_line(result, ["--target coral-edgetpu builds full int8 files", "--data CALIB"])
    assert snapshot(tmp_path) == before


def test_a_recipe_s_own_target_decides_as_the_flag_does(tmp_path):
    """What a sweep or `--recipe FILE` reads gets the profile's decisions too; a recipe that names
    formats the device does not run is refused."""
    from edgekit.compression.config import load_recipe
    from edgekit.errors import InputError

    path = tmp_path / "coral.yaml"
    path.write_text("target: coral-edgetpu\ncalib_samples: 100\n")
    recipe = load_recipe(str(path))
    assert (recipe.formats, recipe.int8, recipe.io_dtype, recipe.integer_only, recipe.repairs.equalize) == \
        (["tflite"], True, "int8", True, True)
    path.write_text("target: coral-edgetpu\nrepairs: {equalize: false}\n")
    assert load_recipe(str(path)).repairs.equalize is False  # the recipe chose itself
    path.write_text("target: coral-edgetpu\nrepairs: {bias_correction: true}\n")
    repairs = load_recipe(str(path)).repairs
    assert repairs.equalize and repairs.bias_correction  # another repair asked for comes on top
    path.write_text("target: rpi4\nrepairs: {equalize: true}\n")  # a device that runs float too
    with pytest.raises(InputError, match="repairs.equalize: for int8 files, and --target rpi4 runs float too"):
        load_recipe(str(path))
    path.write_text("target: coral-edgetpu\nformats: [tflite, openvino]\n")
    with pytest.raises(InputError, match="coral-edgetpu runs tflite files, not openvino"):
        load_recipe(str(path))
