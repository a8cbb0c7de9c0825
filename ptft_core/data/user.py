"""User data: local files (.csv, .tsv, .jsonl/.json, .parquet, .txt) and `hf:<hub id>[:<config>]` datasets.

`read_user_file` validates a file and returns a clean frame (`text`, and `label` as int 0..K-1 when a label
column is given); every problem raises `DataError` naming the file and the row/line/column at fault.
Decisions: rows whose text is empty after stripping whitespace are an error, not silently dropped (the message
gives how many and the first one), because dropping rows changes what a run trained on without anyone noticing.
In a .txt file blank lines only separate texts and are skipped. String labels map to ints in sorted order;
integer labels stay as they are when they are 0..K-1, else they are remapped in sorted order; either way
`label_names` records what each int means. Integral floats (1.0) count as integers.

`registry.register_user_dataset` saves a file like a built-in (same seeded 80/10/10 split, stratified by label)
under `datasets/<name>/`, with `builtin: false` and the original path in meta.json.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from ptft_core.data.errors import DataError
from ptft_core.data.info import SPLITS, DatasetInfo
from ptft_core.data.prepare import assign_splits, mean_tokens

SUPPORTED_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt")
# What an upload may be: a text file, or a .zip of class folders of images (user_images.py). Not a CSV of image
# paths: its paths would name files of the service's machine, which a client may not read through it.
UPLOAD_SUFFIXES = (*SUPPORTED_SUFFIXES, ".zip")
NAME_PATTERN = re.compile(r"^[a-z0-9_-]{1,64}$")
MIN_ROWS = 10
HUB_PROBE_TIMEOUT_S = 3.0
LOCAL_FILE_HINT = "use a local file instead: `python -m ptft_core data add NAME PATH`"


# ---------------------------------------------------------------- reading files


def _decode(data: bytes, path: Path) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = data[exc.start: exc.end]
        raise DataError(
            f"{path}: line {line}, column {column} (byte offset {exc.start}) is not UTF-8 text ({bad!r}); "
            "save the file as UTF-8"
        ) from exc
    return text.removeprefix("\ufeff")


def _missing_column(path: Path, column: str, columns: list[Any], what: str) -> DataError:
    shown = ", ".join(repr(str(c)) for c in columns) or "none"
    return DataError(f"{path}: no {what} column {column!r} (columns present: {shown})")


def _json_lines(text: str, shown: Any, limit: int | None = None) -> tuple[list[Any], list[str]]:
    """JSON lines (blank ones skipped), at most `limit`, and each one's "line N"; DataError names a bad line."""
    records, where = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if len(records) == limit:
            break
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{shown}: line {number} is not valid JSON ({exc.msg}, column {exc.colno})") from exc
        where.append(f"line {number}")
    return records, where


def _read_table(path: Path, suffix: str, text_column: str) -> tuple[pd.DataFrame, list[str]]:
    """The raw table and, per row, how to name it in a message ("row 3", "line 7")."""
    if suffix == ".parquet":
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several kinds
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
        return df, [f"row {i + 1}" for i in range(len(df))]
    text = _decode(path.read_bytes(), path)
    if suffix in (".csv", ".tsv"):
        try:
            df = pd.read_csv(io.StringIO(text), sep="\t" if suffix == ".tsv" else ",", keep_default_na=False,
                             dtype={text_column: str}, skip_blank_lines=True)
        except pd.errors.EmptyDataError as exc:
            raise DataError(f"{path}: the file has no header and no rows") from exc
        except (pd.errors.ParserError, ValueError) as exc:
            raise DataError(f"{path}: not a valid {suffix[1:].upper()} file ({str(exc).strip()})") from exc
        return df, [f"row {i + 1}" for i in range(len(df))]
    # .jsonl, or .json: a JSON array of objects, or JSON lines
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})") from exc
        where = [f"item {i + 1}" for i in range(len(records))]
    else:
        records, where = _json_lines(text, path)
    for record, at in zip(records, where, strict=True):
        if not isinstance(record, dict):
            raise DataError(f"{path}: {at} is not a JSON object (got {type(record).__name__})")
    return pd.DataFrame.from_records(records), where


