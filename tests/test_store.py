"""The DuckDB run store: ingestion, migrations, downsampling, config diff, export/import."""

from __future__ import annotations

import json
import math
import random

import duckdb
import pandas as pd
import pytest

from ptft_core.config import flatten
from ptft_core.store import Store, schema


def metric(run_id, seq, step, value, name="loss", split="train", wall_time=None, **extra):
    return {"type": "metric", "run_id": run_id, "seq": seq, "step": step, "epoch": None, "split": split,
            "name": name, "value": value, "wall_time": wall_time if wall_time is not None else 1000.0 + seq,
            "tokens_seen": step * 10, **extra}


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "ptft.duckdb") as s:
        yield s


def add_run(store, run_id="r1", **config):
    store.insert_run({"id": run_id, "name": run_id, "kind": "pretrain",
                      "config": {"kind": "pretrain", "seed": 0, "optim": {"lr": 1e-3}, **config}})


def test_new_store_is_at_latest_version(store):
    assert store.version() == schema.LATEST
    assert store.list_runs().empty


def test_ingest_is_idempotent_by_run_and_seq(store):
    add_run(store)
    events = [metric("r1", i, i, float(i)) for i in range(1, 101)]
    assert store.ingest_events(events) == 100
    assert store.ingest_events(events) == 0  # the same batch again
    assert store.ingest_events(events[50:] + [metric("r1", 101, 101, 1.0)]) == 1  # overlapping batch
    counts = store.query("SELECT count(*) AS n, count(DISTINCT seq) AS d FROM metrics").iloc[0]
    assert counts["n"] == counts["d"] == 101


def test_ingest_updates_the_run_row_and_offsets(store):
    add_run(store)
    store.ingest_events([
        {"type": "status", "run_id": "r1", "seq": 1, "status": "running", "pid": 42, "device": "cpu",
         "attempt": 1, "wall_time": 1_700_000_000.0},
        metric("r1", 2, 1, 3.0),
        {"type": "progress", "run_id": "r1", "seq": 3, "step": 1, "total_steps": 10},
        {"type": "checkpoint", "run_id": "r1", "seq": 4, "step": 1, "path": "/x/step-1"},
        {"type": "checkpoint", "run_id": "r1", "seq": 5, "step": 1, "path": "/x/step-1"},
        metric("r1", 6, 2, float("nan")),
    ], offsets={"r1": 1234})
    row = store.get_run("r1")
    assert (row["status"], row["pid"], row["device"], row["step"], row["total_steps"]) == ("running", 42, "cpu",
                                                                                          1, 10)
    assert row["journal_offset"] == 1234 and row["started_at"].timestamp() == 1_700_000_000.0
    assert len(store.artifacts("r1")) == 1
    assert store.query("SELECT value FROM metrics WHERE seq = 6")["value"].isna().all()  # NaN stored as null
    store.ingest_events([{"type": "status", "run_id": "r1", "seq": 7, "status": "failed", "error": "boom"}])
    row = store.get_run("r1")
    assert row["status"] == "failed" and row["error"] == "boom" and row["finished_at"] is not None


def test_ingest_skips_unknown_runs(store):
    add_run(store)
    assert store.ingest_events([metric("r1", 1, 1, 1.0), metric("ghost", 1, 1, 1.0)]) == 1


def test_resume_event_supersedes_later_rows_of_earlier_attempts(store):
    add_run(store)
    store.ingest_events([metric("r1", i, i, float(i)) for i in range(1, 21)])  # attempt 1 reached step 20
    store.update_run("r1", attempt=2)
    store.ingest_events([
        {"type": "status", "run_id": "r1", "seq": 21, "status": "running", "attempt": 2},
        {"type": "resume", "run_id": "r1", "seq": 22, "from_step": 10, "attempt": 2},
        *[metric("r1", 22 + i, 10 + i, float(10 + i)) for i in range(1, 11)],
    ])
    df = store.query("SELECT step, attempt, superseded FROM metrics ORDER BY seq")
    assert df[df.superseded].step.tolist() == list(range(11, 21))
    assert (df[df.superseded].attempt == 1).all() and (df[(df.step > 10) & ~df.superseded].attempt == 2).all()
    series = store.metric_series(["r1"])
    assert series["x"].tolist() == list(range(1, 21))  # continuous, no duplicates


