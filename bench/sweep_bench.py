"""What pruning buys a sweep, and what it costs: the sweep as specified (its pruner on), then the same trials -
the same values, in the same order - with no pruner, side by side on one throw-away home through one lab service.

Reported: the wall time of each (launch to the last trial told) and their ratio; each one's best trial by the
objective and its test accuracy; and, from the unpruned rerun, what the pruner decided on: how each pruned trial
would have ended, how many of them would have beaten the pruned sweep's best, and how well a trial's value at the
step it was judged at ranks its final value (Spearman, over all trials). The rerun goes second (it needs the
first one's trials), so the machine's load may differ between them; a quiet machine is the fair one.

    python -m bench.sweep_bench [configs/sweeps/minilm_lr_decay.yaml] [--home DIR]

`--home DIR` keeps the lab home (both sweeps, their runs) for a look in the dashboard afterwards:
`PTFT_HOME=DIR make run`, or `PTFT_HOME=DIR python -m streamlit run app.py`.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import pandas as pd

from ptft_core import paths
from ptft_core.sweeps.effects import verdict
from ptft_core.sweeps.spec import load_spec, spec_to_dict

DEFAULT_SPEC = "configs/sweeps/minilm_lr_decay.yaml"


def run_sweep(lab, spec: dict, name: str, poll: float = 2.0) -> dict:
    """Launch `spec` and follow it to its end; its trials, wall time and best trial's test accuracy."""
    started = time.monotonic()
    sweep_id = lab.launch_sweep(spec, name=name)
    last = ""
    while not (progress := lab.sweep_progress(sweep_id)).finished:
        if progress.line() != last:
            last = progress.line()
            print(f"  [{time.monotonic() - started:6.0f} s] {name}: {last}", flush=True)
        time.sleep(poll)  # a bench following a service: the sweep's end is a state to read, not an event here
    wall = time.monotonic() - started
    trials = lab.sweep_trials(sweep_id)
    trials["test_accuracy"] = [test_accuracy(lab, r) for r in trials["run_id"]]
    return {"id": sweep_id, "wall_s": wall, "trials": trials, "progress": progress}


def test_accuracy(lab, run_id: str | None) -> float | None:
    if run_id is None:
        return None
    last = lab.last_metrics(run_id)
    hit = last[(last["split"] == "test") & (last["name"] == "accuracy")]
    return None if hit.empty else float(hit["value"].iloc[0])


def values_at(lab, run_ids: list[str], metric: str, step: int) -> dict[str, float]:
    """Each run's validation `metric` at `step` (where the pruner judged the pruned trials)."""
    series = lab.metric_series(run_ids, names=[metric], splits=["validation"], x="step", max_points=100_000)
    at = series[series["x"] == step]
    return dict(zip(at["run_id"], at["value"], strict=True))


