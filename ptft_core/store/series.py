"""The downsampling query behind `Store.metric_series` (min/max per equal-width x bucket, in DuckDB).

A series (run_id, split, name) with at most `max_points` points comes back whole. A longer one is cut into
`nb = (max_points - 2) // 2` equal-width x buckets; each bucket keeps its minimum and its maximum point, and the
series keeps its first and last points, so at most `2 * nb + 2 <= max_points` points remain and every spike,
dip and both extremes survive. Hash aggregates (`arg_min`/`arg_max`), not window sorts, do the work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_X = {
    "step": "m.step",
    "epoch": "m.epoch",
    "tokens_seen": "m.tokens_seen",
    "wall_time": "m.wall_time",  # made relative to the run's start after downsampling (a shift changes no bucket)
}


def series_sql(x: str, names: Sequence[str] | None, splits: Sequence[str] | None,
               max_points: int) -> tuple[str, list[Any]]:
    """SQL and its parameters after the first one (the list of run ids)."""
    params: list[Any] = []
    filters = ""
    if names:
        filters += " AND list_contains(?, m.name)"
        params.append(list(names))
    if splits:
        filters += " AND list_contains(?, m.split)"
        params.append(list(splits))
    nb = (max_points - 2) // 2
    sql = f"""
    WITH src AS (
        SELECT m.run_id, m.split, m.name, {_X[x]} AS x, m.value
        FROM metrics m
        WHERE list_contains($ids, m.run_id) AND NOT m.superseded AND m.value IS NOT NULL
          AND {_X[x]} IS NOT NULL{filters}
    ),
    stats AS (
        SELECT run_id, split, name, count(*) AS n, min(x) AS x0, max(x) AS x1,
               arg_min(value, x) AS v0, arg_max(value, x) AS v1
        FROM src GROUP BY run_id, split, name
    ),
    joined AS (
        SELECT s.run_id, s.split, s.name, s.x, s.value, st.n, st.x0, st.x1
        FROM src s JOIN stats st USING (run_id, split, name)
    ),
    buckets AS (
        SELECT run_id, split, name,
               coalesce(least(floor((x - x0) / nullif(x1 - x0, 0) * {nb}), {nb - 1}), 0) AS bucket,
               arg_min(x, value) AS x_lo, min(value) AS v_lo, arg_max(x, value) AS x_hi, max(value) AS v_hi
        FROM joined WHERE n > {max_points} GROUP BY ALL
    ),
    kept AS (
        SELECT run_id, split, name, x, value FROM joined WHERE n <= {max_points}
        UNION ALL
        SELECT DISTINCT * FROM (
            SELECT run_id, split, name, x_lo AS x, v_lo AS value FROM buckets
            UNION ALL SELECT run_id, split, name, x_hi, v_hi FROM buckets
            UNION ALL SELECT run_id, split, name, x0, v0 FROM stats WHERE n > {max_points}
            UNION ALL SELECT run_id, split, name, x1, v1 FROM stats WHERE n > {max_points}
        )
    )
    {_final(x)}
    ORDER BY run_id, split, name, x
    """
    # DuckDB's named parameters and positional ones do not mix: number everything.
    sql = sql.replace("$ids", "$1")
    numbered = []
    for i, _ in enumerate(params, start=2):
        numbered.append(f"${i}")
    parts = sql.split("?")
    sql = parts[0] + "".join(f"{numbered[i]}{part}" for i, part in enumerate(parts[1:]))
    return sql, params


def _final(x: str) -> str:
    if x != "wall_time":
        return "SELECT run_id, split, name, x, value FROM kept"
    # Seconds since the run's start: its started_at, else (an imported run without one) its first metric. The
    # start is looked up for the few runs on the chart (from `stats`), not by scanning their metrics again.
    return """
    , t0 AS (
        SELECT st.run_id, coalesce(epoch(any_value(r.started_at)), min(st.x0)) AS t0
        FROM stats st LEFT JOIN runs r ON r.id = st.run_id GROUP BY st.run_id
    )
    SELECT k.run_id, k.split, k.name, k.x - t0.t0 AS x, k.value FROM kept k JOIN t0 USING (run_id)"""