def peek(content: bytes, filename: str, rows: int = 20) -> pd.DataFrame:
    """The first rows of a file's bytes as a table, to map its columns before it is registered (which validates
    the whole file). DataError naming the file, and the line for JSON lines, when it cannot be read as its
    suffix says."""
    suffix = Path(filename).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(f"{filename}: unsupported file type {suffix or '(no suffix)'!r}; use "
                        f"{', '.join(SUPPORTED_SUFFIXES)}")
    if suffix == ".parquet":
        try:
            return pd.read_parquet(io.BytesIO(content)).head(rows)
        except Exception as exc:  # pyarrow raises several kinds
            raise DataError(f"{filename}: not a readable Parquet file ({exc})") from exc
    text = _decode(content, Path(filename))
    if suffix == ".txt":
        return pd.DataFrame({"text": [line for line in text.splitlines() if line.strip()][:rows]})
    if suffix in (".csv", ".tsv"):
        try:
            return pd.read_csv(io.StringIO(text), sep="\t" if suffix == ".tsv" else ",", nrows=rows)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
            raise DataError(f"{filename}: not a valid {suffix[1:].upper()} file ({str(exc).strip()})") from exc
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            return pd.DataFrame.from_records(json.loads(text)[:rows])
        except (json.JSONDecodeError, TypeError) as exc:
            raise DataError(f"{filename}: not a JSON array of objects ({exc})") from exc
    return pd.DataFrame.from_records(_json_lines(text, filename, rows)[0])


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def _clean_texts(values: list[Any], where: list[str], path: Path, column: str) -> list[str]:
    texts, empty = [], []
    for value, at in zip(values, where, strict=True):
        if _is_missing(value):
            empty.append(at)
            texts.append("")
            continue
        if not isinstance(value, str):
            raise DataError(f"{path}: {at}: column {column!r} holds {type(value).__name__} {value!r}, not text")
        texts.append(value.strip())
        if not texts[-1]:
            empty.append(at)
    if empty:
        raise DataError(
            f"{path}: column {column!r} is empty (or missing) after stripping whitespace in {len(empty)} "
            f"row(s), first at {empty[0]}; empty texts are not dropped silently: remove or fill those rows"
        )
    return texts


def _label_value(value: Any) -> int | str | None:
    """An int or a stripped non-empty str, or None when the value is not a usable label."""
    if isinstance(value, bool | np.bool_) or _is_missing(value):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return int(value) if float(value).is_integer() else None
    if isinstance(value, str):
        return value.strip() or None
    return None


def _encode_labels(values: list[Any], where: list[str], path: Path, column: str) -> tuple[list[int], list[str]]:
    labels: list[int | str] = []
    first_int = first_str = None
    for value, at in zip(values, where, strict=True):
        label = _label_value(value)
        if label is None:
            shown = "empty" if isinstance(value, str) or _is_missing(value) else f"{type(value).__name__} {value!r}"
            raise DataError(
                f"{path}: {at}: label column {column!r} is {shown}; labels must be integers or strings"
            )
        if isinstance(label, int):
            first_int = first_int or at
        else:
            first_str = first_str or at
        labels.append(label)
    if first_int and first_str:
        raise DataError(
            f"{path}: label column {column!r} mixes integers ({first_int}) and strings ({first_str}); use one kind"
        )
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise DataError(
            f"{path}: label column {column!r} has only one class ({classes[0]!r}); a classifier needs at least 2"
        )
    if len(classes) > 20 and len(classes) > len(labels) / 2:
        raise DataError(
            f"{path}: label column {column!r} has {len(classes)} different values in {len(labels)} rows: "
            "is it really the label column?"
        )
    index = {value: i for i, value in enumerate(classes)}
    return [index[label] for label in labels], [str(value) for value in classes]