def test_seconds_per_step_is_the_latest_attempts_recent_pace(store):
    """A resumed run's pace is its new attempt's (the first ran at 10 s a step, the second at 2), over its last
    training steps only; several metrics logged at one step count once; a run with one step has no pace yet."""
    add_run(store)
    add_run(store, "r2")
    store.ingest_events([metric("r1", i, i, 1.0, wall_time=10.0 * i) for i in range(1, 21)])
    store.update_run("r1", attempt=2)
    store.ingest_events([
        {"type": "status", "run_id": "r1", "seq": 21, "status": "running", "attempt": 2},
        {"type": "resume", "run_id": "r1", "seq": 22, "from_step": 10, "attempt": 2},
        *[metric("r1", 22 + 2 * i, 10 + i, 1.0, wall_time=500.0 + 2 * i) for i in range(1, 31)],
        *[metric("r1", 23 + 2 * i, 10 + i, 1e-3, name="lr", wall_time=500.0 + 2 * i) for i in range(1, 31)],
        metric("r2", 1, 1, 1.0),
    ])
    # the last 50 steps of attempt 2 are its 30 steps 11..40, 2 s apart (earlier steps are ignored)
    assert store.seconds_per_step(["r1", "r2", "nope"]) == {"r1": pytest.approx(2.0)}
    assert store.seconds_per_step(["r1"], window=5) == {"r1": pytest.approx(2.0)}
    assert store.seconds_per_step([]) == {}
    # the ETA extrapolates that pace over the steps left
    from ptft_core.ui import eta_seconds

    assert eta_seconds({"step": 40, "total_steps": 100}, seconds_per_step=2.0) == 120.0
    assert eta_seconds({"step": 40, "total_steps": None}, seconds_per_step=2.0) is None


def test_a_runs_reported_pace_is_kept_while_it_runs_and_cleared_when_it_ends(store):
    from ptft_core.ui import eta_seconds, training_pace

    add_run(store)
    store.ingest_events([
        {"type": "status", "run_id": "r1", "seq": 1, "status": "running", "attempt": 1},
        {"type": "progress", "run_id": "r1", "seq": 2, "step": 10, "total_steps": 27, "train_steps_per_s": 2.5,
         "eta_s": 42.0},
    ])
    row = store.get_run("r1")
    assert (row["step"], row["total_steps"], row["train_steps_per_s"], row["eta_s"]) == (10, 27, 2.5, 42.0)
    assert eta_seconds(row, seconds_per_step=100.0) == 42.0  # the run's own schedule, not its rows' wall pace
    assert training_pace(row) == " · train 2.50 steps/s"
    store.ingest_events([{"type": "progress", "run_id": "r1", "seq": 3, "step": 11}])  # no pace: the last stays
    assert store.get_run("r1")["eta_s"] == 42.0
    store.ingest_events([{"type": "status", "run_id": "r1", "seq": 4, "status": "completed"}])
    row = store.get_run("r1")
    assert pd.isna(row["eta_s"]) and pd.isna(row["train_steps_per_s"]) and training_pace(row) == ""


