"""Hostile and broken inputs, generated here (nothing big committed): each is exit 2 with one
line naming the file or option, no traceback, nothing written, and where the input tries to
create a file, that file never appears."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import refusal_line, snapshot


def _no_traceback(result):
    assert "Traceback" not in result.output and "Traceback" not in result.stderr


# --- SavedModels that do more than compute -----------------------------------------------------

def _saved_model(folder, body):
    """A SavedModel classifier for 8×8×1 images whose serving function also runs body(x)."""
    from edgekit.support.keras_compat import tensorflow

    tf = tensorflow()

    class Hostile(tf.Module):
        def __init__(self):
            self.kernel = tf.Variable(np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec((None, 8, 8, 1), tf.float32)])
        def __call__(self, x):
            x = body(tf, x)
            return {"probs": tf.nn.softmax(tf.matmul(tf.reshape(x, (-1, 64)), self.kernel))}

    module = Hostile()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.__call__})
    return folder


def _write_file(marker):
    def body(tf, x):
        tf.io.write_file(str(marker), "written by the model")
        return x
    return body


def _print_to_file(marker):
    def body(tf, x):
        tf.print("written by the model", output_stream=f"file://{marker}")
        return x
    return body


def _py_function(marker):
    def body(tf, x):
        def touch(t):
            marker.write_text("written by Python inside the model")
            return t
        return tf.reshape(tf.py_function(touch, [x], tf.float32), tf.shape(x))
    return body


HOSTILE_GRAPHS = {"WriteFile": _write_file, "PrintV2": _print_to_file, "EagerPyFunc": _py_function}


@pytest.mark.parametrize("op", sorted(HOSTILE_GRAPHS))
@pytest.mark.parametrize("command", ["compress", "inspect"])
def test_saved_model_with_io_ops_is_refused_before_anything_runs(op, command, cli, digits, tmp_path):
    marker = tmp_path / "marker.txt"
    model = _saved_model(tmp_path / "sm", HOSTILE_GRAPHS[op](marker))
    before = snapshot(tmp_path)
    _refused_as_io(cli, command, model, op, digits, tmp_path)
    assert not marker.exists()
    assert snapshot(tmp_path) == before


def _refused_as_io(cli, command: str, model, op: str, digits, tmp_path) -> None:
    """`command` on a SavedModel named sm is exit 2, one line naming sm, the op and the way out."""
    args = [model, "--int8", "--data", digits["calib"], "-o", tmp_path / "out"] if command == "compress" else [model]
    result = cli(command, *args)
    line = refusal_line(result, ["sm", op, "--trust-model"])
    assert "touch files or run code" in line
    _no_traceback(result)


def test_plain_saved_model_passes_the_op_scan(digits, tmp_path):
    """What tf.saved_model.save writes for an ordinary Keras model (its checkpoint functions
    included) is all allowed."""
    from edgekit.support.keras_compat import tensorflow, tf_keras
    from edgekit.intake.saved_model_scan import scan_saved_model

    model = tf_keras().models.load_model(digits["model"], compile=False)
    tensorflow().saved_model.save(model, str(tmp_path / "sm"))
    assert scan_saved_model(tmp_path / "sm").refused == []


def test_checkpoint_ops_outside_the_saver_are_refused(tmp_path):
    """RestoreV2 is allowed in _traced_restore, not in a function the serving path can call."""
    from edgekit.intake.saved_model_scan import scan_saved_model

    def body(tf, x):
        restored = tf.raw_ops.RestoreV2(prefix=str(tmp_path / "ckpt"), tensor_names=["k"], shape_and_slices=[""],
                                        dtypes=[tf.float32])[0]
        return x + tf.reduce_sum(restored) * 0.0

    found = scan_saved_model(_saved_model(tmp_path / "sm", body))
    assert len(found.refused) == 1 and "RestoreV2: reads or writes checkpoint files" in found.refused[0]


def _tf1_saved_model(folder, hijack=None):
    """A TF1 SavedModel (saved_model.Builder with a Saver) classifying 8×8×1 images; with
    hijack(tf, kernel), the saver's restore op, which loading runs, is a group of the real
    restore and what hijack returns."""
    from edgekit.support.keras_compat import tensorflow

    tf = tensorflow()
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, (None, 8, 8, 1), name="x")
        kernel = v1.get_variable("kernel", initializer=np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32))
        probs = tf.nn.softmax(tf.matmul(tf.reshape(x, (-1, 64)), kernel), name="probs")
        saver = v1.train.Saver()
        if hijack is not None:
            restore = graph.get_operation_by_name(saver.saver_def.restore_op_name)
            saver.saver_def.restore_op_name = tf.group(restore, hijack(tf, kernel), name="restore_and_more").name
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(folder))
            signature = v1.saved_model.predict_signature_def({"x": x}, {"probs": probs})
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature},
                                                 saver=saver)
            builder.save()
    return folder


def _victim_checkpoint(folder):
    """A checkpoint somebody else owns: prefix folder/ckpt."""
    from edgekit.support.keras_compat import tensorflow

    tf = tensorflow()
    folder.mkdir()
    tf.raw_ops.SaveV2(prefix=str(folder / "ckpt"), tensor_names=["w"], shape_and_slices=[""],
                      tensors=[tf.constant([1.0, 2.0])])
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _restore_writes(target):
    return lambda tf, kernel: tf.raw_ops.SaveV2(prefix=str(target), tensor_names=["k"], shape_and_slices=[""],
                                                tensors=[kernel])


def _restore_deletes(victim):
    return lambda tf, kernel: tf.raw_ops.MergeV2Checkpoints(
        checkpoint_prefixes=[str(victim / "ckpt")], destination_prefix=str(victim.parent / "merged"),
        delete_old_dirs=True)


def _restore_reads(victim):
    return lambda tf, kernel: tf.raw_ops.RestoreV2(prefix=str(victim / "ckpt"), tensor_names=["w"],
                                                   shape_and_slices=[""], dtypes=[tf.float32])[0].op


@pytest.mark.parametrize("command", ["compress", "inspect"])
@pytest.mark.parametrize("attack,op", [(_restore_writes, "SaveV2"), (_restore_deletes, "MergeV2Checkpoints"),
                                       (_restore_reads, "RestoreV2")])
def test_tf1_saved_model_whose_restore_op_touches_other_files_is_refused(attack, op, command, cli, digits, tmp_path):
    """Loading runs saver_def.restore_op_name: a group holding a SaveV2 wrote a checkpoint
    wherever it named, MergeV2Checkpoints(delete_old_dirs) deleted another one, a RestoreV2 of
    another path read it. Refused before loading, nothing written, the victim untouched."""
    victim = tmp_path / "victim"
    original = _victim_checkpoint(victim)
    target = victim if attack is not _restore_writes else tmp_path / "planted" / "ckpt"
    model = _tf1_saved_model(tmp_path / "sm", attack(target))
    before = snapshot(tmp_path)
    _refused_as_io(cli, command, model, op, digits, tmp_path)
    assert {p.name: p.read_bytes() for p in victim.iterdir()} == original
    assert not (tmp_path / "planted").exists() and not list(tmp_path.glob("merged*"))
    assert snapshot(tmp_path) == before


def test_plain_tf1_saved_model_loads(cli, tmp_path):
    """The TF1 saver's own restore (RestoreV2 of the variables folder, then assignments) is allowed."""
    from edgekit.intake.saved_model_scan import scan_saved_model

    model = _tf1_saved_model(tmp_path / "sm")
    assert scan_saved_model(model).refused == []
    result = cli("inspect", model, "--json")
    assert result.exit_code == 0, result.output


