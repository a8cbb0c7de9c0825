"""The cost model (`studies/costs.py`) against what the studies in a lab home measured: per study, its wall time
from the first run's start to the last run's end, the plan's estimate at the slot count it ran with, and per model
family the median of measured / estimated seconds over its completed runs (what to scale COSTS by).

    python -m bench.study_costs_bench [--db PTFT_HOME/ptft.duckdb] [--slots 1] [--template NAME ...]

Reads the store read-only (stop the service first: it holds the file). Only each template's newest complete
study counts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def newest_complete(store, templates: list[str] | None):
    """(template, study id) of each template's newest study whose runs all finished."""
    from ptft_core.studies.driver import list_studies

    studies = list_studies(store)
    studies = studies[studies["finished"] & (studies["failed"] == 0)]
    for template, group in studies.groupby("template"):
        if not templates or template in templates:
            yield template, group.sort_values("created").iloc[-1]["id"]


def measured(store, templates: list[str] | None) -> pd.DataFrame:
    """One row per completed run of each template's newest complete study: template, key, family, seconds."""
    from ptft_core.studies.costs import COSTS, run_seconds
    from ptft_core.studies.driver import load_study

    rows = []
    for template, study_id in newest_complete(store, templates):
        data = load_study(store, study_id)
        estimate = run_seconds(data.plan.runs)
        for _, r in data.runs[data.runs["status"] == "completed"].iterrows():
            config = r["config"]
            family = next((c for c in (config.get("base"), config.get("model")) if c in COSTS), None)
            rows.append({"template": template, "study": study_id, "key": r["key"], "kind": r["kind"],
                         "family": family or "checkpoint of a run", "seconds": r["seconds"],
                         "estimate": estimate.get(r["key"])})
    return pd.DataFrame(rows)


def study_walls(store, templates: list[str] | None, slots: int) -> pd.DataFrame:
    """Each study's wall time (first run's start to last run's end) beside the plan's estimate at `slots`."""
    from ptft_core.studies.costs import estimate_seconds
    from ptft_core.studies.driver import load_study, study_runs

    rows = []
    for template, study_id in newest_complete(store, templates):
        runs = study_runs(store, study_id)
        wall = (pd.to_datetime(runs["finished_at"]).max() - pd.to_datetime(runs["started_at"]).min()).total_seconds()
        rows.append({"template": template, "study": study_id, "runs": len(runs), "wall_min": wall / 60,
                     "estimate_min": estimate_seconds(load_study(store, study_id).plan.runs, slots=slots) / 60})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--slots", type=int, default=1, help="the slot count the studies ran with")
    parser.add_argument("--template", nargs="*")
    args = parser.parse_args(argv)
    from ptft_core.store import Store

    store = Store(args.db, read_only=True)
    pd.set_option("display.width", 160)
    print(study_walls(store, args.template, args.slots).round(1).to_string(index=False))
    runs = measured(store, args.template)
    runs["ratio"] = runs["seconds"] / runs["estimate"]
    print(runs.groupby(["family", "kind"])["ratio"].describe()[["count", "25%", "50%", "75%"]].round(2).to_string())


if __name__ == "__main__":
    main()
