"""The sweep's pure parts: grid parsing and expansion, fronts and picks, archives."""

from __future__ import annotations

import io
import tarfile
from types import SimpleNamespace

import pytest

from edgekit.errors import InputError
from edgekit.sweeps.pareto import analyse, front, pick
from edgekit.sweeps.plan import expand, parse_grid, parse_recipes
from edgekit.sweeps.ray_engine import pack, replace_folder, unpack


def test_grid_multiplies_only_the_recipes_that_have_the_key():
    choices = parse_recipes("int8,fp16,prune50-int8,qat-int8")
    cells = expand(choices, parse_grid(["sparsity=0.3,0.6", "calib_samples=100,500"]), {}, "inputs")
    names = [c.name for c in cells]
    # int8: calib × 2; fp16: once; prune50-int8: sparsity × calib = 4; qat-int8 (int8): calib × 2
    assert names == ["int8 calib_samples=100", "int8 calib_samples=500", "fp16",
                     "prune50-int8 sparsity=0.3 calib_samples=100", "prune50-int8 sparsity=0.3 calib_samples=500",
                     "prune50-int8 sparsity=0.6 calib_samples=100", "prune50-int8 sparsity=0.6 calib_samples=500",
                     "qat-int8 calib_samples=100", "qat-int8 calib_samples=500"]
    prune = cells[5]
    assert prune.recipe.prune.sparsity == 0.6 and prune.recipe.calib_samples == 100
    assert len({c.key for c in cells}) == len(cells) and len({c.folder for c in cells}) == len(cells)
    # the key is the inputs and the resolved recipe: the same plan on other inputs is other cells
    again = expand(choices, parse_grid(["sparsity=0.3,0.6 calib_samples=100,500"]), {}, "other inputs")
    assert [c.name for c in again] == names and not {c.key for c in again} & {c.key for c in cells}


def test_one_space_separated_grid_value_and_repeated_values():
    assert parse_grid(["sparsity=0.3,0.5,0.3 epochs=1,2"]) == {"sparsity": [0.3, 0.5], "epochs": [1, 2]}


def test_formats_narrow_each_recipe_and_two_names_for_one_pipeline_are_one_cell(tmp_path):
    twin = tmp_path / "my-int8.yaml"
    twin.write_text("name: mine\ndescription: the same pipeline\nint8: true\naccuracy_tolerance: 1.0\n")
    cells = expand(parse_recipes(f"int8,{twin},edgetpu"), {}, {"formats": ["onnx"]}, "inputs")
    assert [c.name for c in cells] == ["int8", "edgetpu"]  # my-int8 resolves to int8's pipeline
    assert cells[0].recipe.formats == ["onnx"] and cells[1].recipe.formats == ["tflite"]  # edgetpu keeps its own


def test_a_recipe_file_that_does_not_validate_is_a_cell_with_its_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("int8: [1, 2]\n")
    (cell,) = expand(parse_recipes(str(bad)), {}, {}, "inputs")
    assert cell.recipe is None and cell.name == "bad" and "int8" in cell.error
    with pytest.raises(InputError, match="no such file or shipped recipe"):
        parse_recipes(str(tmp_path / "missing.yaml"))


def _point(pid, top1, ms, size=100, device="host"):
    return {"id": pid, "top1": top1, "size_bytes": size, "devices": {device: {"latency_ms": ms}}}


def test_front_keeps_only_undominated_points_fastest_first():
    points = [_point("a", 0.97, 2.0), _point("b", 0.96, 1.0), _point("c", 0.95, 1.5), _point("d", 0.97, 2.0, 50),
              _point("e", 0.90, 0.5)]
    assert front(points, "host") == ["e", "b", "a", "d"]  # c: b is faster and more accurate
    assert front(points, "host", with_size=True) == ["e", "b", "d"]  # d: as good as a, and smaller


def test_pick_is_the_fastest_within_budget_and_noise_does_not_choose():
    points = [_point("fast-bad", 0.90, 0.5), _point("int8", 0.968, 1.00), _point("pruned", 0.965, 0.99),
              _point("fp32", 0.97, 2.0)]
    assert pick(points, "host", 0.96)["id"] == "int8"  # 1% slower than pruned: a tie, won by top-1
    points[2]["devices"]["host"]["latency_ms"] = 0.9  # 10% faster: a real difference
    assert pick(points, "host", 0.96)["id"] == "pruned"
    assert pick(points, "host", 0.99) is None


def test_analyse_says_why_a_device_has_no_pick():
    device = SimpleNamespace(name="coral", title="Coral", kind="npu")
    points = [{"id": "x", "top1": 0.9, "size_bytes": 1, "devices": {"coral": {"incompatible": "float32 I/O"}}}]
    (entry,) = analyse(points, [device], 0.95, 1.0)
    assert entry["pick"] is None and "none of the 1 artifacts runs there (e.g. x: float32 I/O)" == entry["why_no_pick"]
    points[0]["devices"]["coral"] = {"latency_ms": 1.0, "estimated": True}
    (entry,) = analyse(points, [device], 0.95, 1.0)
    assert entry["latency"] == "estimated" and "floor is 94.00%" in entry["why_no_pick"]