def _keras_zip(path, members: dict, encrypted: bool = False):
    """A .keras-named zip with these members (name: bytes), every one flagged as encrypted if asked."""
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    if encrypted:  # zipfile writes no encrypted members: set the flag in both headers by hand
        raw = bytearray(path.read_bytes())
        for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            at = raw.find(signature)
            while at != -1:
                raw[at + flag_at] |= 0x1
                at = raw.find(signature, at + 4)
        path.write_bytes(bytes(raw))
    return path


CONFIG = b'{"class_name": "Sequential", "config": {"layers": []}}'
KERAS_ZIPS = {  # issue 23: exit 3 before (zipfile's RuntimeError for the encrypted member)
    "encrypted config.json": (dict(members={"config.json": CONFIG}, encrypted=True), "is encrypted"),
    "a member named '.'": (dict(members={"config.json": CONFIG, ".": b""}), "not a plain relative name"),
    "an empty member name": (dict(members={"config.json": CONFIG, "": b"x"}), "not a plain relative name"),
    "a climbing member": (dict(members={"config.json": CONFIG, "assets/../../x": b"x"}), "not a plain relative name"),
}


@pytest.mark.parametrize("command", ["compress", "inspect"])
@pytest.mark.parametrize("name", KERAS_ZIPS)
def test_keras_archives_with_odd_members_are_refused(name, command, cli, digits, tmp_path):
    spec, words = KERAS_ZIPS[name]
    model = _keras_zip(tmp_path / "m.keras", **spec)
    before = snapshot(tmp_path)
    args = [model, "--int8", "--data", digits["calib"], "-o", tmp_path / "out"] if command == "compress" else [model]
    refusal_line(cli(command, *args), ["m.keras", words])
    assert snapshot(tmp_path) == before


