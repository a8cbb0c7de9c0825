"""Which estimator tells which setting matters from a sweep's few trials: Optuna's PED-ANOVA (the one of its
importance evaluators that needs no scikit-learn) against the lab's R² with a permutation test
(`ptft_core.sweeps.effects`), on simulated sweeps where the answer is known.

Each simulated sweep draws n trials of (learning rate on a log scale, layer decay) uniformly; the objective
peaks at lr = 2e-4 and ignores the decay, plus Gaussian noise. Reported per n and noise level, over `--reps`
sweeps: how often each estimator ranks the learning rate first, and, for the R², how often it declares each
field to matter (adjusted p < 0.05): the learning rate's rate is the test's power, the decay's its false-alarm
rate (5 % is what the test promises).

    python -m bench.importance_bench [--reps 50]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ptft_core.sweeps.effects import effects
from ptft_core.sweeps.spec import Param

SPACE = {"lr": Param(low=1e-5, high=1e-3, log=True), "decay": Param(low=0.5, high=1.0)}
SIZES = (6, 8, 10, 12, 16, 24)
NOISES = (0.01, 0.03)  # the accuracy's spread over the lr range is 0.13-0.17


def simulated(n: int, noise: float, rng: np.random.Generator) -> pd.DataFrame:
    log_lr = rng.uniform(-5, -3, n)
    value = 0.8 - 0.1 * np.abs(log_lr + 3.7) + noise * rng.normal(size=n)
    return pd.DataFrame({"lr": 10 ** log_lr, "decay": rng.uniform(0.5, 1.0, n), "value": value})


def ped_anova_first(trials: pd.DataFrame) -> bool:
    import optuna
    from optuna.distributions import FloatDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {"lr": FloatDistribution(1e-5, 1e-3, log=True), "decay": FloatDistribution(0.5, 1.0)}
    study = optuna.create_study(direction="maximize")
    for row in trials.to_dict("records"):
        study.add_trial(optuna.trial.create_trial(params={"lr": row["lr"], "decay": row["decay"]},
                                                  distributions=dists, value=row["value"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental feature
        found = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    return max(found, key=found.get) == "lr"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args(argv)
    rows = []
    for noise in NOISES:
        for n in SIZES:
            ped = r2_first = lr_found = decay_found = 0
            for rep in range(args.reps):
                trials = simulated(n, noise, np.random.default_rng(10_000 * n + rep))
                ped += ped_anova_first(trials)
                table = effects(trials, SPACE, "end", seed=rep).set_index("field")
                r2_first += table.loc["lr", "r2"] > table.loc["decay", "r2"]
                lr_found += table.loc["lr", "p_holm"] < 0.05
                decay_found += table.loc["decay", "p_holm"] < 0.05
            row = {"noise": noise, "n": n, "reps": args.reps, "ped_anova_ranks_lr_first": ped / args.reps,
                   "r2_ranks_lr_first": r2_first / args.reps, "r2_power_lr": lr_found / args.reps,
                   "r2_false_alarm_decay": decay_found / args.reps}
            rows.append(row)
            print(f"noise {noise} n {n:2d}: lr ranked first: PED-ANOVA {row['ped_anova_ranks_lr_first']:.0%}, "
                  f"R² {row['r2_ranks_lr_first']:.0%}; R² test: lr found {row['r2_power_lr']:.0%}, decay "
                  f"(no effect) declared {row['r2_false_alarm_decay']:.0%}", flush=True)
    out = Path(__file__).parent / "results" / "importance.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}, indent=2) + "\n")
    print(f"written to {out}")
    return rows


if __name__ == "__main__":
    main()
