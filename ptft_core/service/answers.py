"""How the service's answers travel: tables as Arrow IPC streams (typed: timestamps, lists), rows and small answers
as JSON; and `AnswerCache`, which keeps answers of store reads until the store's next write, so many clients
polling the same view cost one query per change."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pandas as pd
import pyarrow as pa
from fastapi import Response

ARROW_STREAM = "application/vnd.apache.arrow.stream"


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe rows: timestamps as ISO text, NaN and NaT as null."""
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def record(row: dict[str, Any]) -> dict[str, Any]:
    """One row (a run, a study, a progress) as JSON-safe values, the same way as `records`."""
    return records(pd.DataFrame([row]))[0]


def arrow_bytes(frame: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def arrow(frame: pd.DataFrame) -> Response:
    return Response(arrow_bytes(frame), media_type=ARROW_STREAM)


class AnswerCache:
    """Answers of store reads, kept until the store's next write (`Store.revision`): twenty clients polling the
    same run list cost one query per change of the store, not twenty. A write during a computation labels the
    answer with the revision seen before it, so the next request recomputes; nothing stale outlives a change."""

    def __init__(self, store, size: int = 512):
        self.store = store
        self.size = size
        self._answers: OrderedDict[tuple, tuple[int, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, compute: Callable[[], Any]) -> Any:
        revision = self.store.revision
        with self._lock:
            hit = self._answers.get(key)
            if hit is not None and hit[0] == revision:
                self._answers.move_to_end(key)
                return hit[1]
        answer = compute()
        with self._lock:
            self._answers[key] = (revision, answer)
            self._answers.move_to_end(key)
            while len(self._answers) > self.size:
                self._answers.popitem(last=False)
        return answer

    def arrow(self, key: tuple, frame: Callable[[], pd.DataFrame]) -> Response:
        """A table answer, its Arrow bytes kept until the store's next write."""
        return Response(self.get(key, lambda: arrow_bytes(frame())), media_type=ARROW_STREAM)