def test_saved_model_with_a_link_inside_is_refused(cli, tmp_path):
    """assets/m -> /proc/self/mem: TensorFlow reads what a link points at (exit 3 before)."""
    model = _tf1_saved_model(tmp_path / "sm")
    (model / "assets").mkdir(exist_ok=True)
    (model / "assets" / "m").symlink_to("/proc/self/mem")
    before = snapshot(tmp_path)
    refusal_line(cli("inspect", model), ["sm", "assets/m is a link"])
    assert snapshot(tmp_path) == before


def test_trusted_saved_model_loads(cli, tmp_path):
    model = _saved_model(tmp_path / "sm", _write_file(tmp_path / "marker.txt"))
    result = cli("inspect", model, "--trust-model", "--json")
    assert result.exit_code == 0, result.output


# --- files that lie about their size, nest too deep or are not what their name says -------------

def _npy_bytes(array) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _zip(path, members: dict, compress=True):
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _lie_about_size(path, member: str, size: int):
    """Rewrite the central-directory entry of `member` to claim `size` uncompressed bytes."""
    import struct

    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at != -1:
        name_length = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46:at + 46 + name_length] == member.encode():
            struct.pack_into("<I", data, at + 24, size)
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))
    return path


def _png_claiming(path, width, height):
    """A real 8×8 PNG whose IHDR is rewritten to claim width×height (CRC fixed up)."""
    import struct
    import zlib

    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(path)
    data = bytearray(path.read_bytes())
    struct.pack_into(">II", data, 16, width, height)  # IHDR data starts after signature(8)+len(4)+type(4)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def _npz_claiming_samples(path, samples):
    header = _npy_bytes(np.zeros((1, 8, 8, 1), np.float32))
    text = header.decode("latin1").replace("(1, 8, 8, 1)", f"({samples}, 8, 8, 1)")
    return _zip(path, {"x.npy": text.encode("latin1"), "y.npy": _npy_bytes(np.zeros(1, np.int64))})


def _data_case(name, tmp):
    """Bad --data for compress: (file, words the one error line must hold)."""
    if name == ".npy renamed .npz":
        (tmp / "data.npz").write_bytes(_npy_bytes(np.zeros((4, 8, 8, 1), np.float32)))
        return tmp / "data.npz", ["data.npz", "a single .npy array", "np.savez"]
    if name == "empty .npz":
        (tmp / "data.npz").write_bytes(b"")
        return tmp / "data.npz", ["data.npz", "it is empty"]
    if name == "text named .npz":
        (tmp / "data.npz").write_text("x,y\n1,2\n")
        return tmp / "data.npz", ["data.npz", "not a zip archive"]
    if name == "bad .npy header":
        _zip(tmp / "data.npz", {"x.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': <bad>}\n"})
        return tmp / "data.npz", ["data.npz:x.npy", "bad .npy header"]
    if name == "header claims 10^12 samples":
        _npz_claiming_samples(tmp / "data.npz", 10 ** 12)
        return tmp / "data.npz", ["data.npz", "(1000000000000, 8, 8, 1)", "the archive holds"]
    if name == "zip entry claims more than it holds":
        _lie_about_size(_zip(tmp / "data.npz", {"x.npy": _npy_bytes(np.zeros((4, 8, 8, 1), np.float32))}),
                        "x.npy", 10 ** 9)
        return tmp / "data.npz", ["data.npz", "the archive holds 1,000,000,000"]
    if name == "PNG claiming 225 MP":
        _png_claiming(tmp / "imgs" / "zero" / "bomb.png", 15000, 15000)
        return tmp / "imgs", ["bomb.png", "megapixel limit"]
    if name == "PNG claiming 100 MP":
        _png_claiming(tmp / "imgs" / "zero" / "big.png", 10000, 10000)
        return tmp / "imgs", ["big.png", "claims 10000×10000 pixels", "megapixel limit"]
    if name == "complex values":  # issue 23: cast to their real part, exit 0
        x = np.zeros((4, 8, 8, 1), np.complex64) + 1j
        np.savez(tmp / "data.npz", x=x, y=np.zeros(4, np.int64))
        return tmp / "data.npz", ["data.npz", "complex64", "expected real numbers"]
    raise AssertionError(name)


