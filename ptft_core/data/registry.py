"""What datasets the lab knows and how to load them: built-ins, registered user files, `hf:<hub id>`.

Loaded DataFrames are cached in-process (keyed on the file and its mtime, so a re-registered dataset or a
different `PTFT_HOME` is never served stale); `load_split` returns a copy, so callers may modify it freely.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from ptft_core import paths
from ptft_core.data.errors import DataError
from ptft_core.data.info import BUILTIN_NAMES, IMAGE_BUILTINS, SPLITS, DatasetInfo
from ptft_core.data.prepare import write_dataset
from ptft_core.data.sources import sha256_file
from ptft_core.data.user import MIN_ROWS, NAME_PATTERN, hub_dataset_info, load_hub_dataset, read_user_file
from ptft_core.data.user_images import read_user_images

HUB_PREFIX = "hf:"
PREPARE_HINT = "run `python -m ptft_core data prepare`"


@lru_cache(maxsize=64)
def _read_meta(path: str, mtime_ns: int) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); {PREPARE_HINT} (or register the file again)") from exc


def _meta_or_none(name: str) -> dict[str, Any] | None:
    path = paths.datasets_dir() / name / "meta.json"
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return None
    return _read_meta(str(path), mtime)


def _user_names() -> list[str]:
    root = paths.datasets_dir()
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir()
        if not p.name.startswith(".") and p.name not in BUILTIN_NAMES and (p / "meta.json").is_file()
    )


def known_names() -> list[str]:
    """Built-in names (prepared or not) and the registered user datasets."""
    return [*BUILTIN_NAMES, *_user_names()]


def _meta(name: str) -> dict[str, Any]:
    if not isinstance(name, str) or not name:
        raise DataError(f"dataset name must be a non-empty string, got {name!r}")
    meta = _meta_or_none(name)
    if meta is not None:
        return meta
    if name in BUILTIN_NAMES:
        raise DataError(f"built-in dataset {name!r} is not prepared in {paths.datasets_dir()}: {PREPARE_HINT}")
    raise DataError(
        f"unknown dataset {name!r}; known: {', '.join(known_names())}. Register a file with "
        "`python -m ptft_core data add NAME PATH`, or use hf:<hub id>"
    )


def list_datasets() -> list[DatasetInfo]:
    """The prepared built-ins (in BUILTIN_NAMES order), then the registered user datasets (by name)."""
    out = []
    for name in BUILTIN_NAMES + tuple(_user_names()):
        meta = _meta_or_none(name)
        if meta is not None:
            out.append(DatasetInfo.from_meta(meta))
    return out


def missing_builtins() -> list[str]:
    return [name for name in BUILTIN_NAMES if _meta_or_none(name) is None]


def dataset_info(name: str) -> DatasetInfo:
    if isinstance(name, str) and name.startswith(HUB_PREFIX):
        return hub_dataset_info(name)
    return DatasetInfo.from_meta(_meta(name))


def modality(name: str) -> str:
    """"text" or "image": what a known dataset holds (a built-in's by its name, prepared or not; a hub dataset
    is text here)."""
    if name in BUILTIN_NAMES or name.startswith(HUB_PREFIX):
        return "image" if name in IMAGE_BUILTINS else "text"
    return _meta(name).get("modality", "text")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")


@lru_cache(maxsize=32)
def _read_parquet(path: str, mtime_ns: int) -> pd.DataFrame:
    return pd.read_parquet(path)


def load_split(name: str, split: str) -> pd.DataFrame:
    """One split: column `text` (str), plus `label` (int, 0..num_labels-1) for labelled data. A fresh copy."""
    _check_split(split)
    if isinstance(name, str) and name.startswith(HUB_PREFIX):
        return load_hub_dataset(name)[split].copy()
    _meta(name)
    path = paths.datasets_dir() / name / f"{split}.parquet"
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        raise DataError(f"{path} is missing: {PREPARE_HINT}" if name in BUILTIN_NAMES
                        else f"{path} is missing: register the dataset again") from None
    return _read_parquet(str(path), mtime).copy()


def load_texts(names: list[str] | str, split: str) -> list[str]:
    """The `text` column of one or more datasets, concatenated (any dataset works as unlabelled text)."""
    if isinstance(names, str):
        names = [names]
    if not names:
        raise DataError("no dataset named: give at least one dataset")
    texts: list[str] = []
    for name in names:
        texts.extend(load_split(name, split)["text"].tolist())
    return texts


def label_names(name: str) -> list[str]:
    return dataset_info(name).label_names


def num_labels(name: str) -> int:
    return len(label_names(name))


# --- registering a user file ---------------------------------------------------------------------------------


def check_new_name(name: str) -> None:
    """A name a user dataset may take: 1-64 of a-z, 0-9, '_' and '-', and no built-in's."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise DataError(f"dataset name {str(name)[:80]!r}: use 1-64 characters among a-z, 0-9, '_' and '-'")
    if name in BUILTIN_NAMES:
        raise DataError(f"dataset name {name!r} is a built-in; pick another name")


def register_user_dataset(
    name: str,
    path: str | os.PathLike,
    text_column: str = "text",
    label_column: str | None = None,
    seed: int = 1234,
    overwrite: bool = False,
    image_column: str | None = None,
):
    """Validate `path` and save it as dataset `name` (80/10/10 seeded split, stratified by label); its info.

    A folder or a .zip of class folders, or a .csv with `image_column` (paths of image files), is an image set
    (user_images.py); any other file is text (user.py)."""
    check_new_name(name)
    target = paths.datasets_dir() / name
    if target.exists() and not overwrite:
        raise DataError(f"dataset {name!r} exists already; choose another name or overwrite it")
    path = Path(path).expanduser().resolve()
    images = path.is_dir() or path.suffix.lower() == ".zip" or image_column is not None
    if images:
        df = read_user_images(path, image_column or "image", label_column or "label")
    else:
        df = read_user_file(path, text_column, label_column)
    if len(df) < MIN_ROWS:
        raise DataError(
            f"{path}: only {len(df)} rows; at least {MIN_ROWS} are needed for a train/validation/test split"
        )
    names = df.attrs.get("label_names", [])
    kind = "labelled" if names else "unlabelled"
    what = "images" if images else f"{kind} rows"
    description = f"User {'folder' if path.is_dir() else 'file'} {path.name}: {len(df):,} {what}"
    if names:
        description += f", labels {', '.join(f'{i}={n}' for i, n in enumerate(names))}"
    source = {"file": str(path), "format": "folder" if path.is_dir() else path.suffix.lower().lstrip("."),
              **({"image_column": image_column} if images else {"text_column": text_column}),
              "label_column": label_column}
    if not path.is_dir():
        source["sha256"] = sha256_file(path)
    image_meta = {"image_size": df.attrs["image_size"], "channels": df.attrs["channels"]} if images else {}
    write_dataset(name, df, {
        "description": description,
        "source": source,
        "label_names": names,
        "builtin": False,
        "path": str(path),
        **image_meta,
    }, seed=seed)
    return dataset_info(name)