def read_user_file(path: str | os.PathLike, text_column: str = "text", label_column: str | None = None) -> pd.DataFrame:
    """A validated frame: `text` (str, stripped) and, with `label_column`, `label` (int 0..K-1).

    `df.attrs["label_names"]` holds the name of each label int ([] without labels).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(
            f"{path}: unsupported file type {suffix or '(no suffix)'!r}; use {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    if suffix == ".txt":
        if label_column:
            raise DataError(f"{path}: a .txt file holds one text per line and no labels (label column "
                            f"{label_column!r}); use .csv, .jsonl or .parquet for labelled data")
        lines = _decode(path.read_bytes(), path).splitlines()
        texts = [line.strip() for line in lines if line.strip()]
        if not texts:
            raise DataError(f"{path}: no rows (only blank lines)")
        df = pd.DataFrame({"text": texts})
        df.attrs["label_names"] = []
        return df
    raw, where = _read_table(path, suffix, text_column)
    if len(raw) == 0:
        raise DataError(f"{path}: no rows")
    columns = [str(c) for c in raw.columns]
    if text_column not in columns:
        raise _missing_column(path, text_column, list(raw.columns), "text")
    if label_column is not None and label_column not in columns:
        raise _missing_column(path, label_column, list(raw.columns), "label")
    raw.columns = columns
    out = pd.DataFrame({"text": _clean_texts(raw[text_column].tolist(), where, path, text_column)})
    names: list[str] = []
    if label_column is not None:
        labels, names = _encode_labels(raw[label_column].tolist(), where, path, label_column)
        out["label"] = np.asarray(labels, dtype="int64")
    out.attrs["label_names"] = names
    return out


# ---------------------------------------------------------------- Hugging Face hub


def parse_hub_spec(spec: str) -> tuple[str, str | None]:
    """`hf:<hub id>[:<config>]` -> (hub id, config)."""
    body = spec.removeprefix("hf:").strip()
    hub_id, _, config = body.partition(":")
    if not spec.startswith("hf:") or not hub_id or any(ch.isspace() for ch in body):
        raise DataError(f"{spec!r}: a hub dataset is written hf:<hub id>[:<config>], e.g. hf:imdb or hf:glue:sst2")
    return hub_id, config or None


def _hub_reachable() -> tuple[bool, str]:
    """A quick TCP probe, so an offline machine fails in seconds instead of after the hub client's retries.

    With an offline flag (datasets may load from its cache) or a proxy (the probe proves nothing), try anyway.
    """
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    flags = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
    if any(os.environ.get(flag) for flag in flags):
        return True, host
    try:
        socket.create_connection((host, 443), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError:
        return False, host
    return True, host


def _pick_column(columns: list[str], preferred: tuple[str, ...], frame: pd.DataFrame | None = None) -> str | None:
    for name in preferred:
        if name in columns:
            return name
    if frame is not None:
        for name in columns:
            if frame[name].map(lambda v: isinstance(v, str)).all():
                return name
    return None


def hub_frames(dataset_dict: Any, spec: str) -> dict[str, pd.DataFrame]:
    """Normalise a `datasets.DatasetDict` into our three splits (`text`[, `label`]); missing splits are carved
    out of train with the lab's seeded 80/10/10 rule."""
    aliases = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation",
               "test": "test"}
    frames: dict[str, pd.DataFrame] = {}
    names: list[str] = []
    for key in dataset_dict:
        split = aliases.get(key)
        if split is None or split in frames:
            continue
        part = dataset_dict[key]
        label_feature = part.features.get("label") if hasattr(part, "features") else None
        if label_feature is not None and hasattr(label_feature, "names"):
            names = list(label_feature.names)
        frames[split] = part.to_pandas()
    if "train" not in frames:
        raise DataError(f"{spec}: the hub dataset has no train split (splits: {', '.join(map(str, dataset_dict))})")
    train = frames["train"]
    columns = [str(c) for c in train.columns]
    text_col = _pick_column(columns, ("text", "sentence", "content", "review", "document"), train)
    if text_col is None:
        raise DataError(f"{spec}: no text column found (columns: {', '.join(columns)})")
    label_col = _pick_column(columns, ("label", "labels"))
    out: dict[str, pd.DataFrame] = {}
    for split, frame in frames.items():
        keep = pd.DataFrame({"text": frame[text_col].astype(str).str.strip()})
        if label_col:
            keep["label"] = frame[label_col].astype("int64")
            if (keep["label"] < 0).any():  # e.g. GLUE test splits: labels hidden as -1
                continue
        out[split] = keep[keep["text"] != ""].reset_index(drop=True)
    if label_col and not names:
        names = [str(v) for v in sorted(out["train"]["label"].unique())]
    if "validation" not in out or "test" not in out:
        base = out["train"]
        idx = assign_splits(len(base), base["label"].to_numpy() if label_col else None)
        out["train"] = base.iloc[idx["train"]].reset_index(drop=True)
        out.setdefault("validation", base.iloc[idx["validation"]].reset_index(drop=True))
        out.setdefault("test", base.iloc[idx["test"]].reset_index(drop=True))
    for frame in out.values():
        frame.attrs["label_names"] = names
    return out


@lru_cache(maxsize=4)
def _load_hub(spec: str) -> dict[str, pd.DataFrame]:
    hub_id, config = parse_hub_spec(spec)
    reachable, host = _hub_reachable()
    if not reachable:
        raise DataError(f"could not fetch {spec} from the Hugging Face hub: no network ({host} unreachable); "
                        f"{LOCAL_FILE_HINT}")
    try:
        import datasets  # heavy: imported only here

        loaded = datasets.load_dataset(hub_id, config)
    except Exception as exc:  # the hub client raises many kinds; the user needs one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"could not fetch {spec} from the Hugging Face hub ({first}); check the id and config, "
                        f"or {LOCAL_FILE_HINT}") from exc
    return hub_frames(loaded, spec)


def load_hub_dataset(spec: str) -> dict[str, pd.DataFrame]:
    """`hf:<hub id>[:<config>]` -> {"train", "validation", "test"} frames (copies; cached in-process)."""
    return {split: frame.copy() for split, frame in _load_hub(spec).items()}


def hub_dataset_info(spec: str) -> DatasetInfo:
    frames = _load_hub(spec)
    names = list(frames["train"].attrs.get("label_names", []))
    hub_id, config = parse_hub_spec(spec)
    balance = {}
    if names:
        for split in SPLITS:
            counts = frames[split]["label"].value_counts()
            balance[split] = {n: int(counts.get(i, 0)) for i, n in enumerate(names)}
    return DatasetInfo(
        name=spec,
        kind="labelled" if names else "unlabelled",
        description=f"Hugging Face hub dataset {hub_id}" + (f" ({config})" if config else ""),
        label_names=names,
        splits={split: len(frames[split]) for split in SPLITS},
        label_balance=balance,
        mean_tokens=mean_tokens(frames["train"]["text"].head(1000).tolist()),  # a sample: hub sets can be big
        source={"hub": hub_id, "config": config},
        builtin=False,
    )