DATA_CASES = [".npy renamed .npz", "empty .npz", "text named .npz", "bad .npy header", "header claims 10^12 samples",
              "zip entry claims more than it holds", "PNG claiming 225 MP", "PNG claiming 100 MP", "complex values"]


@pytest.mark.parametrize("name", DATA_CASES)
def test_hostile_data_files(name, cli, digits, tmp_path):
    data, words = _data_case(name, tmp_path)
    before = snapshot(tmp_path)
    result = cli("compress", digits["model"], "--int8", "--data", data, "-o", tmp_path / "out")
    refusal_line(result, ["--data", *words])
    _no_traceback(result)
    assert snapshot(tmp_path) == before


def test_an_array_larger_than_memory_is_refused_before_allocation(monkeypatch, tmp_path):
    from edgekit.support import memory
    from edgekit.intake.data import read_npz_arrays
    from edgekit.errors import DataError

    np.savez(tmp_path / "d.npz", x=np.zeros((64, 64, 64), np.float32))  # 1 MiB
    monkeypatch.setattr(memory, "available_mb", lambda: 1.0)
    with pytest.raises(DataError, match="an array of 0.0 GiB does not fit"):
        read_npz_arrays(tmp_path / "d.npz", "--data", wanted=("x",))


def _config_of(path):
    import json

    import h5py

    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["model_config"])


def _h5_with_config(source, target, config=None, raw=None):
    import json
    import shutil

    import h5py

    shutil.copy(source, target)
    with h5py.File(target, "r+") as f:
        if raw is not None:
            f.attrs.create("model_config", raw[0], dtype=raw[1])
        else:
            f.attrs["model_config"] = json.dumps(config)
    return target


def _dangling_nested_functional(config):
    """The digits Sequential, with a Functional inside whose Dense reads a layer that is not there."""
    inner = {"class_name": "Functional", "config": {
        "name": "inner", "layers": [
            {"class_name": "InputLayer", "name": "in", "inbound_nodes": [],
             "config": {"name": "in", "batch_input_shape": [None, 10], "dtype": "float32"}},
            {"class_name": "Dense", "name": "d", "inbound_nodes": [[["missing", 0, 0, {}]]],
             "config": {"name": "d", "units": 10}}],
        "input_layers": [["in", 0, 0]], "output_layers": [["d", 0, 0]]}}
    config["config"]["layers"].append(inner)
    return config


def _model_case(name, tmp, digits, keras3_file):
    import h5py

    model = digits["model"]
    if name == "metadata.json nested 10^5 deep":
        _rezip(keras3_file, tmp / "m.keras", {"metadata.json": "[" * 100_000 + "]" * 100_000})
        return tmp / "m.keras", ["m.keras", "metadata.json", "not valid JSON"]
    if name == "metadata.json of 64 MiB of spaces":
        _rezip(keras3_file, tmp / "m.keras", {"metadata.json": " " * (64 << 20) + "{}"})
        return tmp / "m.keras", ["m.keras", "metadata.json inflates to over 1 MiB"]
    if name == "config.json header lies about its size":
        _lie_about_size(_rezip(keras3_file, tmp / "m.keras", {}), "config.json", 10)
        return tmp / "m.keras", ["m.keras", "truncated or corrupted"]
    if name == "Dense(units=10**12)":
        config = _config_of(model)
        config["config"]["layers"][-1]["config"]["units"] = 10 ** 12
        return _h5_with_config(model, tmp / "m.h5", config), ["m.h5", "at least 1,000,000,", "refused before building"]
    if name == "non-UTF-8 model_config (utf-8 string)":
        return _h5_with_config(model, tmp / "m.h5", raw=(b"{\xff\xfe}", h5py.string_dtype("utf-8"))), \
            ["m.h5", "UTF-8", "corrupted"]
    if name == "non-UTF-8 model_config (bytes)":
        return _h5_with_config(model, tmp / "m.h5", raw=(np.bytes_(b"{\xff\xfe}"), None)), ["m.h5", "UTF-8", "corrupted"]
    if name == "5000-digit integer in the config":
        raw = _config_text(model).replace('"units": 10', '"units": ' + "9" * 5000)
        return _h5_with_config(model, tmp / "m.h5", raw=(raw, None)), ["m.h5", "not valid JSON"]
    if name == "TFOpLambda whose function is a list":
        config = _config_of(model)
        config["config"]["layers"][-1].update(class_name="TFOpLambda")
        config["config"]["layers"][-1]["config"]["function"] = ["os.system"]
        return _h5_with_config(model, tmp / "m.h5", config), ["m.h5", "TFOpLambda", "--trust-model"]
    if name == "Functional in a Sequential with a dangling reference":
        config = _dangling_nested_functional(_config_of(model))
        return _h5_with_config(model, tmp / "m.h5", config), ["m.h5", "'missing'", "corrupted"]
    raise AssertionError(name)


