"""Run-store benchmarks: ingestion rate (three SQL forms and two sources compared), re-ingestion, the full
journal-to-DuckDB path, and the downsampled chart fetch of 100 runs x 10,000 points.

Targets: ingestion >= 100,000 metric rows/s; chart fetch < 200 ms.
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa

from bench import row
from ptft_core.engine.devices import cpu_cores
from ptft_core.journal import JournalWriter, read_events
from ptft_core.store import Store

NAME = "store"
INGEST_ROWS = 200_000
BATCH = 10_000  # rows per ingest call: a busy poll of several runs
RUNS, POINTS = 100, 10_000


def metric_events(run_id: str, n: int, start_seq: int = 1) -> list[dict]:
    rng = random.Random(0)
    names = ["loss", "lr", "grad_norm", "tokens_per_s", "accuracy"]
    return [{"type": "metric", "run_id": run_id, "seq": start_seq + i, "step": (start_seq + i) // 5,
             "epoch": None, "split": "train", "name": names[i % 5], "value": rng.random(),
             "wall_time": 1.7e9 + i * 0.01, "tokens_seen": i * 256} for i in range(n)]


def _fresh(folder: Path, name: str) -> Store:
    store = Store(folder / f"{name}.duckdb")
    store.insert_run({"id": "r", "kind": "pretrain", "config": {"kind": "pretrain"}})
    return store


def _timed_insert(store: Store, tables: list, sql: str) -> float:
    start = time.perf_counter()
    with store._tx() as con:  # the same transaction shape as ingest_events
        for table in tables:
            con.register("_src", table)
            con.execute(sql)
            con.unregister("_src")
    return time.perf_counter() - start


def ingest_methods(folder: Path) -> list[dict]:
    """The SQL forms, timed on pre-built tables: what the database side costs."""
    events = metric_events("r", INGEST_ROWS)
    batches = [events[i:i + BATCH] for i in range(0, len(events), BATCH)]
    arrow = [Store._metric_table(b, {"r": 1}, {}) for b in batches]
    frames = [t.to_pandas() for t in arrow]
    cols = "run_id, seq, step, epoch, split, name, value, wall_time, tokens_seen, attempt, superseded"
    forms = {
        "arrow + ON CONFLICT DO NOTHING": (arrow, f"INSERT INTO metrics ({cols}) SELECT *, false FROM _src"
                                                  " ON CONFLICT DO NOTHING"),
        "arrow + anti-join": (arrow, f"INSERT INTO metrics ({cols}) SELECT s.*, false FROM _src s WHERE NOT EXISTS"
                                     " (SELECT 1 FROM metrics m WHERE m.run_id = s.run_id AND m.seq = s.seq)"),
        "pandas + ON CONFLICT DO NOTHING": (frames, f"INSERT INTO metrics ({cols}) SELECT *, false FROM _src"
                                                    " ON CONFLICT DO NOTHING"),
    }
    rows = []
    for i, (label, (tables, sql)) in enumerate(forms.items()):
        with _fresh(folder, f"methods{i}") as store:
            first = _timed_insert(store, tables, sql)
            again = _timed_insert(store, tables, sql)  # every row a duplicate
            n = store.query("SELECT count(*) AS n FROM metrics")["n"][0]
            assert n == INGEST_ROWS, (label, n)
        rows.append(row(NAME, f"insert {label}", INGEST_ROWS / first, "rows/s", ">= 100000"))
        rows.append(row(NAME, f"re-insert duplicates, {label}", INGEST_ROWS / again, "rows/s", None))
    return rows


def ingest_events_rate(folder: Path) -> list[dict]:
    """`Store.ingest_events` as the engine calls it: event dicts in, one transaction per batch."""
    events = metric_events("r", INGEST_ROWS)
    with _fresh(folder, "ingest") as store:
        start = time.perf_counter()
        for i in range(0, len(events), BATCH):
            store.ingest_events(events[i:i + BATCH], {"r": i})
        elapsed = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(0, len(events), BATCH):
            store.ingest_events(events[i:i + BATCH])
        again = time.perf_counter() - start
    return [row(NAME, "Store.ingest_events (dicts -> Arrow -> DuckDB)", INGEST_ROWS / elapsed, "rows/s", ">= 100000"),
            row(NAME, "Store.ingest_events, all duplicates", INGEST_ROWS / again, "rows/s", None)]


def journal_to_store_rate(folder: Path) -> list[dict]:
    """The whole path: a journal file written by JournalWriter, read and parsed from offsets, ingested."""
    run_dir = folder / "journal-run"
    run_dir.mkdir()
    writer = JournalWriter(run_dir, "r")
    rng = random.Random(0)
    for i in range(INGEST_ROWS):
        writer.metric(i // 5, "loss", rng.random(), tokens_seen=i * 256)
    writer.close()
    with _fresh(folder, "journal") as store:
        start = time.perf_counter()
        offset, total = 0, 0
        size = (run_dir / "events.jsonl").stat().st_size
        chunk_bytes = size // (INGEST_ROWS // BATCH)
        while offset < size:  # read in poll-sized chunks, as the engine tails a growing file
            events, new_offset = _read_chunk(run_dir / "events.jsonl", offset, chunk_bytes)
            total += store.ingest_events(events, {"r": new_offset})
            offset = new_offset
        elapsed = time.perf_counter() - start
    assert total == INGEST_ROWS
    return [row(NAME, "journal file -> read_events -> ingest_events", INGEST_ROWS / elapsed, "rows/s", ">= 100000")]


def _read_chunk(path: Path, offset: int, nbytes: int) -> tuple[list[dict], int]:
    # read_events reads to the end; for a chunked read, bound it with a temporary view of the file.
    with open(path, "rb") as f:
        f.seek(offset)
        chunk = f.read(nbytes)
    end = chunk.rfind(b"\n") + 1
    if end == 0:
        return read_events(path, offset)
    return [json.loads(line) for line in chunk[:end].splitlines() if line.strip()], offset + end


def chart_fetch(folder: Path) -> list[dict]:
    """100 runs x 10,000 points of train loss (plus two other series per run in the table)."""
    with Store(folder / "chart.duckdb") as store:
        ids = [f"run-{i:03d}" for i in range(RUNS)]
        for rid in ids:
            store.insert_run({"id": rid, "kind": "pretrain", "config": {"kind": "pretrain"}})
        rng = random.Random(1)
        for name_i, name in enumerate(["loss", "lr", "grad_norm"]):
            for rid in ids:
                n = POINTS
                table = pa.table({
                    "run_id": [rid] * n, "seq": [name_i * POINTS + s + 1 for s in range(n)],
                    "step": list(range(1, n + 1)), "epoch": [None] * n, "split": ["train"] * n,
                    "name": [name] * n, "value": [rng.random() for _ in range(n)],
                    "wall_time": [1.7e9 + s for s in range(n)], "tokens_seen": [s * 256 for s in range(n)],
                })
                with store._tx() as con:
                    con.register("_src", table)
                    con.execute("INSERT INTO metrics (run_id, seq, step, epoch, split, name, value, wall_time,"
                                " tokens_seen) SELECT * FROM _src")
                    con.unregister("_src")
        rows = []
        cores = cpu_cores()
        # All cores, and 2 DuckDB threads (the project's 2-core laptop) when the machine has more.
        for threads in sorted({cores, min(2, cores)}, reverse=True):
            with store._cursor() as con:
                con.execute(f"SET threads = {threads}")
            for max_points, x in ((2000, "step"), (500, "step"), (2000, "wall_time")):
                times = []
                for _ in range(6):
                    start = time.perf_counter()
                    df = store.metric_series(ids, names=["loss"], splits=["train"], x=x, max_points=max_points)
                    times.append(time.perf_counter() - start)
                per_series = df.groupby("run_id").size().max()
                assert per_series <= max_points
                rows.append(row(NAME, f"chart fetch {RUNS} runs x {POINTS} pts, x={x}, max_points={max_points}, "
                                 f"{threads} threads ({len(df)} rows out)", 1000 * statistics.median(times[1:]),
                                 "ms", "< 200"))
    return rows



def run() -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="ptft-bench-") as tmp:
        folder = Path(tmp)
        rows = ingest_methods(folder)
        rows += ingest_events_rate(folder)
        rows += journal_to_store_rate(folder)
        rows += chart_fetch(folder)
    return rows


if __name__ == "__main__":
    print(pd.DataFrame(run()).to_string(index=False))