def compare(spec, pruned: dict, unpruned: dict, lab) -> dict:
    p, u = pruned["trials"].set_index("trial"), unpruned["trials"].set_index("trial")
    maximize = spec.maximize

    def best_of(trials: pd.DataFrame) -> dict:
        done = trials[trials["state"] == "completed"].dropna(subset=["value"])
        if done.empty:
            return {}
        number = done["value"].idxmax() if maximize else done["value"].idxmin()
        row = done.loc[number]
        return {"trial": int(number), "value": float(row["value"]), "test_accuracy": row["test_accuracy"],
                "params": {k: row[k] for k in spec.space}}

    out = {"pruned": {"wall_s": pruned["wall_s"], "best": best_of(p), "counts": pruned["progress"].counts,
                      "trial_seconds": float(p["seconds"].sum())},
           "unpruned": {"wall_s": unpruned["wall_s"], "best": best_of(u), "counts": unpruned["progress"].counts,
                        "trial_seconds": float(u["seconds"].sum())}}
    out["speedup"] = unpruned["wall_s"] / pruned["wall_s"]
    pruned_ids = p.index[p["state"] == "pruned"]
    best_kept = out["pruned"]["best"].get("value")
    would_have = {int(n): float(u.loc[n, "value"]) for n in pruned_ids
                  if n in u.index and not pd.isna(u.loc[n, "value"])}
    out["pruned_trials_final"] = would_have
    out["pruned_that_would_have_won"] = sorted(
        n for n, v in would_have.items() if best_kept is not None and (v > best_kept if maximize else v < best_kept))
    steps = sorted({int(s) for s in p["prune_step"].dropna()})
    if steps:  # how well the value at the (first) judging step ranks the final value, over every trial
        step = steps[0]
        early = values_at(lab, list(u["run_id"].dropna()), spec.objective.metric, step)
        pairs = pd.DataFrame({"early": [early.get(r) for r in u["run_id"]], "final": u["value"]}).dropna()
        out["judged_at_step"] = step
        out["spearman_early_final"] = float(pairs["early"].corr(pairs["final"], method="spearman"))
        out["spearman_n"] = len(pairs)
        # The same trial twice (same values, same seed) should train the same up to the judged step: how far
        # apart the two arms' values there are says whether "the same trials" were the same runs.
        first = values_at(lab, list(p["run_id"].dropna()), spec.objective.metric, step)
        twice = [(first.get(p.loc[n, "run_id"]), early.get(u.loc[n, "run_id"])) for n in p.index if n in u.index]
        out["same_trial_max_difference_at_judged_step"] = max(
            (abs(a - b) for a, b in twice if a is not None and b is not None), default=None)
    out["best_value_difference"] = (None if not out["unpruned"]["best"] or best_kept is None
                                    else out["unpruned"]["best"]["value"] - best_kept)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", nargs="?", default=DEFAULT_SPEC)
    parser.add_argument("--home", type=Path, default=None,
                        help="a new lab home to keep (default: a throw-away one), linking the prepared data")
    args = parser.parse_args(argv)
    spec = load_spec(args.spec)
    if spec.pruner.type == "none":
        raise SystemExit(f"{args.spec}: its pruner is none; there is nothing to compare")
    from ptft_core.client import connect, start_service

    if args.home is not None and args.home.exists() and any(args.home.iterdir()):
        raise SystemExit(f"--home {args.home}: not empty (the bench needs a lab home of its own)")
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp)
        home.mkdir(parents=True, exist_ok=True)
        for folder in ("datasets", "models"):
            (home / folder).symlink_to(paths.home() / folder)
        _, service = start_service(home)
        lab = connect(home)
        try:
            print(f"{spec.label()}: {spec.trials} trials, {spec.pruner.type} pruner, then the same trials unpruned",
                  flush=True)
            pruned = run_sweep(lab, spec_to_dict(spec), f"{spec.label()} (pruned)")
            params = [{k: _plain(row[k]) for k in spec.space} for row in pruned["trials"].to_dict("records")]
            rerun = {**spec_to_dict(spec), "pruner": {"type": "none"}, "enqueue": params}
            unpruned = run_sweep(lab, rerun, f"{spec.label()} (same trials, unpruned)")
            result = compare(spec, pruned, unpruned, lab)
            result["trials"] = {"pruned": _records(pruned["trials"]), "unpruned": _records(unpruned["trials"])}
            result["effects"] = {arm: _records(lab.sweep_effects(run["id"]))
                                 for arm, run in (("pruned", pruned), ("unpruned", unpruned))}
        finally:
            lab.close()
            service.terminate()
            service.wait(timeout=60)
    result.update(spec=args.spec, date=time.strftime("%Y-%m-%d %H:%M"))
    out = Path(__file__).parent / "results" / "sweep.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    report(result)
    print(f"written to {out}")
    return result


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _records(trials: pd.DataFrame) -> list[dict]:
    return json.loads(trials.to_json(orient="records"))


def report(r: dict) -> None:
    p, u = r["pruned"], r["unpruned"]
    print(f"wall time: pruned {p['wall_s']:.0f} s, unpruned {u['wall_s']:.0f} s -> {r['speedup']:.2f}x "
          f"(trial-seconds {p['trial_seconds']:.0f} vs {u['trial_seconds']:.0f})")
    for name, arm in (("pruned", p), ("unpruned", u)):
        b = arm["best"]
        if b:
            test = b["test_accuracy"]
            print(f"best {name}: trial {b['trial']} value {b['value']:.4f} test accuracy "
                  f"{'n/a' if test is None or (isinstance(test, float) and math.isnan(test)) else f'{test:.4f}'} "
                  f"{b['params']}  ({arm['counts']})")
    print(f"pruned trials that would have beaten the pruned sweep's best: {r['pruned_that_would_have_won']} "
          f"(finals {r['pruned_trials_final']})")
    for arm, rows in r.get("effects", {}).items():
        for row in rows:
            print(f"which settings matter ({arm}), {row['view']}: {verdict(row)}")
    if "spearman_early_final" in r:
        print(f"rank correlation of step-{r['judged_at_step']} value with the final value: "
              f"{r['spearman_early_final']:.2f} (n={r['spearman_n']}); the same trial in the two arms differs by "
              f"at most {r['same_trial_max_difference_at_judged_step']} there")


if __name__ == "__main__":
    main()
