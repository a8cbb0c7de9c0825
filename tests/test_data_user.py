"""User files and hub ids: every bad input is one DataError naming the file and the row/column at fault."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from ptft_core.data import (
    DataError,
    dataset_info,
    label_names,
    list_datasets,
    load_split,
    read_user_file,
    register_user_dataset,
)
from ptft_core.data.user import hub_frames, load_hub_dataset, parse_hub_spec


def _csv(tmp_path, body: str, name: str = "f.csv"):
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def _jsonl(tmp_path, rows, name: str = "f.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _errors(call) -> str:
    with pytest.raises(DataError) as err:
        call()
    return str(err.value)


GOOD_ROWS = [{"text": f"review number {i}", "label": "pos" if i % 2 else "neg"} for i in range(20)]


# ---------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    message = _errors(lambda: read_user_file(tmp_path / "nope.csv"))
    assert "nope.csv" in message and "not found" in message


def test_empty_file(tmp_path):
    path = _csv(tmp_path, "")
    assert "f.csv" in _errors(lambda: read_user_file(path)) and "empty" in _errors(lambda: read_user_file(path))


def test_header_only_has_no_rows(tmp_path):
    path = _csv(tmp_path, "text,label\n")
    message = _errors(lambda: read_user_file(path, label_column="label"))
    assert "f.csv" in message and "no rows" in message


def test_blank_txt_has_no_rows(tmp_path):
    path = _csv(tmp_path, "\n  \n\n", "f.txt")
    assert "no rows" in _errors(lambda: read_user_file(path))


def test_missing_column_lists_the_columns_present(tmp_path):
    path = _csv(tmp_path, "sentence,label\nhello,1\n")
    message = _errors(lambda: read_user_file(path))
    assert "f.csv" in message and "'text'" in message and "'sentence', 'label'" in message
    message = _errors(lambda: read_user_file(path, text_column="sentence", label_column="stars"))
    assert "label column 'stars'" in message and "'sentence', 'label'" in message


def test_non_utf8_names_line_and_byte_offset(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\ngood,1\ncaf\u00e9 au lait,0\n".encode("latin-1"))
    message = _errors(lambda: read_user_file(path, label_column="label"))
    assert "latin1.csv" in message and "line 3" in message and "byte offset 21" in message and "UTF-8" in message


@pytest.mark.parametrize(
    ("bad", "shown"),
    [(0.5, "float 0.5"), ([1, 2], "list [1, 2]"), (None, "empty"), (True, "bool True"), ({"a": 1}, "dict")],
)
def test_labels_neither_int_nor_str_name_the_first_bad_row(tmp_path, bad, shown):
    rows = [dict(r) for r in GOOD_ROWS[:6]]
    rows[3]["label"] = bad
    rows[5]["label"] = bad
    path = _jsonl(tmp_path, rows)
    message = _errors(lambda: read_user_file(path, label_column="label"))
    assert "f.jsonl" in message and "line 4" in message and "label column 'label'" in message and shown in message


def test_float_label_in_csv_names_the_row(tmp_path):
    path = _csv(tmp_path, "text,label\na,1\nb,0\nc,0.5\n")
    message = _errors(lambda: read_user_file(path, label_column="label"))
    assert "f.csv" in message and "row 3" in message and "0.5" in message


def test_empty_label_cell_in_csv(tmp_path):
    path = _csv(tmp_path, "text,label\na,1\nb,\nc,0\n")
    message = _errors(lambda: read_user_file(path, label_column="label"))
    assert "row 2" in message and "empty" in message


def test_mixed_int_and_string_labels(tmp_path):
    path = _jsonl(tmp_path, [{"text": "a", "label": 1}, {"text": "b", "label": "pos"}])
    message = _errors(lambda: read_user_file(path, label_column="label"))
    assert "mixes" in message and "line 1" in message and "line 2" in message


def test_only_one_class(tmp_path):
    path = _csv(tmp_path, "text,label\na,pos\nb,pos\nc, pos \n")
    message = _errors(lambda: read_user_file(path, label_column="label"))
    assert "f.csv" in message and "only one class" in message and "'pos'" in message


def test_empty_text_is_an_error_naming_the_first_row_and_count(tmp_path):
    path = _csv(tmp_path, 'text,label\ngood,1\n"   ",0\nfine,1\n,0\n')
    message = _errors(lambda: read_user_file(path, label_column="label"))
    assert "f.csv" in message and "column 'text'" in message and "2 row(s)" in message and "row 2" in message
    rows = [{"text": "ok", "label": 0}, {"text": None, "label": 1}]
    message = _errors(lambda: read_user_file(_jsonl(tmp_path, rows), label_column="label"))
    assert "line 2" in message


def test_non_text_value_in_text_column(tmp_path):
    path = _jsonl(tmp_path, [{"text": "ok"}, {"text": 42}])
    message = _errors(lambda: read_user_file(path))
    assert "f.jsonl" in message and "line 2" in message and "column 'text'" in message and "int 42" in message


def test_invalid_json_line_and_non_object(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text('{"text": "a"}\n{"text": \n', encoding="utf-8")
    assert "line 2 is not valid JSON" in _errors(lambda: read_user_file(path))
    path.write_text('{"text": "a"}\n["b"]\n', encoding="utf-8")
    assert "line 2 is not a JSON object" in _errors(lambda: read_user_file(path))


def test_unsupported_type_and_txt_with_labels(tmp_path):
    path = _csv(tmp_path, "x", "f.xlsx")
    assert "f.xlsx" in _errors(lambda: read_user_file(path)) and ".csv" in _errors(lambda: read_user_file(path))
    txt = _csv(tmp_path, "a\nb\n", "f.txt")
    message = _errors(lambda: read_user_file(txt, label_column="label"))
    assert "f.txt" in message and "no labels" in message


def test_broken_parquet(tmp_path):
    path = _csv(tmp_path, "not parquet", "f.parquet")
    assert "f.parquet" in _errors(lambda: read_user_file(path)) and "Parquet" in _errors(lambda: read_user_file(path))


# ---------------------------------------------------------------- good input


def test_string_labels_map_in_sorted_order(tmp_path):
    path = _csv(tmp_path, "review,stars\n  great film  ,pos\nawful,neg\nok,neutral\r\nmeh,neg\n")
    df = read_user_file(path, text_column="review", label_column="stars")
    assert df["text"].tolist() == ["great film", "awful", "ok", "meh"]
    assert df["label"].tolist() == [2, 0, 1, 0] and str(df["label"].dtype) == "int64"
    assert df.attrs["label_names"] == ["neg", "neutral", "pos"]


def test_int_labels_kept_or_remapped(tmp_path):
    path = _jsonl(tmp_path, [{"text": "a", "label": 0}, {"text": "b", "label": 1.0}])
    df = read_user_file(path, label_column="label")
    assert df["label"].tolist() == [0, 1] and df.attrs["label_names"] == ["0", "1"]
    path = _jsonl(tmp_path, [{"text": "a", "label": 5}, {"text": "b", "label": 1}, {"text": "c", "label": 5}])
    df = read_user_file(path, label_column="label")
    assert df["label"].tolist() == [1, 0, 1] and df.attrs["label_names"] == ["1", "5"]


def test_register_csv_jsonl_parquet_txt_and_load(home, tmp_path):
    csv = _csv(tmp_path, "text,label\n" + "".join(f"sentence {i},{'pos' if i % 3 else 'neg'}\n" for i in range(30)))
    jsonl = _jsonl(tmp_path, GOOD_ROWS)
    parquet = tmp_path / "f.parquet"
    pd.DataFrame({"body": [f"doc {i}" for i in range(40)], "y": [i % 2 + 1 for i in range(40)]}).to_parquet(parquet)
    txt = _csv(tmp_path, "".join(f"line {i}\r\n\r\n" for i in range(12)), "f.txt")

    info = register_user_dataset("my-csv", csv, label_column="label")
    assert info.kind == "labelled" and info.builtin is False and info.label_names == ["neg", "pos"]
    assert info.splits == {"train": 24, "validation": 3, "test": 3} and info.mean_tokens > 0
    assert info.source["file"] == str(csv) and len(info.source["sha256"]) == 64
    train = load_split("my-csv", "train")
    assert list(train.columns) == ["text", "label"] and set(train["label"]) == {0, 1}

    assert register_user_dataset("my_jsonl", jsonl, label_column="label").total_rows == 20
    info = register_user_dataset("pq", parquet, text_column="body", label_column="y")
    assert info.label_names == ["1", "2"] and set(load_split("pq", "test")["label"]) <= {0, 1}
    info = register_user_dataset("notes", txt)
    assert info.kind == "unlabelled" and info.total_rows == 12 and label_names("notes") == []
    assert list(load_split("notes", "validation").columns) == ["text"]

    everything = pd.concat([load_split("my-csv", s) for s in ("train", "validation", "test")])
    assert sorted(everything["text"]) == sorted(f"sentence {i}" for i in range(30))
    names = [i.name for i in list_datasets()]
    assert names[:6] == ["wiki", "news", "movies", "amazon", "nyt", "tweets"]
    assert names[9:] == ["my-csv", "my_jsonl", "notes", "pq"]  # after the 9 built-ins
    meta = json.loads((home / "datasets" / "my-csv" / "meta.json").read_text())
    assert meta["builtin"] is False and meta["path"] == str(csv) and meta["seed"] == 1234


def test_register_rejects_bad_names_clashes_and_tiny_files(home, tmp_path):
    jsonl = _jsonl(tmp_path, GOOD_ROWS)
    assert "a-z" in _errors(lambda: register_user_dataset("My Data", jsonl))
    assert "built-in" in _errors(lambda: register_user_dataset("movies", jsonl))
    register_user_dataset("mine", jsonl, label_column="label")
    assert "exists already" in _errors(lambda: register_user_dataset("mine", jsonl))
    register_user_dataset("mine", _jsonl(tmp_path, GOOD_ROWS[:10], "g.jsonl"), label_column="label", overwrite=True)
    assert dataset_info("mine").total_rows == 10 and len(load_split("mine", "train")) == 8
    tiny = _jsonl(tmp_path, GOOD_ROWS[:4], "tiny.jsonl")
    message = _errors(lambda: register_user_dataset("tiny", tiny, label_column="label"))
    assert "tiny.jsonl" in message and "at least 10" in message


# ---------------------------------------------------------------- hub ids


def test_hub_spec_fails_cleanly_and_quickly(empty_home):
    """Offline (or for an id that does not exist) a hub dataset is one DataError, in seconds, not a traceback."""
    started = time.monotonic()
    spec = "hf:ptft-tests-no-such-user/no-such-dataset"
    with pytest.raises(DataError) as err:
        load_split(spec, "train")
    message = str(err.value)
    assert time.monotonic() - started < 20
    assert f"could not fetch {spec} from the Hugging Face hub" in message and "local file" in message
    with pytest.raises(DataError):
        load_hub_dataset(spec)


def test_hub_spec_parsing():
    assert parse_hub_spec("hf:imdb") == ("imdb", None)
    assert parse_hub_spec("hf:glue:sst2") == ("glue", "sst2")
    assert parse_hub_spec("hf:stanfordnlp/imdb") == ("stanfordnlp/imdb", None)
    with pytest.raises(DataError, match="hf:<hub id>"):
        parse_hub_spec("hf:")


def test_hub_frames_normalise_a_real_dataset_dict():
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    train = datasets.Dataset.from_dict(
        {"sentence": [f" s{i} " for i in range(50)], "label": [i % 2 for i in range(50)]}, features=features)
    test = datasets.Dataset.from_dict({"sentence": ["t"], "label": [-1]}, features=datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.Value("int64")}))
    frames = hub_frames(datasets.DatasetDict({"train": train, "test": test}), "hf:x")
    assert {k: len(v) for k, v in frames.items()} == {"train": 40, "validation": 5, "test": 5}
    assert frames["train"].attrs["label_names"] == ["neg", "pos"]
    assert list(frames["validation"].columns) == ["text", "label"] and frames["train"]["text"].iloc[0].startswith("s")