def test_migrates_a_version_1_database(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(schema.MIGRATIONS[0])
    con.execute("INSERT INTO schema_version (version) VALUES (1)")
    con.execute("INSERT INTO runs (id, kind, config, status, created_at, tags) VALUES"
                " ('old', 'pretrain', '{\"kind\": \"pretrain\"}', 'completed', now(), ['a'])")
    con.execute("INSERT INTO metrics VALUES ('old', 1, 1, NULL, 'train', 'loss', 2.5, 1000.0, 10)")
    con.close()
    with Store(path) as store:
        assert store.version() == schema.LATEST == 4
        assert store.list_sweeps().empty  # version 3: the sweeps table
        assert pd.isna(store.get_run("old")["eta_s"])  # version 4: a running run's reported pace
        row = store.get_run("old")
        assert row["attempt"] == 1 and row["priority"] == 0 and row["journal_offset"] == 0
        assert row["queued_at"] == row["created_at"] and row["tags"] == ["a"]
        m = store.query("SELECT * FROM metrics").iloc[0]
        assert m["attempt"] == 1 and not m["superseded"] and m["value"] == 2.5
        assert store.ingest_events([metric("old", 1, 1, 9.9), metric("old", 2, 2, 2.0)]) == 1
    with Store(path) as store:  # reopening does not migrate again
        assert store.query("SELECT count(*) AS n FROM schema_version")["n"][0] == 4


def test_refuses_a_newer_database(tmp_path):
    path = tmp_path / "new.duckdb"
    Store(path).close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version (version) VALUES (99)")
    con.close()
    with pytest.raises(RuntimeError, match="newer"):
        Store(path)


def test_downsampling_bounds_points_and_keeps_extremes(store):
    rng = random.Random(0)
    add_run(store, "big")
    add_run(store, "small")
    values = [rng.gauss(0, 1) for _ in range(10_000)]
    values[1234], values[8765] = 50.0, -50.0  # a spike and a dip that must survive
    store.ingest_events([metric("big", i + 1, i, v) for i, v in enumerate(values)])
    store.ingest_events([metric("big", 20_000 + i, i, float(i), name="lr") for i in range(10_000)])
    store.ingest_events([metric("small", i + 1, i, float(i)) for i in range(50)])
    df = store.metric_series(["big", "small"], max_points=200)
    sizes = df.groupby(["run_id", "name"]).size()
    assert sizes[("big", "loss")] <= 200 and sizes[("big", "lr")] <= 200
    assert sizes[("small", "loss")] == 50  # short series come back whole
    big = df[(df.run_id == "big") & (df.name == "loss")]
    assert big["value"].max() == 50.0 and big["value"].min() == -50.0
    assert big["x"].min() == 0 and big["x"].max() == 9999  # first and last points kept
    assert big["x"].is_monotonic_increasing
    first_last = big.set_index("x")["value"]
    assert first_last[0] == values[0] and first_last[9999] == values[-1]
    only = store.metric_series(["big"], names=["lr"], splits=["train"], max_points=50)
    assert set(only["name"]) == {"lr"} and len(only) <= 50


def test_series_x_axes(store):
    add_run(store)
    store.update_run("r1", started_at=pd.Timestamp(990.0, unit="s", tz="UTC").to_pydatetime())
    events = [metric("r1", i, i, float(i), wall_time=1000.0 + i) for i in range(1, 11)]
    for e in events:
        e["epoch"] = e["step"] / 10
    store.ingest_events(events)
    assert store.metric_series(["r1"], x="wall_time")["x"].tolist() == [10.0 + i for i in range(1, 11)]
    assert store.metric_series(["r1"], x="tokens_seen")["x"].tolist() == [10 * i for i in range(1, 11)]
    assert store.metric_series(["r1"], x="epoch")["x"].tolist() == pytest.approx([i / 10 for i in range(1, 11)])
    with pytest.raises(ValueError):
        store.metric_series(["r1"], x="bogus")
    assert list(store.metric_series([]).columns) == ["run_id", "split", "name", "x", "value"]


def test_metric_names_and_last_metrics(store):
    add_run(store)
    store.ingest_events([metric("r1", 1, 1, 1.0), metric("r1", 2, 2, 0.5),
                         metric("r1", 3, 2, 0.7, name="accuracy", split="validation")])
    names = store.metric_names(["r1"])
    assert names.to_dict("records") == [{"split": "train", "name": "loss"},
                                        {"split": "validation", "name": "accuracy"}]
    last = store.last_metrics("r1").set_index("name")
    assert last.loc["loss", "value"] == 0.5 and last.loc["loss", "step"] == 2


def test_config_diff_shows_only_differing_flattened_keys(store):
    add_run(store, "a", seed=0, optim={"lr": 1e-3, "optimizer": "adamw"}, corpus=["news"])
    add_run(store, "b", seed=1, optim={"lr": 1e-3, "optimizer": "sgd"}, corpus=["news"])
    add_run(store, "c", seed=1, optim={"lr": 1e-3, "optimizer": "adamw"}, corpus=["news", "wiki"])
    diff = store.config_diff(["a", "b", "c"])
    assert sorted(diff.index) == ["corpus", "optim.optimizer", "seed"]
    assert list(diff.columns) == ["a", "b", "c"]
    assert diff.loc["optim.optimizer"].tolist() == ["adamw", "sgd", "adamw"]
    assert diff.loc["corpus", "c"] == json.dumps(["news", "wiki"])
    assert flatten({"a": {"b": {"c": 1}}, "d": 2}) == {"a.b.c": 1, "d": 2}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_import_round_trip(store, tmp_path, suffix):
    add_run(store, "r1")
    add_run(store, "r2", seed=1)
    store.set_tags("r1", ["baseline", " x ", ""])
    store.ingest_events([metric("r1", i, i, math.sin(i)) for i in range(1, 301)]
                        + [metric("r2", i, i, float(i)) for i in range(1, 11)])
    store.mark_superseded("r1", after_step=250, before_attempt=2)
    out = store.export_metrics(["r1"], tmp_path / f"export{suffix}")
    assert out.exists() and (tmp_path / "export.runs.json").exists()
    with Store(tmp_path / "other.duckdb") as other:
        assert other.import_run(out) == ["r1"]
        assert other.import_run(out) == ["r1"]  # idempotent
        mine = store.query("SELECT * EXCLUDE (epoch) FROM metrics WHERE run_id = 'r1' ORDER BY seq")
        theirs = other.query("SELECT * EXCLUDE (epoch) FROM metrics ORDER BY seq")
        pd.testing.assert_frame_equal(mine, theirs, check_dtype=False)
        assert other.get_run("r1")["tags"] == ["baseline", "x"]
        assert other.get_run("r1")["config"] == store.get_run("r1")["config"]
    with pytest.raises(ValueError):
        store.export_metrics(["r1"], tmp_path / "x.xlsx")
    with pytest.raises(KeyError):
        store.export_metrics(["nope"], tmp_path / "x.csv")


def test_list_runs_filters_tags_notes_delete(store):
    add_run(store, "a")
    add_run(store, "b")
    store.update_run("b", status="completed", study="s1")
    store.set_tags("a", ["x"])
    store.set_notes("a", "hello")
    assert store.list_runs(status="queued")["id"].tolist() == ["a"]
    assert store.list_runs(status=["queued", "completed"]).shape[0] == 2
    assert store.list_runs(tag="x")["id"].tolist() == ["a"]
    assert store.list_runs(study="s1")["id"].tolist() == ["b"]
    assert store.list_runs(kind="finetune").empty
    assert store.get_run("a")["notes"] == "hello"
    store.ingest_events([metric("a", 1, 1, 1.0)])
    store.delete_run("a")
    assert not store.has_run("a") and store.query("SELECT count(*) AS n FROM metrics")["n"][0] == 0
    with pytest.raises(KeyError):
        store.get_run("a")


def test_read_only_open(tmp_path):
    path = tmp_path / "ro.duckdb"
    with Store(path) as s:
        add_run(s)
    with Store(path, read_only=True) as a, Store(path, read_only=True) as b:
        assert a.get_run("r1")["id"] == b.get_run("r1")["id"] == "r1"
        with pytest.raises(RuntimeError):
            a.update_run("r1", notes="x")
    with pytest.raises(FileNotFoundError):
        Store(tmp_path / "missing.duckdb", read_only=True)


def test_studies(store):
    store.create_study("s1", "lr sweep", template="lr", preset="tiny", config={"lrs": [1e-3, 1e-4]})
    assert store.get_study("s1")["config"] == {"lrs": [1e-3, 1e-4]}
    assert store.list_studies()["id"].tolist() == ["s1"]
