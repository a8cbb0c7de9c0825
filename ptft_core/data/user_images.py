"""A user's own images: a folder or a .zip in `class/image.png` layout, or a CSV of image paths and labels.

`read_user_images` returns the rows a dataset stores (`image`: PNG bytes, `label`: 0..K-1 in sorted class-name
order, `label_names` in `attrs`), or raises `DataError` naming the file at fault. Refused, each with its file:
a file that is not an image, a file over `MAX_IMAGE_BYTES` or `MAX_IMAGE_PIXELS`, grey images mixed with colour
ones, a class folder with no image, a single class, more than `MAX_IMAGES` images. Files whose names start with
a dot (`.DS_Store`, `__MACOSX/`) are not data and are skipped. Each image is stored as PNG, scaled down so its
longer side is at most `MAX_STORED_SIDE`: the lab's image models read at most 224 pixels a side, so the rest
would only cost disk and decoding.
"""

from __future__ import annotations

import csv
import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ptft_core.data.errors import DataError

MAX_IMAGE_BYTES = 20 * 1024 * 1024  # one file: a 20 MB image is a photograph of 20+ megapixels, 400x what a run reads
MAX_IMAGE_PIXELS = 50_000_000  # one image decoded: Pillow warns of a decompression bomb at 89 million pixels
MAX_IMAGES = 200_000  # a dataset: 200,000 images at 64x64 grey decode to 800 MB in a run, a third of a small machine
MAX_STORED_SIDE = 256  # the longest side kept: the largest input a run takes (224) and room for a random crop
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


def _folder_files(root: Path) -> Iterator[tuple[str, str, bytes]]:
    """(class, shown name, bytes) of each file two levels down a folder; a file at the top level is refused."""
    for entry in sorted(root.iterdir()):
        if _hidden((entry.name,)):
            continue
        if not entry.is_dir():
            raise DataError(f"{entry}: a file beside the class folders; put each image in its class's folder "
                            "(class/image.png)")
        files = sorted(f for f in entry.rglob("*") if f.is_file() and not _hidden(f.relative_to(root).parts))
        if not files:
            raise DataError(f"{entry}: class folder {entry.name!r} holds no image")
        for file in files:
            if file.stat().st_size > MAX_IMAGE_BYTES:
                raise DataError(f"{file}: {file.stat().st_size:,} bytes, over the {MAX_IMAGE_BYTES:,} a file may have")
            yield entry.name, str(file), file.read_bytes()


def _zip_files(path: Path) -> Iterator[tuple[str, str, bytes]]:
    """The same from a .zip; one folder wrapping the class folders (how a zipped folder comes) is looked through."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a readable zip file ({exc})") from exc
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir() and not _hidden(PurePosixPath(m.filename).parts)]
        if not members:
            raise DataError(f"{path}: the zip holds no file")
        parts = [PurePosixPath(m.filename).parts for m in members]
        tops = {p[0] for p in parts}
        strip = 1 if len(tops) == 1 and all(len(p) >= 3 for p in parts) else 0
        classes = {p[strip] for p in parts if len(p) > strip + 1}
        for member, part in sorted(zip(members, parts, strict=True), key=lambda mp: mp[0].filename):
            shown = f"{path}:{member.filename}"
            if len(part) < strip + 2:
                raise DataError(f"{shown}: a file beside the class folders; put each image in its class's folder "
                                "(class/image.png)")
            if member.file_size > MAX_IMAGE_BYTES:
                raise DataError(f"{shown}: {member.file_size:,} bytes, over the {MAX_IMAGE_BYTES:,} a file may have")
            yield part[strip], shown, zf.read(member)
        empty = {PurePosixPath(m.filename).parts[strip] for m in zf.infolist() if m.is_dir()
                 and len(PurePosixPath(m.filename).parts) == strip + 1} - classes
        if empty:
            raise DataError(f"{path}: class folder {sorted(empty)[0]!r} holds no image")


def _csv_files(path: Path, image_column: str, label_column: str) -> Iterator[tuple[str, str, bytes]]:
    """The same from a CSV of image paths (relative to the CSV's folder, or absolute) and labels."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable UTF-8 CSV ({exc})") from exc
    for column in (image_column, label_column):
        if rows and column not in rows[0]:
            raise DataError(f"{path}: no column {column!r} (columns present: {', '.join(rows[0])})")
    for number, row in enumerate(rows, start=2):
        label, name = (row.get(label_column) or "").strip(), (row.get(image_column) or "").strip()
        if not label or not name:
            raise DataError(f"{path}: line {number}: an empty {image_column if not name else label_column}")
        file = (path.parent / name).resolve()
        try:
            size = file.stat().st_size
        except OSError:
            raise DataError(f"{path}: line {number}: image {name!r} is not there ({file})") from None
        if size > MAX_IMAGE_BYTES:
            raise DataError(f"{file}: {size:,} bytes, over the {MAX_IMAGE_BYTES:,} a file may have")
        yield label, str(file), file.read_bytes()


def _as_png(data: bytes, shown: str) -> tuple[bytes, bool, tuple[int, int]]:
    """(PNG bytes at most MAX_STORED_SIDE a side, whether it is grey, the stored size) of one image file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise DataError(f"{shown}: {image.width}x{image.height} pixels, over the {MAX_IMAGE_PIXELS:,} an "
                                "image may have")
            grey = image.mode in GREY_MODES
            converted = image.convert("L" if grey else "RGB")
            if max(converted.size) > MAX_STORED_SIDE:
                converted.thumbnail((MAX_STORED_SIDE, MAX_STORED_SIDE), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            converted.save(out, format="PNG")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise DataError(f"{shown}: not an image Pillow can read ({type(exc).__name__})") from exc
    return out.getvalue(), grey, converted.size


def read_user_images(path: str | os.PathLike, image_column: str = "image", label_column: str = "label",
                     ) -> pd.DataFrame:
    """Rows (image, label) of a folder, a .zip or a CSV of paths; attrs: label_names, channels (1 grey, 3 colour)
    and image_size (the side of every stored image when all are the same square, else None)."""
    path = Path(path).expanduser().resolve()
    if path.is_dir():
        files = _folder_files(path)
    elif path.suffix.lower() == ".zip":
        files = _zip_files(path)
    elif path.suffix.lower() == ".csv":
        files = _csv_files(path, image_column, label_column)
    else:
        raise DataError(f"{path}: give a folder or a .zip of class folders, or a .csv of image paths and labels")
    classes, images, modes, sizes = [], [], {}, set()
    for label, shown, data in files:
        if len(images) == MAX_IMAGES:
            raise DataError(f"{path}: more than {MAX_IMAGES:,} images; a dataset may have at most that many")
        png, grey, size = _as_png(data, shown)
        modes.setdefault(grey, shown)
        if len(modes) > 1:
            raise DataError(f"{shown}: a {'grey' if grey else 'colour'} image among {'colour' if grey else 'grey'} "
                            f"ones (first: {modes[not grey]}); convert them all to one mode")
        classes.append(label)
        images.append(png)
        sizes.add(size)
    names = sorted(set(classes))
    if len(names) < 2:
        raise DataError(f"{path}: {len(names)} class ({', '.join(names) or 'none'}); a classifier needs at least 2")
    index = {name: i for i, name in enumerate(names)}
    frame = pd.DataFrame({"image": images, "label": np.array([index[c] for c in classes], dtype=np.int64)})
    square = {width for width, height in sizes if width == height}
    frame.attrs.update(label_names=names, channels=1 if next(iter(modes)) else 3,
                       image_size=square.pop() if len(sizes) == 1 and square else None)
    return frame
