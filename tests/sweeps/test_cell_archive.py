"""Cell archives coming back from Ray tasks (sweeps/ray_engine.unpack, replace_folder): only
the cell's own folder of plain files and folders, within a size a cell can write."""

from __future__ import annotations

import io
import tarfile

import pytest

from edgekit.errors import InputError
from edgekit.sweeps.ray_engine import pack, replace_folder, unpack


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


HOSTILE = {
    "symlink to the store": (_tar(_link("cell", ".")), "not a plain file"),
    "symlink inside": (_tar(_file("cell/report.json"), _link("cell/evil", "/etc/passwd")), "not a plain file"),
    "hard link": (_tar(_file("cell/a"), _link("cell/b", "cell/a", tarfile.LNKTYPE)), "not a plain file"),
    "dot as the entry": (_tar(_file("./report.json")), "not inside the cell's folder"),
    "empty name": (_tar(_file("")), "not inside the cell's folder"),
    "absolute member": (_tar(_file("/tmp/edgekit-planted")), "not inside the cell's folder"),
    "climbing member": (_tar(_file("cell/../../planted")), "not inside the cell's folder"),
    "two entries": (_tar(_file("cell/a"), _file("other/b")), "2 top-level entries"),
    "another folder's name": (_tar(_file("other/report.json")), "not the cell's folder alone"),
    "too big": (_tar(_file("cell/big.bin", b"0" * 4096)), "over the 1,000 a cell can write"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_cell_archive_is_refused_and_the_store_is_untouched(name, tmp_path):
    blob, words = HOSTILE[name]
    store = tmp_path / "store"
    cell = store / "cell"
    cell.mkdir(parents=True)
    (cell / "report.json").write_text("old\n")
    with pytest.raises(InputError, match=words.replace("(", r"\(")):
        replace_folder(cell, blob, max_bytes=1000)
    assert sorted(p.name for p in store.iterdir()) == ["cell"]  # no .incoming or .old debris
    assert (cell / "report.json").read_text() == "old\n" and not cell.is_symlink()
    assert not (tmp_path / "planted").exists()


def test_a_cell_archive_replaces_the_folder_and_a_planted_link_in_the_store(tmp_path):
    made = tmp_path / "made" / "cell"
    made.mkdir(parents=True)
    (made / "report.json").write_text("new\n")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious\n")
    store = tmp_path / "store"
    store.mkdir()
    (store / "cell").symlink_to(victim)  # a link planted where the cell's folder goes
    replace_folder(store / "cell", pack(made), max_bytes=1 << 20)
    assert not (store / "cell").is_symlink() and (store / "cell" / "report.json").read_text() == "new\n"
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in store.iterdir()) == ["cell"]


def test_unpack_without_an_expected_name_still_takes_one_plain_entry(tmp_path):
    assert unpack(_tar(_file("data.npz", b"abc")), tmp_path / "in").read_bytes() == b"abc"


def _image_folder_with_links(root):
    """Class folders of PNGs where one image is a relative link out of the folder, one class
    folder is a link, and one class is empty (it keeps its index)."""
    import numpy as np
    from PIL import Image

    outside = root / "outside"
    (outside / "cls_b").mkdir(parents=True)
    folder = root / "images"
    for i, cls in enumerate(("cls_a", "cls_c", "cls_d")):
        (folder / cls).mkdir(parents=True)
        if cls != "cls_d":
            Image.fromarray(np.full((8, 8), 40 * i + 10, np.uint8), mode="L").save(folder / cls / "1.png")
    Image.fromarray(np.full((8, 8), 200, np.uint8), mode="L").save(outside / "far.png")
    Image.fromarray(np.full((8, 8), 90, np.uint8), mode="L").save(outside / "cls_b" / "2.png")
    (folder / "cls_a" / "2.png").symlink_to("../../outside/far.png")  # relative, climbing out
    (folder / "cls_b").symlink_to(outside / "cls_b", target_is_directory=True)
    return folder


def test_a_data_folder_ships_to_ray_as_the_local_cells_read_it(tmp_path):
    """Issue 23: the local pool followed a relative link in an image folder, Ray's tar kept the
    link (then refused it): exit 0 locally, exit 1 on Ray. Ray now ships what the reader lists."""
    import numpy as np

    from edgekit.intake.data import load_dataset
    from edgekit.sweeps.ray_engine import pack_input

    folder = _image_folder_with_links(tmp_path)
    here = load_dataset(folder, (8, 8, 1), None, "--val")
    shipped = unpack(pack_input("val", folder), tmp_path / "task")
    there = load_dataset(shipped, (8, 8, 1), None, "--val")
    assert here.class_names == there.class_names == ["cls_a", "cls_b", "cls_c", "cls_d"]
    assert len(here) == 4 and np.array_equal(here.y, there.y) and np.array_equal(here.x, there.x)
    assert not any(p.is_symlink() for p in shipped.rglob("*"))