def _config_text(path):
    import h5py

    with h5py.File(path, "r") as f:
        value = f.attrs["model_config"]
    return value.decode() if isinstance(value, bytes) else str(value)


def _rezip(source, target, replace: dict):
    import zipfile

    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for item in old.infolist():
            new.writestr(item.filename, replace.get(item.filename, old.read(item.filename)))
    return target


MODEL_CASES = ["metadata.json nested 10^5 deep", "metadata.json of 64 MiB of spaces",
               "config.json header lies about its size", "Dense(units=10**12)",
               "non-UTF-8 model_config (utf-8 string)", "non-UTF-8 model_config (bytes)",
               "5000-digit integer in the config", "TFOpLambda whose function is a list",
               "Functional in a Sequential with a dangling reference"]


@pytest.fixture(scope="module")
def keras3_file(tmp_path_factory):
    from edgekit.support.keras_compat import tensorflow

    tensorflow()
    import keras

    model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    path = tmp_path_factory.mktemp("k3") / "small.keras"
    model.save(path)
    return path


@pytest.mark.parametrize("name", MODEL_CASES)
@pytest.mark.parametrize("command", ["compress", "inspect"])
def test_hostile_model_files(name, command, cli, digits, keras3_file, tmp_path):
    model, words = _model_case(name, tmp_path, digits, keras3_file)
    before = snapshot(tmp_path)
    args = [model, "--int8", "--data", digits["calib"], "-o", tmp_path / "out"] if command == "compress" else [model]
    result = cli(command, *args)
    refusal_line(result, words)
    _no_traceback(result)
    assert snapshot(tmp_path) == before


# --- YAML and JSON: recipes, gate configs, device profiles, reports ----------------------------

def _text_case(name, tmp):
    if name == "nested 10^5 deep":
        return "a: " + "[" * 100_000 + "]" * 100_000, "nests too deeply"
    if name == "not UTF-8":
        return b"name: caf\xe9\n", "not UTF-8 text"
    if name == "a 5000-digit integer":
        return "calib_samples: " + "9" * 5000 + "\n", "Exceeds the limit"
    if name == "over 16 MiB":
        return "#" * (17 << 20), "over 16 MiB"
    raise AssertionError(name)


def _write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


TEXT_CASES = ["nested 10^5 deep", "not UTF-8", "a 5000-digit integer", "over 16 MiB"]


@pytest.mark.parametrize("name", TEXT_CASES)
@pytest.mark.parametrize("kind", ["recipe", "gate config", "device profile", "report"])
def test_hostile_yaml_and_json(kind, name, cli, digits, validated_run, tmp_path):
    content, why = _text_case(name, tmp_path)
    if kind == "report":
        content = content.replace("a: ", '{"a": ').replace("calib_samples: ", '{"n": ') if isinstance(content, str) else content
    path = _write(tmp_path / ("x.json" if kind == "report" else "x.yaml"), content)
    report = validated_run / "report.json"
    args = {"recipe": ["compress", digits["model"], "--recipe", path, "-o", tmp_path / "out"],
            "gate config": ["gate", report, "--baseline", report, "--config", path],
            "device profile": ["bench", validated_run / "digits.int8.tflite", "--device", path],
            "report": ["gate", path, "--baseline", report]}[kind]
    before = snapshot(tmp_path)
    result = cli(*args)
    refusal_line(result, [kind, "x.", why])
    _no_traceback(result)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("value", ["0", "-1", ".nan", ".inf"])
