"""The run journal: an append-only JSON-lines file, `RUN_DIR/events.jsonl`, written by the worker alone.

The worker knows nothing of DuckDB: it appends events here and the engine tails the file and ingests them,
idempotently by (run_id, seq). Every line is written to the OS as soon as it is logged, so a killed worker
loses nothing it logged, and a killed engine re-reads what it missed.

Two event types share the file:
- metric: {"type": "metric", run_id, seq, step, epoch, split, name, value, wall_time, tokens_seen}
- other: {"type": <"status"|"progress"|"checkpoint"|"heartbeat"|"resume"|...>, run_id, seq, wall_time, ...payload}
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ptft_core.rundir import RunDir

log = logging.getLogger(__name__)

JOURNAL_FSYNC_ENV = "PTFT_JOURNAL_FSYNC_S"  # seconds between fsyncs of the journal (set by the Ray launcher)


class MetricLogger(Protocol):
    """What the training loops log through; they never branch on whether a logger exists."""

    def metric(
        self, step: int, name: str, value: float, split: str = "train",
        epoch: float | None = None, tokens_seen: int | None = None,
    ) -> None: ...

    def event(self, type: str, **payload: Any) -> None: ...


class JournalWriter:
    """Appends events to a run's journal; continues the `seq` numbering of an existing journal (resume)."""

    def __init__(self, run_dir: str | Path, run_id: str):
        self.path = RunDir(run_dir).journal
        self.run_id = run_id
        self.seq = last_seq(self.path)
        # Line-buffered text: each event reaches the OS as one write, so a kill -9 cannot lose it.
        self._file = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives as long as the run
        # On a shared filesystem (a Ray cluster) another node's engine reads this file: fsync about this often,
        # so what it reads is on the file server, not only in this node's page cache. 0: never (local runs).
        self._fsync_s = float(os.environ.get(JOURNAL_FSYNC_ENV) or 0)
        self._synced = time.monotonic()

    def _write(self, record: dict[str, Any]) -> None:
        self.seq += 1
        record["run_id"] = self.run_id
        record["seq"] = self.seq
        record.setdefault("wall_time", time.time())
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        if self._fsync_s and time.monotonic() - self._synced >= self._fsync_s:
            os.fsync(self._file.fileno())
            self._synced = time.monotonic()

    def metric(
        self, step: int, name: str, value: float, split: str = "train",
        epoch: float | None = None, tokens_seen: int | None = None,
    ) -> None:
        value = float(value)
        self._write({
            "type": "metric", "step": int(step), "epoch": epoch, "split": split, "name": name,
            # JSON has no NaN/inf; a diverged loss is still worth recording, as null.
            "value": value if math.isfinite(value) else None,
            "tokens_seen": tokens_seen,
        })

    def event(self, type: str, **payload: Any) -> None:
        self._write({"type": type, **payload})

    def close(self) -> None:
        if self._fsync_s:
            os.fsync(self._file.fileno())
        self._file.close()


class NullLogger:
    """A MetricLogger that drops everything: the ranks of a data-parallel run other than rank 0."""

    def metric(self, step: int, name: str, value: float, split: str = "train", epoch: float | None = None,
               tokens_seen: int | None = None) -> None:
        return None

    def event(self, type: str, **payload: Any) -> None:
        return None

    def close(self) -> None:
        return None


@dataclass
class MemoryLogger:
    """A MetricLogger that keeps events in a list: for tests and for in-process callers that want the values."""

    def __post_init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def metric(
        self, step: int, name: str, value: float, split: str = "train",
        epoch: float | None = None, tokens_seen: int | None = None,
    ) -> None:
        self.events.append({"type": "metric", "step": step, "name": name, "value": float(value), "split": split,
                            "epoch": epoch, "tokens_seen": tokens_seen})

    def event(self, type: str, **payload: Any) -> None:
        self.events.append({"type": type, **payload})

    def values(self, name: str, split: str | None = None) -> list[float]:
        return [e["value"] for e in self.events
                if e["type"] == "metric" and e["name"] == name and (split is None or e["split"] == split)]


def read_events(path: str | Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete events from byte `offset` on, and the offset to continue from.

    A last line without its newline is a write in progress: it is left for the next call. A complete line that
    is not valid JSON (a torn write after a crash, a disk error) is skipped with a warning, never a crash.
    """
    path = Path(path)
    if not path.exists():
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        chunk = f.read()
    end = chunk.rfind(b"\n") + 1
    events = []
    for raw in chunk[:end].splitlines():
        if not raw.strip():
            continue
        try:
            event = json.loads(raw)
            if not isinstance(event, dict) or "seq" not in event:
                raise ValueError("not an event")
        except ValueError:
            log.warning("%s: skipping a corrupt journal line: %.80r", path, raw)
            continue
        events.append(event)
    return events, offset + end


def iter_events(path: str | Path) -> Iterator[dict[str, Any]]:
    events, _ = read_events(path)
    yield from events


def last_seq(path: str | Path) -> int:
    """The highest seq in a journal (0 when there is none); reads only the file's tail."""
    path = Path(path)
    if not path.exists():
        return 0
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - 65536))
        tail = f.read()
    for raw in reversed(tail.splitlines()):
        try:
            return int(json.loads(raw)["seq"])
        except (ValueError, KeyError, TypeError):
            continue
    # No parseable line in the tail (very long or corrupt lines): fall back to a full read.
    return max((e["seq"] for e in iter_events(path)), default=0)


def fsync(path: str | Path) -> None:
    """Force a file to disk (checkpoints and final states, not every metric)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
