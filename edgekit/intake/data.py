"""Calibration and validation data: image folders or .npz files → float32 NHWC arrays.

An image folder has one sub-folder per class; sorted names give the class index, as Keras'
`image_dataset_from_directory` does. An .npz holds `x` (N, H, W, C) and `y` (N,), read with
allow_pickle=False.
"""

from __future__ import annotations

import math
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.errors import DataError, check_path_name, regular_file

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
PREPROCESS_CHOICES = ("unit", "symmetric", "none")
MAX_IMAGE_PIXELS = 64_000_000  # a 64 MP photo is already far beyond any classifier's input
# PIL mode to decode into, per model channel count. Grey images feed a 3-channel model as
# Keras does (replicated); colour images are refused by a 1-channel model rather than
# silently converted, since that changes what the model sees.
_PIL_MODE = {1: "L", 3: "RGB", 4: "RGBA"}
_COLOUR_MODES = {"RGB", "RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV"}


@dataclass
class Dataset:
    x: np.ndarray  # float32, (N, H, W, C), preprocessed
    y: np.ndarray | None  # int64 class indices, or None when unlabelled
    source: Path
    preprocess: str
    class_names: list[str] | None = None
    notes: list[str] = field(default_factory=list)  # what was done to the data for the user

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, n: int, seed: int) -> "Dataset":
        """A seeded random subset of at most n samples (the calibration set)."""
        if n >= len(self):
            return self
        idx = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        y = None if self.y is None else self.y[idx]
        return Dataset(self.x[idx], y, self.source, self.preprocess, self.class_names, self.notes)


def default_preprocess(path: Path) -> str:
    """Image folders hold 0..255 pixels (scale to 0..1); an .npz is taken as already prepared."""
    return "none" if Path(path).suffix.lower() == ".npz" else "unit"


def apply_preprocess(x: np.ndarray, mode: str) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    if mode == "unit":
        return x / 255.0
    if mode == "symmetric":
        return x / 127.5 - 1.0
    if mode == "none":
        return x
    raise DataError(f"--preprocess {mode!r} is not one of: {', '.join(PREPROCESS_CHOICES)}")


def load_dataset(path: Path, image_shape: tuple[int, int, int], preprocess: str | None,
                 option: str, need_labels: bool = False) -> Dataset:
    """Load data for a model with input (H, W, C). `option` names the CLI flag for messages."""
    path = Path(path)
    mode = preprocess or default_preprocess(path)
    if mode not in PREPROCESS_CHOICES:
        raise DataError(f"--preprocess {mode!r} is not one of: {', '.join(PREPROCESS_CHOICES)}")
    check_data_path(path, option)
    notes: list[str] = []
    if path.is_dir():
        x, y, names, sizes = _read_image_folder(path, image_shape, option)
        resized = sorted(f"{w}×{h}" for w, h in sizes if (h, w) != tuple(image_shape[:2]))
        if resized:
            notes.append(f"{option}: images of {', '.join(resized[:3])}{' …' if len(resized) > 3 else ''} were resized "
                         f"to the model's {image_shape[1]}×{image_shape[0]}")
    else:
        x, y = _read_npz(path, image_shape, option)
        names = None
    if need_labels and y is None:
        raise DataError(f"{option} {path} has no labels (array `y`); validation needs them")
    _check_finite(x, path, option)
    return Dataset(apply_preprocess(x, mode), y, path, mode, names, notes)


def check_data_path(path: Path, option: str) -> None:
    """A data path that can be read: checked before the model is loaded, and again on reading."""
    path = Path(path)
    check_path_name(path, option, DataError)
    if not path.exists():
        raise DataError(f"{option} {path} does not exist; pass an image folder or an .npz file")
    if not path.is_dir():
        if path.suffix.lower() != ".npz":
            raise DataError(f"{option} {path} is neither a folder of class sub-folders nor an .npz file")
        regular_file(path, option, DataError)


def _check_finite(x: np.ndarray, path: Path, option: str) -> None:
    """NaN or Inf in the inputs poisons calibration ranges and is later blamed on the export."""
    if np.issubdtype(x.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1)))
        if bad:
            raise DataError(f"{option} {path}: {bad} of {len(x)} samples hold NaN or Inf; remove or fix them")