def test_device_profile_needs_a_positive_finite_peak(value, cli, validated_run, tmp_path):
    import yaml

    from edgekit.measure.devices import shipped_devices

    profile = yaml.safe_load(shipped_devices()["rpi4"].read_text())
    profile["peak_gmacs"]["fp32"] = "VALUE"
    path = tmp_path / "dev.yaml"
    path.write_text(yaml.safe_dump(profile).replace("VALUE", value).replace("'", ""))
    result = cli("bench", validated_run / "digits.int8.tflite", "--device", path)
    refusal_line(result, ["device profile", "dev.yaml", "peak_gmacs.fp32"])
    _no_traceback(result)


# --- paths and output targets -------------------------------------------------------------------

LONG_NAME = "n" * 300  # over NAME_MAX (255 bytes)


def _path_case(name, tmp, digits):
    """compress args whose one path is bad, and the words of the error line."""
    import os

    model, calib = digits["model"], digits["calib"]
    if name == "non-UTF-8 model name":
        bad = tmp / os.fsdecode(b"caf\xe9.h5")
        bad.write_bytes(model.read_bytes())
        return [bad, "--int8"], ["model file", "caf\\xe9.h5", "not valid UTF-8"]
    if name == "non-UTF-8 data name":
        bad = tmp / os.fsdecode(b"d\xff.npz")
        bad.write_bytes(calib.read_bytes())
        return [model, "--int8", "--data", bad], ["--data", "d\\xff.npz", "not valid UTF-8"]
    if name == "model name over 255 bytes":
        return [tmp / f"{LONG_NAME}.h5", "--int8"], ["model file", "over 255 bytes"]
    if name == "data path over 4096 bytes":
        return [model, "--int8", "--data", tmp / "/".join(["d" * 200] * 25)], ["--data", "over 4096 bytes"]
    if name == "-o name over 255 bytes":
        return [model, "--int8", "-o", tmp / LONG_NAME], ["-o", "over 255 bytes"]
    if name == "-o in a read-only place":
        return [model, "--int8", "-o", "/proc/edgekit-out"], ["-o", "/proc/edgekit-out", "cannot write in /proc"]
    if name == "-o is a file":
        (tmp / "taken").write_text("")
        return [model, "--int8", "-o", tmp / "taken"], ["taken", "is not a folder"]
    raise AssertionError(name)


PATH_CASES = ["non-UTF-8 model name", "non-UTF-8 data name", "model name over 255 bytes", "data path over 4096 bytes",
              "-o name over 255 bytes", "-o in a read-only place", "-o is a file"]


@pytest.mark.parametrize("name", PATH_CASES)
def test_bad_paths_are_named_before_any_work(name, cli, digits, tmp_path):
    args, words = _path_case(name, tmp_path, digits)
    if "-o" not in args:
        args += ["-o", tmp_path / "out"]
    before = snapshot(tmp_path)
    result = cli("compress", *args)
    refusal_line(result, words)
    _no_traceback(result)
    assert "Load" not in result.stderr  # refused before the model was even read
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("target", ["a folder", "/dev/full", "a read-only place", "a missing folder", "over 255 bytes"])
@pytest.mark.parametrize("option", ["--junit", "--summary"])
def test_gate_output_targets_are_checked_before_reading_reports(option, target, cli, validated_run, tmp_path):
    path = {"a folder": tmp_path, "/dev/full": "/dev/full", "a read-only place": "/proc/gate.xml",
            "a missing folder": tmp_path / "nope" / "gate.xml", "over 255 bytes": tmp_path / LONG_NAME}[target]
    words = {"a folder": "is not a regular file (it is a folder)", "/dev/full": "it is a device",
             "a read-only place": "cannot write in /proc", "a missing folder": "does not exist",
             "over 255 bytes": "over 255 bytes"}[target]
    report = validated_run / "report.json"
    before = snapshot(tmp_path)
    result = cli("gate", report, "--baseline", report, option, path)
    refusal_line(result, [option, words])
    _no_traceback(result)
    assert snapshot(tmp_path) == before


# --- eval runs artifacts in a supervised child --------------------------------------------------

