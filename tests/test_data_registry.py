"""The registry: listing, loading, errors, and the `data` CLI commands (on the real prepared data)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from ptft_core.cli.data import add_data_commands, format_table
from ptft_core.data import (
    BUILTIN_NAMES,
    DataError,
    DatasetInfo,
    dataset_info,
    label_names,
    list_datasets,
    load_split,
    load_texts,
    num_labels,
)

EXPECTED = {"wiki": 106, "news": 300, "movies": 10_605, "amazon": 3_708, "nyt": 5_190, "tweets": 4_200,
            "sources": 13_098, "digits": 1_797, "mnist": 5_000}


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ptft")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.handler(args)


def test_list_shows_the_nine_builtins_with_counts(home):
    infos = list_datasets()
    assert [i.name for i in infos] == list(BUILTIN_NAMES)
    for info in infos:
        assert isinstance(info, DatasetInfo) and info.builtin
        assert info.total_rows == EXPECTED[info.name] and set(info.splits) == {"train", "validation", "test"}
        assert info.description and info.source["sha256"]
        if info.modality == "image":  # the rest in test_data_images.py
            assert info.mean_tokens is None and info.label_names == [str(d) for d in range(10)]
            continue
        assert info.modality == "text" and info.mean_tokens > 0
        if info.kind == "labelled":
            assert info.label_names == (["amazon", "nyt", "tweets"] if info.name == "sources"
                                        else ["negative", "positive"])
            assert sum(sum(b.values()) for b in info.label_balance.values()) == info.total_rows
        else:
            assert info.kind == "unlabelled" and info.label_names == [] and info.label_balance == {}


def test_load_split_columns_and_dtypes(home):
    movies = load_split("movies", "train")
    assert list(movies.columns) == ["text", "label", "rating"] and len(movies) == dataset_info("movies").splits["train"]
    assert movies["text"].map(type).eq(str).all() and (movies["text"].str.strip() == movies["text"]).all()
    assert str(movies["label"].dtype) == "int64" and set(movies["label"]) == {0, 1}
    assert str(movies["rating"].dtype) == "float64"
    news = load_split("news", "test")
    assert list(news.columns) == ["text"] and len(news) == 30


def test_load_split_returns_a_copy(home):
    df = load_split("tweets", "validation")
    df.loc[0, "text"] = "changed"
    del df["rating"]
    again = load_split("tweets", "validation")
    assert again.loc[0, "text"] != "changed" and "rating" in again.columns


def test_unknown_name_lists_known_ones_and_bad_split(home):
    with pytest.raises(DataError) as err:
        load_split("imdb", "train")
    message = str(err.value)
    assert "'imdb'" in message and all(name in message for name in BUILTIN_NAMES) and "data add" in message
    with pytest.raises(DataError, match="unknown split 'dev'"):
        load_split("movies", "dev")
    with pytest.raises(DataError, match="unknown dataset"):
        label_names("nope")


def test_unprepared_builtin_says_run_prepare(empty_home):
    with pytest.raises(DataError, match=r"not prepared.*python -m ptft_core data prepare"):
        load_split("movies", "train")
    assert list_datasets() == []
    assert _cli("data", "list") == 0


def test_load_texts_from_labelled_and_several_datasets(home):
    texts = load_texts(["nyt"], "test")
    assert len(texts) == dataset_info("nyt").splits["test"] and all(isinstance(t, str) and t for t in texts)
    both = load_texts(["news", "amazon"], "validation")
    assert len(both) == 30 + dataset_info("amazon").splits["validation"]
    assert both[:30] == load_texts("news", "validation")
    with pytest.raises(DataError):
        load_texts([], "train")


def test_label_names_and_num_labels(home):
    assert label_names("movies") == ["negative", "positive"] and num_labels("movies") == 2
    assert label_names("wiki") == [] and num_labels("wiki") == 0


def test_data_list_table(home, capsys):
    assert _cli("data", "list") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["name", "kind", "train", "validation", "test", "total"]
    movies = next(line for line in lines if line.startswith("movies"))
    assert "10,605" in movies and "neg 51% / pos 49%" in movies and "24.9" in movies
    assert "not prepared" not in out
    assert "tweets" in format_table(list_datasets())


def test_data_add_command(home, tmp_path, capsys):
    path = tmp_path / "mine.csv"
    path.write_text("text,label\n" + "".join(f"t {i},{'a' if i % 2 else 'b'}\n" for i in range(20)), encoding="utf-8")
    assert _cli("data", "add", "mine", str(path), "--label-column", "label") == 0
    assert "mine (user)" in capsys.readouterr().out
    assert dataset_info("mine").label_names == ["a", "b"]
    with pytest.raises(DataError, match="exists already"):
        _cli("data", "add", "mine", str(path))


def test_importing_the_package_loads_neither_torch_nor_datasets():
    code = ("import sys, ptft_core.data as d; d.list_datasets; d.load_split; d.register_user_dataset; d.prepare_all; "
            "print(sorted(m for m in ('torch', 'datasets', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
