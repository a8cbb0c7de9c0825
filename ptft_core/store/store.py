"""`Store`: the DuckDB run store (runs, metrics, artifacts, studies, sweeps), owned by one process.

DuckDB lets one process open a database file read-write; a second process (read-write or read-only) gets an
IO error naming the holder's PID. `Store` turns that into `StoreLockedError`, which names the PID and, where it
can, the holder's command line, so "the dashboard is already running" is obvious. Nothing is written before the
lock is held, so a refused open never touches the file.

Inside the owning process several threads may use one `Store` (the engine's loop thread ingests while Streamlit
script threads query): each call borrows a DuckDB cursor from a small pool (cursors of one database see each
other's committed writes and read concurrently), and every write goes through one lock, in one transaction.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from ptft_core import paths
from ptft_core.config import flatten
from ptft_core.lab import STATUSES, X_AXES
from ptft_core.store import schema
from ptft_core.store.series import series_sql

log = logging.getLogger(__name__)

# `pruned`: stopped early by a sweep's pruner (the reason in `error`); finished, like completed, never a failure.

RUN_COLUMNS = (
    "id", "name", "kind", "parent_run", "study", "config", "status", "device", "pid", "heartbeat", "step",
    "total_steps", "created_at", "started_at", "finished_at", "error", "tags", "notes", "priority", "attempt",
    "journal_offset", "queued_at", "resume_step", "train_steps_per_s", "eta_s",
)
METRIC_COLUMNS = ("run_id", "seq", "step", "epoch", "split", "name", "value", "wall_time", "tokens_seen",
                  "attempt", "superseded")
_METRIC_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("seq", pa.int64()), ("step", pa.int64()), ("epoch", pa.float64()),
    ("split", pa.string()), ("name", pa.string()), ("value", pa.float64()), ("wall_time", pa.float64()),
    ("tokens_seen", pa.int64()), ("attempt", pa.int32()),
])
_TIME_COLUMNS = ("heartbeat", "created_at", "started_at", "finished_at", "queued_at")
_INT_COLUMNS = ("pid", "step", "total_steps", "priority", "attempt", "journal_offset", "resume_step")


class StoreLockedError(RuntimeError):
    """The database file is held by another process (DuckDB allows one writer per file)."""

    def __init__(self, path: Path, pid: int | None, holder: str | None = None):
        self.path, self.pid, self.holder = path, pid, holder
        who = f"process {pid}" if pid else "another process"
        if holder:
            who += f" ({holder})"
        super().__init__(
            f"the run store {path} is in use by {who}. One process owns it at a time (the dashboard or one "
            f"`python -m ptft_core run`): stop that process, or use it, or point this one at another file "
            f"with --db / PTFT_HOME."
        )


_LOCK_PID = re.compile(r"PID (\d+)")


def _locked_error(path: Path, exc: Exception) -> StoreLockedError | None:
    text = str(exc)
    if "lock" not in text.lower():
        return None
    match = _LOCK_PID.search(text)
    pid = int(match.group(1)) if match else None
    holder = None
    if pid:
        try:
            import psutil

            holder = " ".join(psutil.Process(pid).cmdline())[:160] or None
        except Exception:  # gone, or not ours to inspect: the PID alone still names it
            holder = None
    return StoreLockedError(path, pid, holder)


def now() -> datetime:
    return datetime.now(UTC)


def from_epoch(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(float(t), UTC)


class Store:
    """The DuckDB run store. `Store(path)` opens (creating and migrating) `path`, default `paths.db_path()`.

    `read_only=True` opens an existing file without writing (several read-only processes may share a file, but
    not with a writer); it refuses a file whose schema is older than this code's (open it once read-write).
    """

    def __init__(self, path: str | Path | None = None, read_only: bool = False, pool_size: int = 4):
        self.path = Path(path) if path is not None else paths.db_path()
        self.read_only = read_only
        if read_only and not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no run store here yet")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._root = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as exc:
            locked = _locked_error(self.path, exc)
            if locked is not None:
                raise locked from None
            raise
        self._write_lock = threading.RLock()
        # Counts committed write transactions: a reader that saw the same revision would read the same answer
        # (the lab service keeps its answers to polling clients until it moves).
        self.revision = 0
        self._pool: queue.SimpleQueue[duckdb.DuckDBPyConnection] = queue.SimpleQueue()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._pool_size = pool_size
        self._closed = False
        if read_only:
            if self.version() != schema.LATEST:
                self.close()
                raise RuntimeError(f"{self.path}: schema version differs from this code's; open it read-write once")
        else:
            self._migrate()

    # -- connection plumbing -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._closed:
            raise RuntimeError("the store is closed")
        try:
            con = self._pool.get_nowait()
        except queue.Empty:
            con = self._root.cursor()
            with self._write_lock:
                self._cursors.append(con)
        try:
            yield con
        finally:
            # DuckDB 2 keeps a partly fetched execute() result open, and refuses other work on the connection
            # until it is finished: finish it before the cursor goes back to the pool.
            with contextlib.suppress(duckdb.Error):
                con.complete()
            self._pool.put(con)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One write transaction; writes are serialised by a lock so they never conflict."""
        if self.read_only:
            raise RuntimeError("the store is open read-only")
        with self._write_lock, self._cursor() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
            self.revision += 1  # under the write lock

    def query(self, sql: str, params: Sequence[Any] | dict | None = None) -> pd.DataFrame:
        """A read query as a DataFrame (for tests, exports and one-off questions)."""
        with self._cursor() as con:
            # Through Arrow: DuckDB's own `.df()` of TIMESTAMPTZ columns trips a pandas deprecation warning.
            rel = con.sql(sql, params=params or None)
            return rel.to_arrow_table().to_pandas() if rel is not None else pd.DataFrame()

    def _fetchall(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        with self._cursor() as con:
            return con.execute(sql, params or []).fetchall()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for con in self._cursors:
            with contextlib.suppress(Exception):
                con.close()
        self._root.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- schema ----------------------------------------------------------------------------------------------
    def version(self) -> int:
        with self._cursor() as con:
            exists = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
            ).fetchone()[0]
            if not exists:
                return 0
            return int(con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.version()
        if current > schema.LATEST:
            raise RuntimeError(f"{self.path} has schema version {current}, newer than this ptft ({schema.LATEST})")
        for target in range(current + 1, schema.LATEST + 1):
            with self._tx() as con:
                con.execute(schema.MIGRATIONS[target - 1])
                con.execute("INSERT INTO schema_version (version) VALUES (?)", [target])
            log.debug("%s: migrated the run store to schema version %d", self.path, target)

    # -- runs ------------------------------------------------------------------------------------------------
    def insert_run(self, row: dict[str, Any]) -> None:
        row = dict(row)
        row.setdefault("created_at", now())
        row.setdefault("queued_at", row["created_at"])
        row.setdefault("status", "queued")
        row.setdefault("tags", [])
        row.setdefault("notes", "")
        row.setdefault("priority", 0)
        row.setdefault("attempt", 1)
        row.setdefault("journal_offset", 0)
        if not isinstance(row.get("config"), str):
            row["config"] = json.dumps(row["config"], sort_keys=True)
        unknown = set(row) - set(RUN_COLUMNS)
        if unknown:
            raise ValueError(f"unknown run column(s): {', '.join(sorted(unknown))}")
        cols = list(row)
        with self._tx() as con:
            con.execute(
                f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                [row[c] for c in cols],
            )

    def update_run(self, run_id: str, **fields: Any) -> None:
        if not fields:
            return
        unknown = set(fields) - set(RUN_COLUMNS)
        if unknown:
            raise ValueError(f"unknown run column(s): {', '.join(sorted(unknown))}")
        if "config" in fields and not isinstance(fields["config"], str):
            fields["config"] = json.dumps(fields["config"], sort_keys=True)
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as con:
            con.execute(f"UPDATE runs SET {sets} WHERE id = ?", [*fields.values(), run_id])

    def has_run(self, run_id: str) -> bool:
        return bool(self._fetchall("SELECT count(*) FROM runs WHERE id = ?", [run_id])[0][0])

    def get_run(self, run_id: str) -> dict[str, Any]:
        """The run's row as a dict; `config` is parsed, timestamps are aware datetimes. KeyError if unknown."""
        rows = self._run_rows("WHERE id = ?", [run_id])
        if not rows:
            raise KeyError(f"no run {run_id!r} in {self.path}")
        return rows[0]

    def _run_rows(self, where: str, params: list[Any]) -> list[dict[str, Any]]:
        # Through pandas: DuckDB's tuple fetch of TIMESTAMPTZ needs pytz, which the lab does not install.
        df = self.query(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs {where}", params)
        out = []
        for row in df.to_dict("records"):
            row = {k: (None if _isna(v) else v) for k, v in row.items()}
            for col in _TIME_COLUMNS:
                if row[col] is not None:
                    row[col] = row[col].to_pydatetime()
            for col in _INT_COLUMNS:
                if row[col] is not None:
                    row[col] = int(row[col])
            row["config"] = json.loads(row["config"]) if row["config"] else {}
            row["tags"] = list(row["tags"]) if row["tags"] is not None else []
            out.append(row)
        return out

    def list_runs(self, status: str | Iterable[str] | None = None, kind: str | None = None,
                  tag: str | None = None, study: str | None = None) -> pd.DataFrame:
        """Runs, newest first, with every column of `runs` (config as JSON text, tags as lists)."""
        where, params = [], []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            where.append("list_contains(?, status)")
            params.append(statuses)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if tag is not None:
            where.append("list_contains(tags, ?)")
            params.append(tag)
        if study is not None:
            where.append("study = ?")
            params.append(study)
        sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC"
        df = self.query(sql, params)
        df["tags"] = [list(t) if t is not None else [] for t in df["tags"]]
        return df

    def statuses(self, run_ids: Iterable[str]) -> dict[str, str]:
        """run id -> status, in one query; unknown ids are absent."""
        return dict(self._fetchall("SELECT id, status FROM runs WHERE list_contains(?, id)", [list(run_ids)]))

    def runs_with_status(self, *statuses: str) -> list[dict[str, Any]]:
        """Runs in these states, in queue order (priority, then FIFO)."""
        return self._run_rows("WHERE list_contains(?, status) ORDER BY priority DESC, queued_at, id",
                              [list(statuses)])

    def set_tags(self, run_id: str, tags: Iterable[str]) -> None:
        self.update_run(run_id, tags=sorted({t.strip() for t in tags if t.strip()}))

    def set_notes(self, run_id: str, notes: str) -> None:
        self.update_run(run_id, notes=notes)

    def delete_run(self, run_id: str) -> None:
        """Removes the run's row, metrics and artifacts (the engine also removes its folder)."""
        with self._tx() as con:
            for table, col in (("metrics", "run_id"), ("artifacts", "run_id"), ("runs", "id")):
                con.execute(f"DELETE FROM {table} WHERE {col} = ?", [run_id])

    # -- studies ---------------------------------------------------------------------------------------------
    def create_study(self, study_id: str, name: str, template: str | None = None, preset: str | None = None,
                     config: Any = None) -> str:
        with self._tx() as con:
            con.execute(
                "INSERT INTO studies (id, name, template, preset, created_at, config) VALUES (?, ?, ?, ?, ?, ?)",
                [study_id, name, template, preset, now(), json.dumps(config) if config is not None else None],
            )
        return study_id

    def list_studies(self) -> pd.DataFrame:
        return self.query("SELECT * FROM studies ORDER BY created_at DESC")

    def get_study(self, study_id: str) -> dict[str, Any]:
        df = self.query("SELECT * FROM studies WHERE id = ?", [study_id])
        if df.empty:
            raise KeyError(f"no study {study_id!r}")
        row = df.iloc[0].to_dict()
        row["config"] = json.loads(row["config"]) if isinstance(row["config"], str) else None
        return row

    # -- sweeps ----------------------------------------------------------------------------------------------
    def create_sweep(self, sweep_id: str, name: str, spec: dict[str, Any]) -> str:
        with self._tx() as con:
            con.execute("INSERT INTO sweeps (id, name, spec, status, created_at) VALUES (?, ?, ?, 'running', ?)",
                        [sweep_id, name, json.dumps(spec, sort_keys=True), now()])
        return sweep_id

    def list_sweeps(self) -> pd.DataFrame:
        """Sweeps, newest first (spec as JSON text)."""
        return self.query("SELECT * FROM sweeps ORDER BY created_at DESC, id DESC")

    def get_sweep(self, sweep_id: str) -> dict[str, Any]:
        """The sweep's row, `spec` parsed; KeyError if unknown."""
        df = self.query("SELECT * FROM sweeps WHERE id = ?", [sweep_id])
        if df.empty:
            raise KeyError(f"no sweep {sweep_id!r}")
        row = {k: (None if _isna(v) else v) for k, v in df.iloc[0].to_dict().items()}
        for col in ("created_at", "finished_at"):
            if row[col] is not None:
                row[col] = row[col].to_pydatetime()
        row["spec"] = json.loads(row["spec"])
        return row

    def set_sweep_status(self, sweep_id: str, status: str, error: str | None = None) -> None:
        """running | done | cancelled | failed; a final one sets finished_at."""
        finished = None if status == "running" else now()
        with self._tx() as con:
            con.execute("UPDATE sweeps SET status = ?, error = ?, finished_at = ? WHERE id = ?",
                        [status, error, finished, sweep_id])

    # -- ingestion -------------------------------------------------------------------------------------------
    def ingest_events(self, events: Sequence[dict[str, Any]], offsets: dict[str, int] | None = None) -> int:
        """Ingest journal events (any runs, any order) in one transaction; returns the metric rows added.

        Idempotent by (run_id, seq): metric rows go in with one `INSERT ... SELECT FROM <arrow table> ON
        CONFLICT DO NOTHING`. Each metric row is tagged with its attempt: the `attempt` of the latest
        `status`/`resume` event before it in the journal, else the run's current attempt. Other events update
        the run row: `status` (running: pid, device, started_at; completed/cancelled/failed/pruned:
        finished_at, error), `progress` (step, total_steps, and the pace: train_steps_per_s, eta_s),
        `heartbeat`, `checkpoint` (an `artifacts` row) and `resume` (marks earlier attempts' rows after the
        resumed step as superseded). `offsets` (run_id -> journal
        byte offset) are saved in the same transaction, so a crash never separates rows from their offset.
        """
        metrics: list[dict[str, Any]] = []
        others: list[dict[str, Any]] = []
        for e in events:
            (metrics if e.get("type") == "metric" else others).append(e)
        others.sort(key=lambda e: (str(e.get("run_id")), e.get("seq", 0)))
        run_ids = {str(e.get("run_id")) for e in events} | set(offsets or ())
        if not run_ids:
            return 0
        known = dict(self._fetchall("SELECT id, attempt FROM runs WHERE list_contains(?, id)", [list(run_ids)]))
        unknown = run_ids - set(known)
        if unknown:
            log.warning("ignoring events of unknown run(s): %s", ", ".join(sorted(unknown)))
            metrics = [e for e in metrics if e.get("run_id") in known]
            others = [e for e in others if e.get("run_id") in known]

        # Attempt boundaries: (seq, attempt) per run from status/resume events that carry an attempt.
        bounds: dict[str, list[tuple[int, int]]] = {}
        for e in others:
            if e.get("attempt") is not None and e.get("type") in ("status", "resume"):
                bounds.setdefault(e["run_id"], []).append((int(e["seq"]), int(e["attempt"])))
        inserted = 0
        with self._tx() as con:
            if metrics:
                table = self._metric_table(metrics, known, bounds)
                con.register("_ingest", table)
                try:
                    inserted = con.execute(
                        "INSERT INTO metrics (run_id, seq, step, epoch, split, name, value, wall_time, tokens_seen,"
                        " attempt, superseded) SELECT *, false FROM _ingest ON CONFLICT DO NOTHING"
                    ).fetchone()[0]
                finally:
                    con.unregister("_ingest")
            self._apply_events(con, others)
            for run_id, offset in (offsets or {}).items():
                if run_id in known:
                    con.execute("UPDATE runs SET journal_offset = ? WHERE id = ?", [int(offset), run_id])
        return int(inserted)

    @staticmethod
    def _metric_table(metrics: list[dict[str, Any]], attempts: dict[str, int],
                      bounds: dict[str, list[tuple[int, int]]]) -> pa.Table:
        cols = {name: [e.get(name) for e in metrics] for name in _METRIC_SCHEMA.names if name != "attempt"}
        att = []
        for e in metrics:
            run_bounds = bounds.get(e["run_id"])
            a = attempts[e["run_id"]]
            if run_bounds:
                seq = e["seq"]
                for s, value in run_bounds:  # few entries per batch: a linear scan is cheaper than bisect setup
                    if s < seq:
                        a = value
            att.append(a)
        cols["attempt"] = att
        values = cols["value"]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values if v is not None):
            cols["value"] = [v if v is None or math.isfinite(v) else None for v in values]
        return pa.table({f.name: pa.array(cols[f.name], type=f.type) for f in _METRIC_SCHEMA})

    @staticmethod
    def _apply_events(con: duckdb.DuckDBPyConnection, events: list[dict[str, Any]]) -> None:
        updates: dict[str, dict[str, Any]] = {}
        for e in events:
            run_id, kind = e["run_id"], e.get("type")
            t = from_epoch(e.get("wall_time")) or now()
            u = updates.setdefault(run_id, {})
            if kind == "status":
                status = e.get("status")
                if status not in STATUSES:
                    continue
                u["status"] = status
                u.update(train_steps_per_s=None, eta_s=None)  # a new attempt, or an end: no pace to show
                if status == "running":
                    u.update(pid=e.get("pid"), started_at=("coalesce", t), heartbeat=t, error=None,
                             finished_at=None)
                    if e.get("device"):
                        u["device"] = e["device"]
                else:
                    u["finished_at"] = t
                    u["error"] = e.get("error") if status in ("failed", "pruned") else None
            elif kind == "progress":
                if e.get("step") is not None:
                    u["step"] = int(e["step"])
                if e.get("total_steps") is not None:
                    u["total_steps"] = int(e["total_steps"])
                for pace in ("train_steps_per_s", "eta_s"):
                    if e.get(pace) is not None:
                        u[pace] = float(e[pace])
            elif kind == "heartbeat":
                u["heartbeat"] = t
            elif kind == "checkpoint" and e.get("path"):
                path = str(e["path"])
                con.execute("DELETE FROM artifacts WHERE run_id = ? AND path = ?", [run_id, path])
                con.execute(
                    "INSERT INTO artifacts (run_id, step, kind, path, created_at) VALUES (?, ?, ?, ?, ?)",
                    [run_id, e.get("step"), e.get("kind") or "checkpoint", path, t or now()],
                )
            elif kind == "resume" and e.get("from_step") is not None and e.get("attempt") is not None:
                con.execute(
                    "UPDATE metrics SET superseded = true WHERE run_id = ? AND attempt < ? AND step > ?"
                    " AND NOT superseded",
                    [run_id, int(e["attempt"]), int(e["from_step"])],
                )
        for run_id, u in updates.items():
            if not u:
                continue
            sets, params = [], []
            for col, value in u.items():
                if isinstance(value, tuple) and value[0] == "coalesce":
                    sets.append(f"{col} = coalesce({col}, ?)")
                    params.append(value[1])
                else:
                    sets.append(f"{col} = ?")
                    params.append(value)
            con.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", [*params, run_id])

    def mark_superseded(self, run_id: str, after_step: int, before_attempt: int) -> int:
        """Marks rows of attempts before `before_attempt` with step > `after_step` superseded; returns the count."""
        with self._tx() as con:
            return int(con.execute(
                "UPDATE metrics SET superseded = true WHERE run_id = ? AND attempt < ? AND step > ?"
                " AND NOT superseded", [run_id, before_attempt, after_step],
            ).fetchone()[0])

    def add_artifact(self, run_id: str, kind: str, path: str, step: int | None = None) -> None:
        with self._tx() as con:
            con.execute("DELETE FROM artifacts WHERE run_id = ? AND path = ?", [run_id, path])
            con.execute("INSERT INTO artifacts VALUES (?, ?, ?, ?, ?)", [run_id, step, kind, path, now()])

    def artifacts(self, run_id: str) -> pd.DataFrame:
        return self.query("SELECT * FROM artifacts WHERE run_id = ? ORDER BY step NULLS LAST, created_at", [run_id])

    # -- queries for the UI ----------------------------------------------------------------------------------
    def metric_names(self, run_ids: Sequence[str]) -> pd.DataFrame:
        """Distinct (split, name) logged by any of `run_ids`."""
        return self.query(
            "SELECT DISTINCT split, name FROM metrics WHERE list_contains(?, run_id) ORDER BY split, name",
            [list(run_ids)],
        )

    def last_metrics(self, run_id: str) -> pd.DataFrame:
        """The latest value of each (split, name) of a run (non-superseded rows)."""
        return self.query(
            "SELECT split, name, arg_max(step, seq) AS step, arg_max(value, seq) AS value FROM metrics"
            " WHERE run_id = ? AND NOT superseded GROUP BY split, name ORDER BY split, name", [run_id],
        )

    def metric_series(self, run_ids: Sequence[str], names: Sequence[str] | None = None,
                      splits: Sequence[str] | None = None, x: str = "step", max_points: int = 2000) -> pd.DataFrame:
        """Long DataFrame (run_id, split, name, x, value), sorted, at most `max_points` rows per series.

        Downsampled in DuckDB: a longer series is cut into `(max_points - 2) // 2` equal-width x buckets and each
        bucket keeps its minimum and maximum point, plus the series' first and last points, so spikes and the
        extremes survive. Superseded rows and missing values are left out; `x="wall_time"` is seconds since the
        run started.
        """
        if x not in X_AXES:
            raise ValueError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")
        if max_points < 4:
            raise ValueError("max_points must be >= 4")
        if not run_ids:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in (
                ("run_id", "str"), ("split", "str"), ("name", "str"), ("x", "float64"), ("value", "float64"))})
        sql, params = series_sql(x, names, splits, max_points)
        return self.query(sql, [list(run_ids), *params])

    def seconds_per_step(self, run_ids: Sequence[str], window: int = 50) -> dict[str, float]:
        """Each run's measured pace over its last `window` logged training steps of its latest attempt (wall
        seconds per step, evaluations and checkpoints in between included): what an ETA should extrapolate.
        Runs with fewer than two such points are left out."""
        if not run_ids:
            return {}
        rows = self._fetchall(
            "WITH latest AS (SELECT run_id, max(attempt) AS attempt FROM metrics WHERE list_contains(?, run_id)"
            "  GROUP BY run_id),"
            " steps AS (SELECT m.run_id, m.step, max(m.wall_time) AS wall_time FROM metrics m"
            "  JOIN latest USING (run_id) WHERE m.attempt = latest.attempt AND m.split = 'train'"
            "  AND NOT m.superseded AND m.wall_time IS NOT NULL GROUP BY m.run_id, m.step),"
            " recent AS (SELECT *, row_number() OVER (PARTITION BY run_id ORDER BY step DESC) AS k FROM steps)"
            " SELECT run_id, (max(wall_time) - min(wall_time)) / (max(step) - min(step)) FROM recent"
            " WHERE k <= ? GROUP BY run_id HAVING max(step) > min(step)", [list(run_ids), window])
        return {run_id: float(rate) for run_id, rate in rows}

    def config_diff(self, run_ids: Sequence[str]) -> pd.DataFrame:
        """Flattened config keys (e.g. `optim.lr`) whose values differ between the runs; one column per run."""
        flat = {rid: flatten(self.get_run(rid)["config"]) for rid in run_ids}
        keys = sorted(set().union(*(f.keys() for f in flat.values()))) if flat else []
        rows = {}
        for key in keys:
            values = [json.dumps(f.get(key, "<absent>"), sort_keys=True) for f in flat.values()]
            if len(set(values)) > 1:
                rows[key] = [_display(f.get(key)) if key in f else None for f in flat.values()]
        df = pd.DataFrame.from_dict(rows, orient="index", columns=list(run_ids))
        df.index.name = "key"
        return df

    # -- export / import -------------------------------------------------------------------------------------
    def metric_rows(self, run_ids: Sequence[str]) -> pd.DataFrame:
        """Every stored metric row of the runs (superseded ones included, flagged), by run and seq: the export."""
        return self.query(f"SELECT {', '.join(METRIC_COLUMNS)} FROM metrics WHERE list_contains(?, run_id)"
                          " ORDER BY run_id, seq", [list(run_ids)])

    def export_metrics(self, run_ids: Sequence[str], path: str | Path) -> Path:
        """Writes the runs' metric rows to `.csv` or `.parquet` (by suffix), and their run rows beside it in
        `<stem>.runs.json`, which `import_run` reads back. Returns the metrics file's path."""
        check_export_path(path)
        rows = [self.get_run(rid) for rid in run_ids]  # KeyError on an unknown id, before writing anything
        return write_export(self.metric_rows(list(run_ids)), rows, path)

    def import_run(self, path: str | Path, runs_path: str | Path | None = None) -> list[str]:
        """Imports runs exported by `export_metrics` (metrics file + its `.runs.json`); idempotent.

        A run id already in this store keeps its row; its metric rows are merged by (run_id, seq)."""
        path = Path(path)
        runs_path = Path(runs_path) if runs_path is not None else runs_json(path)
        rows = json.loads(runs_path.read_text(encoding="utf-8"))
        ids = []
        for row in rows:
            ids.append(row["id"])
            if self.has_run(row["id"]):
                continue
            row = {k: v for k, v in row.items() if k in RUN_COLUMNS}
            for col in _TIME_COLUMNS:
                if isinstance(row.get(col), str):
                    row[col] = datetime.fromisoformat(row[col])
            if row.get("status") in ("queued", "running"):  # nothing will ever run it here
                row["status"] = "interrupted"
            row["journal_offset"] = 0
            self.insert_run(row)
        reader = "read_csv_auto" if path.suffix == ".csv" else "read_parquet"
        with self._tx() as con:
            con.execute(
                f"INSERT INTO metrics ({', '.join(METRIC_COLUMNS)}) SELECT {', '.join(METRIC_COLUMNS)}"
                f" FROM {reader}('{_sql_path(path)}') WHERE list_contains(?, run_id) ON CONFLICT DO NOTHING", [ids],
            )
        return ids


def check_export_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix not in (".csv", ".parquet"):
        raise ValueError(f"{path}: the export format follows the suffix: .csv or .parquet")
    return path


def write_export(metrics: pd.DataFrame, runs: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """The export files of `export_metrics` (also written by the lab client from the service's answers)."""
    path = check_export_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(metrics, preserve_index=False)
    if path.suffix == ".csv":
        pa_csv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    exportable = [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()} for row in runs]
    runs_json(path).write_text(json.dumps(exportable, indent=1), encoding="utf-8")
    return path


def runs_json(metrics_path: Path) -> Path:
    return metrics_path.with_name(metrics_path.stem + ".runs.json")


def _sql_path(path: Path) -> str:
    return str(path.resolve()).replace("'", "''")


def _isna(value: Any) -> bool:
    if value is None or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _display(value: Any) -> str | None:
    """Config values as text, so a diff column mixing types (None, 0.1, [..]) stays one Arrow type."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value)