def check_varied(ds: Dataset, option: str) -> None:
    """Calibration measures the range each activation takes: samples that are all the same image
    give every range a width of zero, and an int8 file that is only right on that image."""
    if len(ds) and np.all(ds.x == ds.x[:1]):
        raise DataError(f"{option} {ds.source}: all {len(ds)} calibration samples are the same image; "
                        "calibrate on real, varied inputs")


def check_labels(ds: Dataset, num_classes: int, option: str) -> None:
    """Labels are class indices 0 … num_classes-1 (a -1 is not "the last class")."""
    if ds.y is not None and len(ds.y) and (ds.y.min() < 0 or ds.y.max() >= num_classes):
        raise DataError(f"{option} {ds.source}: labels run from {ds.y.min()} to {ds.y.max()} but the model has "
                        f"{num_classes} classes (0 … {num_classes - 1})")


def _read_npz(path: Path, image_shape, option: str):
    arrays = read_npz_arrays(path, option, wanted=("x", "y"))
    if "x" not in arrays:
        found = ", ".join(sorted(arrays["names"])) or "none"
        raise DataError(
            f"{option} {path} has no array `x` (found: {found}); save it with np.savez(path, x=images, y=labels)"
        )
    x, y = arrays["x"], arrays.get("y")
    if x.ndim == 3 and image_shape[-1] == 1:
        x = x[..., None]
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(image_shape):
        raise DataError(
            f"{option} {path}: `x` has shape {tuple(x.shape)} but the model takes (N, {', '.join(map(str, image_shape))}); "
            "resize the images to the model's input"
        )
    if len(x) == 0:
        raise DataError(f"{option} {path}: `x` holds no samples")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        # complex values were cast to their real part without a word
        raise DataError(f"{option} {path}: `x` has dtype {x.dtype}, expected real numbers (integers or floats)")
    if y is not None:
        y = np.asarray(y).reshape(-1)
        if len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise DataError(
                f"{option} {path}: `y` must hold one integer class index per sample "
                f"(got shape {y.shape}, dtype {y.dtype} for {len(x)} samples)"
            )
        if np.issubdtype(y.dtype, np.unsignedinteger) and len(y) and y.max() > np.iinfo(np.int64).max:
            raise DataError(f"{option} {path}: `y` holds class indices up to {y.max()}, beyond any class")
        y = y.astype(np.int64)
    return x, y


# --- .npz: every claim of the file checked before memory is allocated for it ------------------

NPY_MAGIC = b"\x93NUMPY"


