"""The Compare page's chart at scale: 100 runs x 10,000 points each of validation loss.

Times, each the median of several repeats after one warm-up:
- the page's query (`ptft_core.ui.load_series`: downsampled in DuckDB to the page's per-series budget, labels
  and a config group joined) two ways, one after the other in this run: on the store opened in this process,
  and through the lab service (`serve` on loopback, the client's Arrow IPC answer), which is how the page gets
  it now;
- the figure builder alone (`ptft_core.plots.metric_figure`): plain lines, EMA smoothing (a faint raw line under
  each smoothed one), and grouped by a config key (mean +/- std bands);
- the figure's JSON (what `st.plotly_chart` sends to the browser), for scale.
Target: query + figure < 1 s, through the service.

`python -m bench.compare_bench` prints the table; `python -m bench compare` runs it in the project's harness.
Entry point: `run() -> list[dict]`.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from bench import row
from ptft_core import plots, ui
from ptft_core.client import connect, start_service, stop_service
from ptft_core.config import FinetuneConfig, config_to_dict
from ptft_core.store import Store

NAME = "compare"
RUNS, POINTS = 100, 10_000
REPEATS = 5
GROUPS = 4  # runs share one of four learning rates: the grouped view averages 25 runs per line
TARGET_S = 1.0


def fill_store(store: Store) -> pd.DataFrame:
    """RUNS fine-tuning runs, each with POINTS validation-loss points (a decaying curve with noise), ingested
    through the public `ingest_events`; returns the runs as `list_runs` gives them."""
    rng = np.random.default_rng(0)
    steps = np.arange(1, POINTS + 1)
    for i in range(RUNS):
        run_id = f"ft-bench-{i:03d}"
        config = FinetuneConfig(name=f"bench-{i:03d}", seed=i, optim={"lr": 1e-5 * 2 ** (i % GROUPS)})
        store.insert_run({"id": run_id, "name": config.name, "kind": "finetune", "config": config_to_dict(config),
                          "status": "completed"})
        values = 0.3 + 0.7 * np.exp(-steps / (1500 + 300 * (i % GROUPS))) + rng.normal(0, 0.02, POINTS)
        store.ingest_events([
            {"type": "metric", "run_id": run_id, "seq": int(s), "step": int(s), "epoch": s / 1000,
             "split": "validation", "name": "loss", "value": float(v), "wall_time": 1.7e9 + 0.5 * s,
             "tokens_seen": int(s) * 4096}
            for s, v in zip(steps, values, strict=True)
        ])
    return store.list_runs()


def timed(fn: Callable[[], object], setup: Callable[[], object] = lambda: None) -> tuple[float, object]:
    """Median seconds of REPEATS calls after one warm-up (each after an untimed `setup()`), and the last result."""
    result = fn()
    times = []
    for _ in range(REPEATS):
        setup()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def ms_row(metric: str, seconds: float, target: float | None = None) -> dict:
    return row(NAME, metric, 1000 * seconds, "ms", f"< {1000 * target:.0f}" if target else None)


def run() -> list[dict]:
    metric = [("validation", "loss")]
    per_series = ui.points_per_series(RUNS)
    with tempfile.TemporaryDirectory(prefix="ptft-compare-bench-") as tmp:
        home = Path(tmp)
        with Store(home / "ptft.duckdb") as store:
            runs = fill_store(store)
            direct_s, _ = timed(lambda: ui.load_series(store, runs, metric, "step", group_key="optim.lr"))
        os.environ.pop("PTFT_TRAINER", None)
        start_service(home)  # the store is closed: the service opens it, as under `make run`
        try:
            with connect(home) as lab:
                runs = lab.list_runs()
                # A note written before each repeat moves the store on: every timed query is computed afresh,
                # as for the first person to open this view (the service keeps answers until the next write).
                query_s, data = timed(lambda: ui.load_series(lab, runs, metric, "step", group_key="optim.lr"),
                                      setup=lambda: lab.set_notes(runs["id"][0], str(time.time())))
        finally:
            stop_service(home)
    rows = [ms_row(f"query in this process (store opened here): {RUNS} runs x {POINTS:,} pts -> {per_series} "
                   f"pts/series ({len(data):,} rows)", direct_s),
            ms_row("query through the lab service (HTTP on loopback, Arrow IPC): the page's path", query_s),
            row(NAME, "service / in-process query time", query_s / direct_s, "x", None, digits=2)]
    figures = {
        "lines": lambda: plots.metric_figure(data, x="step"),
        "EMA 0.6 (raw + smoothed)": lambda: plots.metric_figure(data, x="step", smoothing=0.6),
        f"grouped by optim.lr ({GROUPS} mean ± std bands)": lambda: plots.metric_figure(
            data, x="step", group="group", group_title="optim.lr"),
    }
    for name, build in figures.items():
        figure_s, fig = timed(build)
        json_s, _ = timed(fig.to_json)
        rows.append(ms_row(f"figure builder alone, {name} ({len(fig.data)} traces)", figure_s))
        rows.append(ms_row(f"service query + figure, {name}", query_s + figure_s, TARGET_S))
        rows.append(ms_row(f"figure to JSON, {name}", json_s))
    return rows


if __name__ == "__main__":
    print(pd.DataFrame(run()).to_string(index=False))
