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


def measured(db: Path | None, templates: list[str] | None) -> pd.DataFrame:
    """One row per completed run of each template's newest complete study: template, key, family, seconds."""
    from ptft_core.store import Store
    from ptft_core.studies.costs import COSTS, run_seconds
    from ptft_core.studies.driver import list_studies, load_study

    store = Store(db, read_only=True)
    studies = list_studies(store)
    studies = studies[studies["finished"] & (studies["failed"] == 0)]
    rows = []
    for template, group in studies.groupby("template"):
        if templates and template not in templates:
            continue
        data = load_study(store, group.sort_values("created").iloc[-1]["id"])
        estimate = run_seconds(data.plan.runs)
        runs = data.runs[data.runs["status"] == "completed"]
        for _, r in runs.iterrows():
            config = r["config"]
            family = next((c for c in (config.get("base"), config.get("model")) if c in COSTS), None)
            rows.append({"template": template, "study": data.study["id"], "key": r["key"], "kind": r["kind"],
                         "family": family or "checkpoint of a run", "seconds": r["seconds"],
                         "estimate": estimate.get(r["key"])})
    return pd.DataFrame(rows)


def study_walls(db: Path | None, templates: list[str] | None, slots: int) -> pd.DataFrame:
    from ptft_core.store import Store
    from ptft_core.studies.costs import estimate_seconds
    from ptft_core.studies.driver import list_studies, load_study, study_runs

    store = Store(db, read_only=True)
    studies = list_studies(store)
    studies = studies[studies["finished"] & (studies["failed"] == 0)]
    rows = []
    for template, group in studies.groupby("template"):
        if templates and template not in templates:
            continue
        study_id = group.sort_values("created").iloc[-1]["id"]
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
    pd.set_option("display.width", 160)
    print(study_walls(args.db, args.template, args.slots).round(1).to_string(index=False))
    runs = measured(args.db, args.template)
    runs["ratio"] = runs["seconds"] / runs["estimate"]
    print(runs.groupby(["family", "kind"])["ratio"].describe()[["count", "25%", "50%", "75%"]].round(2).to_string())


if __name__ == "__main__":
    main()