def test_a_pick_whose_estimated_band_overlaps_another_says_so():
    """Two estimates 10 ms and 12 ms, each likely ±30%: the pick is 10 ms, and it says the
    estimate cannot tell it from 12 ms; a point well apart (30 ms) is not named (issue 25)."""
    device = SimpleNamespace(name="rpi4", title="Pi 4", kind="cpu")
    points = [_point(pid, 0.97, ms, device="rpi4") for pid, ms in (("int8", 10.0), ("fp16", 12.0), ("fp32", 30.0))]
    for point in points:
        ms = point["devices"]["rpi4"]["latency_ms"]
        point["devices"]["rpi4"].update(estimated=True, likely_ms=[ms * 0.7, ms * 1.3])
    (entry,) = analyse(points, [device], 0.97, 1.0)
    assert entry["pick"] == "int8" and entry["pick_overlaps"] == ["fp16"]
    for point in points:  # measured latencies carry no band: nothing to overlap
        del point["devices"]["rpi4"]["likely_ms"]
    assert analyse(points, [device], 0.97, 1.0)[0]["pick_overlaps"] == []


def test_archives_round_trip_and_hostile_ones_are_refused(tmp_path):
    cell = tmp_path / "cell"
    cell.mkdir()
    (cell / "report.json").write_text("{}")
    store = tmp_path / "store"
    store.mkdir()
    replace_folder(store / "cell", pack(cell))
    assert (store / "cell" / "report.json").read_text() == "{}"
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as archive:
        info = tarfile.TarInfo("cell/../../escaped")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(InputError, match="not inside the cell's folder"):
        unpack(evil.getvalue(), tmp_path / "in")
    assert not (tmp_path / "escaped").exists()
    two = io.BytesIO()
    with tarfile.open(fileobj=two, mode="w") as archive:
        for name in ("a", "b"):
            info = tarfile.TarInfo(name)
            archive.addfile(info, io.BytesIO(b""))
    with pytest.raises(InputError, match="2 top-level entries"):
        unpack(two.getvalue(), tmp_path / "two")


def test_ray_flag_alone_and_with_an_address():
    from edgekit.cli import ray_flag_alone

    assert ray_flag_alone(["sweep", "m.h5", "--ray"]) == ["sweep", "m.h5", "--ray="]
    assert ray_flag_alone(["sweep", "--ray", "m.h5", "--val", "v"]) == ["sweep", "--ray=", "m.h5", "--val", "v"]
    assert ray_flag_alone(["sweep", "m.h5", "--ray", "10.0.0.1:6379"]) == ["sweep", "m.h5", "--ray", "10.0.0.1:6379"]
    assert ray_flag_alone(["sweep", "m.h5", "--ray", "auto", "-q"]) == ["sweep", "m.h5", "--ray", "auto", "-q"]
    assert ray_flag_alone(["sweep", "m.h5", "--", "--ray"]) == ["sweep", "m.h5", "--", "--ray"]


def test_archives_are_checked_by_hand_where_tarfile_has_no_data_filter(tmp_path, monkeypatch):
    monkeypatch.delattr(tarfile, "data_filter")
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as archive:
        link = tarfile.TarInfo("cell/passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    with pytest.raises(InputError, match="not a plain file"):
        unpack(evil.getvalue(), tmp_path / "in")
    assert not (tmp_path / "in" / "cell" / "passwd").exists()
    cell = tmp_path / "cell"
    cell.mkdir()
    (cell / "a.tflite").write_bytes(b"x")
    assert (unpack(pack(cell), tmp_path / "ok") / "a.tflite").read_bytes() == b"x"


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b"[" * 100_000, b"{not json", b"[1, 2]", None])
def test_a_damaged_cell_record_is_no_record(tmp_path, content):
    from edgekit.sweeps.cell import read_record

    if content is None:
        (tmp_path / "cell.json").mkdir()  # not even a file
    else:
        (tmp_path / "cell.json").write_bytes(content)
    assert read_record(tmp_path) is None


def test_a_cell_s_own_bug_keeps_its_traceback_and_edgekit_errors_keep_their_exit_code():
    from edgekit.errors import GateFailure, ModelError, StageFailure
    from edgekit.sweeps.cell import _failure

    try:
        {}["missing"]
    except KeyError as exc:
        bug = _failure(exc)
    assert bug["exit_code"] == 3 and bug["error"].startswith("internal error: KeyError")
    assert "test_sweep_parts.py" in bug["error"] and "Traceback" in bug["traceback"]
    assert _failure(ModelError("m.h5: not a model")) == {"status": "failed", "error": "m.h5: not a model",
                                                         "exit_code": 2}
    # past the accuracy tolerance with its files written: a usable cell, and exit 1 as compress gives
    assert _failure(GateFailure("int8 lost 2 points", report={"artifacts": []})) == {
        "note": "int8 lost 2 points", "exit_code": 1}
    # a stage that stopped the run before anything was written: a failed cell
    assert _failure(StageFailure("pruning kept 15%"))["status"] == "failed"


def test_sweep_pages_show_an_estimate_with_its_band_and_a_measurement_without():
    from edgekit.sweeps.render import _latency

    assert _latency({"latency_ms": 12.1, "estimated": True, "likely_ms": [9.0, 16.0]}) == \
        "12.1 ms (estimate, likely 9–16)"
    assert _latency({"latency_ms": 0.5, "measured": True}) == "0.5 ms"
    assert _latency({"incompatible": "float32 I/O"}) == "cannot run: float32 I/O"