def read_npz_arrays(path: Path, option: str, wanted: tuple[str, ...]) -> dict:
    """The wanted arrays of an .npz, plus "names" (every array in it). Each array's header is read
    first and its claimed size checked against the archive and the free memory, so a header
    that claims 10^12 samples is refused, not allocated; object (pickle) arrays are refused."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name[:-4]: name for name in archive.namelist() if name.endswith(".npy")}
            arrays: dict = {"names": list(members)}
            for key in wanted:
                if key in members:
                    arrays[key] = _read_npy_member(archive, members[key], path, option)
            return arrays
    except zipfile.BadZipFile as exc:
        raise DataError(_not_npz(path, option, exc)) from None
    except (OSError, EOFError, ValueError, zipfile.LargeZipFile, NotImplementedError) as exc:
        raise DataError(f"{option} {path} is not a readable .npz ({exc}); it is truncated or corrupted") from None


def _not_npz(path: Path, option: str, exc: Exception) -> str:
    with open(path, "rb") as f:
        head = f.read(len(NPY_MAGIC))
    what = "a single .npy array" if head == NPY_MAGIC else "empty" if not head else "not a zip archive"
    return (f"{option} {path} is not an .npz: it is {what} ({exc}); "
            "save the data with np.savez(path, x=images, y=labels)")


def _read_npy_member(archive: zipfile.ZipFile, name: str, path: Path, option: str) -> np.ndarray:
    info = archive.getinfo(name)
    with archive.open(info) as member:
        shape, fortran, dtype, header_bytes = _npy_header(member, f"{path}:{name}", option)
    claimed = header_bytes + math.prod(shape) * dtype.itemsize
    if claimed != info.file_size:
        raise DataError(f"{option} {path}: array {name[:-4]}'s header claims shape {shape} of {dtype} "
                        f"({claimed:,} bytes) but the archive holds {info.file_size:,}; the file is corrupted")
    _check_room(claimed, path, option)
    with archive.open(info) as member:
        return np.lib.format.read_array(member, allow_pickle=False)


def _npy_header(stream, where: str, option: str):
    try:
        version = np.lib.format.read_magic(stream)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(stream)
    except Exception as exc:  # noqa: BLE001 - numpy parses the header as Python literals: any error
        # of that parser (ValueError, SyntaxError, tokenize.TokenError, …) means a bad header
        raise DataError(f"{option} {where} has a bad .npy header ({exc}); the file is corrupted") from None
    if dtype.hasobject:
        raise DataError(f"{option} {where} holds Python objects (dtype {dtype}); object arrays are refused "
                        "(they need pickle, which runs code)")
    return shape, fortran, dtype, stream.tell()


def _check_room(claimed: int, path: Path, option: str) -> None:
    from edgekit.support.memory import available_mb

    room = available_mb() * (1 << 20)
    if claimed > room / 2:  # it is converted to float32 after loading: leave room for the copy
        raise DataError(f"{option} {path}: an array of {claimed / (1 << 30):,.1f} GiB does not fit in the "
                        f"{room / (1 << 30):,.1f} GiB of memory available; pass a smaller subset")


def _class_folders(path: Path, option: str) -> list[Path]:
    classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(
            f"{option} {path} has no class sub-folders; put the images in one folder per class, e.g. {path}/cat/1.png"
        )
    return classes


def image_folder_listing(path: Path, option: str) -> tuple[list[Path], list[tuple[int, Path]]]:
    """The class folders (empty ones too: they keep their index) and every image file as
    (class index, path), links followed as any reader would. One listing for every reader: the
    cells, the sweep's driver check and what a Ray sweep ships, so they all see the same data."""
    classes = _class_folders(path, option)
    files = []
    for index, folder in enumerate(classes):
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                regular_file(file, option, DataError)  # a FIFO named x.png would hang the decoder
                files.append((index, file))
    if not files:
        raise DataError(
            f"{option} {path} has class sub-folders but no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return classes, files


@contextmanager
def _opened_image(file: Path, option: str):
    """A PIL image whose header passed the pixel limit; decoding errors become DataError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # _check_pixels decides
            img = Image.open(file)  # reads the header only; pixels are decoded by the caller
        with img:
            _check_pixels(img.size, file, option)
            yield img
    except Image.DecompressionBombError:
        raise DataError(_too_many_pixels(file, option)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{option}: {file} is not a readable image ({exc})") from None


def _read_image_folder(path: Path, image_shape, option: str):
    from PIL import Image

    height, width, channels = image_shape
    if channels not in _PIL_MODE:
        raise DataError(
            f"{option} {path}: the model takes {channels}-channel input, which image files cannot supply; "
            "pass an .npz with x of shape (N, H, W, C)"
        )
    images, labels, sizes = [], [], set()
    classes, files = image_folder_listing(path, option)
    for index, file in files:
        with _opened_image(file, option) as img:
            sizes.add(img.size)
            _check_channels(img.mode, channels, file, option)
            img = img.convert(_PIL_MODE[channels]).resize((width, height), Image.BILINEAR)
            array = np.asarray(img, dtype=np.float32)
        images.append(array.reshape(height, width, channels))
        labels.append(index)
    return np.stack(images), np.asarray(labels, dtype=np.int64), [c.name for c in classes], sizes


def _check_pixels(size: tuple[int, int], file: Path, option: str) -> None:
    """A header can claim any size; a 15000×15000 PNG of a few KB would decode to 675 MB."""
    if size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise DataError(_too_many_pixels(file, option, size))


def _too_many_pixels(file: Path, option: str, size: tuple[int, int] | None = None) -> str:
    claimed = f" claims {size[0]}×{size[1]} pixels," if size else ""
    return (f"{option}: {file}{claimed} over the {MAX_IMAGE_PIXELS // 10**6} megapixel limit for one image "
            "(a decompression bomb, or a photo far larger than any classifier input); resize it first")


def _check_channels(mode: str, channels: int, file: Path, option: str) -> None:
    if channels == 1 and mode in _COLOUR_MODES:
        raise DataError(
            f"{option}: {file} is a colour image ({mode}) but the model takes 1-channel (greyscale) input; "
            "convert the images to greyscale"
        )
    if channels == 4 and mode not in {"RGBA", "P"}:
        raise DataError(
            f"{option}: {file} has no alpha channel ({mode}) but the model takes 4-channel input"
        )