def _endless_loop_onnx(path):
    """A valid (N, 8, 8, 1) → (N, 10) ONNX model whose Loop never stops (no trip count, cond true)."""
    import onnx
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [])])
    nodes = [
        helper.make_node("Constant", [], ["yes"], value=helper.make_tensor("yes", TensorProto.BOOL, [], [True])),
        helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])),
        helper.make_node("Loop", ["", "yes", "zero"], ["v"], body=body),
        helper.make_node("Flatten", ["x"], ["flat"]),
        helper.make_node("Constant", [], ["w"], value=helper.make_tensor(
            "w", TensorProto.FLOAT, [64, 10], np.ones(640, np.float32).tolist())),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        helper.make_node("Add", ["logits", "v"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "endless", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.heavy
def test_eval_gives_up_on_a_model_that_never_ends(cli, digits, tmp_path):
    import time

    model = _endless_loop_onnx(tmp_path / "endless.onnx")
    started = time.monotonic()
    result = cli("eval", model, "--data", digits["val"], "--timeout", "5")
    refusal_line(result, ["endless.onnx", "did not finish within 5 s", "--timeout"])
    assert time.monotonic() - started < 60
    _no_traceback(result)


def test_eval_feeds_a_static_batch_model_batches_it_takes(cli, validated_run, digits, tmp_path):
    import onnx

    model = onnx.load(validated_run / "digits.fp32.onnx")
    for tensor in (*model.graph.input, *model.graph.output):
        tensor.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, tmp_path / "batch1.onnx")
    result = cli("eval", tmp_path / "batch1.onnx", validated_run / "digits.fp32.onnx", "--data", digits["val"], "--json")
    assert result.exit_code == 0, result.output
    import json

    evaluation = json.loads(result.stdout)
    first, second = evaluation["artifacts"]
    assert first["accuracy"]["top1"] == second["accuracy"]["top1"] > 0.9
    assert list(evaluation["agreement"].values()) == [1.0]


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1"])
def test_eval_timeout_must_be_finite_and_positive(value, cli, validated_run, digits):
    result = cli("eval", validated_run / "digits.fp32.onnx", "--data", digits["val"], "--timeout", value)
    refusal_line(result, ["--timeout"])


# --- all or nothing: --force swaps the whole set -------------------------------------------------

def _old_set(out):
    out.mkdir()
    for name in ("m.fp32.tflite", "m.int8.tflite", "report.json"):
        (out / name).write_text(f"old {name}")
    (out / "notes.txt").write_text("the user's own file")
    out.chmod(0o751)


@pytest.mark.parametrize("exchange", ["renameat2", "two renames"])
def test_force_replaces_the_output_set_as_a_whole(exchange, tmp_path, monkeypatch):
    import os

    from edgekit.support import output_folders as outputs

    out = tmp_path / "out"
    _old_set(out)
    inode = os.stat(out).st_ino
    if exchange == "two renames":
        monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    with outputs.staged(out) as staging:
        for name in ("m.fp32.tflite", "report.json"):
            (staging / name).write_text(f"new {name}")
    assert os.stat(out).st_ino != inode  # one rename put the new folder in place, not file moves
    assert {p.name: p.read_text() for p in out.iterdir()} == {
        "m.fp32.tflite": "new m.fp32.tflite", "report.json": "new report.json",
        "m.int8.tflite": "old m.int8.tflite", "notes.txt": "the user's own file"}  # others carried over
    assert oct(out.stat().st_mode & 0o777) == oct(0o751)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or old folder left


def test_a_failed_run_leaves_the_old_set_untouched(tmp_path):
    from edgekit.support import output_folders as outputs

    out = tmp_path / "out"
    _old_set(out)
    before = snapshot(tmp_path)
    with pytest.raises(RuntimeError):
        with outputs.staged(out) as staging:
            (staging / "m.fp32.tflite").write_text("new")
            raise RuntimeError("the export failed")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["eval", "bench"])
def test_openvino_xml_without_its_bin_says_so(command, cli, validated_run, digits, tmp_path):
    lonely = tmp_path / "digits.xml"
    lonely.write_text('<?xml version="1.0"?><net name="digits" version="11"><layers/></net>')
    args = ["--data", digits["val"]] if command == "eval" else []
    result = cli(command, lonely, *args)
    refusal_line(result, ["digits.xml needs its weights beside it", "digits.bin does not exist"])
    assert "Exception from" not in result.stderr
