from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgekit.intake.data import apply_preprocess, default_preprocess, load_dataset
from edgekit.errors import DataError


def test_preprocess_modes():
    x = np.array([0.0, 127.5, 255.0], np.float32)
    assert apply_preprocess(x, "unit").tolist() == [0.0, 0.5, 1.0]
    assert apply_preprocess(x, "symmetric").tolist() == [-1.0, 0.0, 1.0]
    assert apply_preprocess(x, "none").tolist() == x.tolist()


def test_default_preprocess_by_source(tmp_path):
    assert default_preprocess(tmp_path / "a.npz") == "none"
    assert default_preprocess(tmp_path) == "unit"


def test_folder_classes_sorted_resized_and_scaled(tmp_path):
    for cls, value in (("b_dog", 200), ("a_cat", 100)):
        (tmp_path / cls).mkdir()
        Image.fromarray(np.full((20, 30, 3), value, np.uint8)).save(tmp_path / cls / "1.png")
    (tmp_path / "a_cat" / "notes.txt").write_text("ignored")
    ds = load_dataset(tmp_path, (10, 12, 3), None, "--data")
    assert ds.class_names == ["a_cat", "b_dog"]
    assert ds.x.shape == (2, 10, 12, 3) and ds.x.dtype == np.float32
    assert ds.y.tolist() == [0, 1]
    assert np.allclose(ds.x[0], 100 / 255) and np.allclose(ds.x[1], 200 / 255)


def test_greyscale_images_feed_rgb_model(tmp_path):
    (tmp_path / "c").mkdir()
    Image.fromarray(np.full((8, 8), 51, np.uint8), mode="L").save(tmp_path / "c" / "g.png")
    ds = load_dataset(tmp_path, (8, 8, 3), "none", "--data")
    assert ds.x.shape == (1, 8, 8, 3) and np.all(ds.x == 51)


def test_npz_without_channel_axis_for_greyscale(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((5, 8, 8), np.uint8), y=np.arange(5))
    ds = load_dataset(tmp_path / "d.npz", (8, 8, 1), None, "--val", need_labels=True)
    assert ds.x.shape == (5, 8, 8, 1) and ds.preprocess == "none"


def test_npz_objects_are_refused(tmp_path):
    np.savez(tmp_path / "o.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="object arrays are refused"):
        load_dataset(tmp_path / "o.npz", (8, 8, 1), None, "--data")


def test_val_needs_labels(tmp_path):
    np.savez(tmp_path / "v.npz", x=np.zeros((3, 8, 8, 1), np.float32))
    with pytest.raises(DataError, match="no labels"):
        load_dataset(tmp_path / "v.npz", (8, 8, 1), None, "--val", need_labels=True)


def test_labels_must_match_samples(tmp_path):
    np.savez(tmp_path / "v.npz", x=np.zeros((3, 8, 8, 1), np.float32), y=np.zeros(2, np.int64))
    with pytest.raises(DataError, match="one integer class index per sample"):
        load_dataset(tmp_path / "v.npz", (8, 8, 1), None, "--val")


def test_subset_is_seeded_and_bounded(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.arange(100 * 4, dtype=np.float32).reshape(100, 2, 2, 1), y=np.arange(100))
    ds = load_dataset(tmp_path / "d.npz", (2, 2, 1), None, "--data")
    a, b, c = ds.subset(10, seed=1), ds.subset(10, seed=1), ds.subset(10, seed=2)
    assert len(a) == 10 and a.y.tolist() == b.y.tolist() and a.y.tolist() != c.y.tolist()
    assert np.array_equal(a.x[:, 0, 0, 0], a.y * 4)  # x and y stay paired
    assert ds.subset(500, seed=0) is ds
