"""A user's own images: a folder, a .zip (from the CLI and uploaded to the service) or a CSV of paths, and every
refusal naming its file (real files, the real registry)."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ptft_core.data import DataError, dataset_info, load_split
from ptft_core.data.images import decode_split
from ptft_core.data.registry import register_user_dataset
from ptft_core.data.user_images import MAX_IMAGE_BYTES, MAX_STORED_SIDE, read_user_images


def png(value: int, size=(12, 12), mode: str = "L") -> bytes:
    out = io.BytesIO()
    colour = value if mode == "L" else (value, 255 - value, 0)
    Image.new(mode, size, colour).save(out, format="PNG")
    return out.getvalue()


def image_folder(root: Path, classes: dict[str, int], mode: str = "L") -> Path:
    """`n` images per class folder, each a flat image of its own grey level."""
    for name, n in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            (root / name / f"{i:03d}.png").write_bytes(png(10 * i, mode=mode))
    return root


def zipped(folder: Path, target: Path, wrap: str = "") -> Path:
    with zipfile.ZipFile(target, "w") as zf:
        for file in sorted(folder.rglob("*")):
            zf.write(file, f"{wrap}{file.relative_to(folder)}")
    return target


def test_a_folder_of_class_folders_becomes_a_labelled_image_set(home, tmp_path):
    folder = image_folder(tmp_path / "pets", {"dog": 8, "cat": 7})
    (folder / ".DS_Store").write_bytes(b"junk")  # a dot file is no data
    info = register_user_dataset("pets", folder)
    assert info.modality == "image" and info.label_names == ["cat", "dog"] and info.total_rows == 15
    assert info.image_size == 12 and not info.builtin and info.kind == "labelled"
    frames = [load_split("pets", split) for split in ("train", "validation", "test")]
    grey = np.concatenate([decode_split(f, 12)[:, 0, 0, 0] for f in frames])
    labels = np.concatenate([f["label"].to_numpy() for f in frames])
    assert sorted(zip(labels.tolist(), grey.tolist(), strict=True)) == sorted(
        [(0, 10 * i) for i in range(7)] + [(1, 10 * i) for i in range(8)])  # every image once, with its class


def test_a_zip_with_or_without_a_wrapping_folder_and_a_csv_of_paths(home, tmp_path):
    folder = image_folder(tmp_path / "shapes", {"a": 6, "b": 6}, mode="RGB")
    for name, wrap in (("flat", ""), ("wrapped", "shapes/")):
        info = register_user_dataset(name, zipped(folder, tmp_path / f"{name}.zip", wrap))
        assert info.label_names == ["a", "b"] and info.total_rows == 12
    rows = "\n".join(f"{c}/{i:03d}.png,{c}" for c in "ab" for i in range(6))
    (folder / "list.csv").write_text(f"path,kind\n{rows}\n")
    info = register_user_dataset("listed", folder / "list.csv", label_column="kind", image_column="path")
    assert info.label_names == ["a", "b"] and info.total_rows == 12 and info.modality == "image"
    assert decode_split(load_split("listed", "train"), 12, channels=3).shape[1] == 3


def test_large_images_are_stored_at_most_256_a_side(tmp_path):
    folder = tmp_path / "big"
    for label in ("x", "y"):
        (folder / label).mkdir(parents=True)
        (folder / label / "1.png").write_bytes(png(7, size=(600, 300)))
    frame = read_user_images(folder)
    with Image.open(io.BytesIO(frame["image"][0])) as stored:
        assert stored.size == (MAX_STORED_SIDE, MAX_STORED_SIDE // 2)
    assert frame.attrs["image_size"] is None and frame.attrs["channels"] == 1


@pytest.mark.parametrize("case, expected", [
    ("not an image", r"cat/notes\.png: not an image Pillow can read"),
    ("mixed modes", r"dog/000\.png: a colour image among grey ones \(first: .*cat/000\.png\)"),
    ("one class", r"1 class \(cat\); a classifier needs at least 2"),
    ("empty class", r"class folder 'dog' holds no image"),
    ("loose file", r"readme\.txt: a file beside the class folders"),
    ("oversized", r"cat/huge\.png: 20,971,521 bytes, over the 20,971,520"),
])
def test_a_bad_folder_is_refused_with_the_file_named(home, tmp_path, case, expected):
    folder = image_folder(tmp_path / "bad", {"cat": 3})
    if case == "not an image":
        (folder / "cat" / "notes.png").write_text("hello")
        image_folder(folder, {"dog": 3})
    elif case == "mixed modes":
        image_folder(folder, {"dog": 3}, mode="RGB")
    elif case == "empty class":
        (folder / "dog").mkdir()
    elif case == "loose file":
        image_folder(folder, {"dog": 3})
        (folder / "readme.txt").write_text("about")
    elif case == "oversized":
        image_folder(folder, {"dog": 3})
        (folder / "cat" / "huge.png").write_bytes(b"\0" * (MAX_IMAGE_BYTES + 1))
    with pytest.raises(DataError, match=expected):
        register_user_dataset("bad", folder)
    with pytest.raises(DataError):
        dataset_info("bad")  # nothing registered


def test_a_bad_zip_and_a_csv_naming_a_missing_file(home, tmp_path):
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"junk\.zip: not a readable zip file"):
        register_user_dataset("junk", tmp_path / "junk.zip")
    (tmp_path / "list.csv").write_text("image,label\nmissing.png,a\n")
    with pytest.raises(DataError, match=r"line 2: image 'missing\.png' is not there"):
        register_user_dataset("listed", tmp_path / "list.csv", image_column="image")


def test_the_cli_registers_a_folder(home, tmp_path):
    folder = image_folder(tmp_path / "pets", {"dog": 6, "cat": 6})
    out = subprocess.run([sys.executable, "-m", "ptft_core", "data", "add", "pets", str(folder)],
                         capture_output=True, text=True, check=True).stdout
    assert "labelled images" in out and "12x12" in out
