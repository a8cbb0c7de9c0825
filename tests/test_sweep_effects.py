"""Which settings matter (`ptft_core.sweeps.effects`, and its two views of a sweep in the driver): the R² and the
permutation test find a field that decides the objective and leave a field that does not, on simulated trials
drawn here; group R² agrees with eta² computed another way; Holm's adjustment; too few trials are not estimated;
the views of an Optuna study with pruned trials; the figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ptft_core import plots
from ptft_core.sweeps.effects import MIN_TRIALS, effects, field_effect, holm, verdict
from ptft_core.sweeps.spec import Param, spec_from_dict

LR = Param(low=1e-5, high=1e-3, log=True)
DECAY = Param(low=0.5, high=1.0)
STRATEGY = Param(values=["full", "discriminative", "linear_probe"])


def simulated_trials(n: int, seed: int, noise: float = 0.01) -> pd.DataFrame:
    """Accuracy peaked at lr = 2e-4 (log scale), blind to the decay: what a learning-rate sweep usually looks like."""
    rng = np.random.default_rng(seed)
    log_lr = rng.uniform(-5, -3, n)
    value = 0.8 - 0.1 * np.abs(log_lr + 3.7) + noise * rng.normal(size=n)
    return pd.DataFrame({"optim.lr": 10 ** log_lr, "layer_decay": rng.uniform(0.5, 1.0, n), "value": value})


def test_a_deciding_field_is_found_and_a_blind_one_is_declared_at_the_tests_rate():
    """Over 200 simulated 12-trial sweeps (independent random draws): the learning rate, which decides the
    objective, is found (adjusted p < 0.05) in at least 90 % of them; the decay, which does nothing, is declared
    to matter about as often as a 5 % test should (at most 10 %: 3 standard errors above 5 % at 200 sweeps)."""
    found = false = 0
    for seed in range(200):
        table = effects(simulated_trials(12, seed), {"optim.lr": LR, "layer_decay": DECAY}, "end", seed=seed,
                        permutations=199).set_index("field")
        found += table.loc["optim.lr", "p_holm"] < 0.05
        false += table.loc["layer_decay", "p_holm"] < 0.05
        assert (table["n"] == 12).all()
    assert found >= 180 and false <= 20, (found, false)


def test_a_line_would_miss_a_peak_the_quadratic_finds():
    """The lr optimum lies inside the range: the objective rises then falls, and a straight line explains little."""
    rng = np.random.default_rng(7)
    x = rng.uniform(-5, -3, 16)
    trials = pd.DataFrame({"optim.lr": 10 ** x, "value": 0.8 - 0.1 * (x + 4) ** 2 + 0.005 * rng.normal(size=16)})
    line = np.polyfit(x, trials["value"], 1)
    line_r2 = 1 - np.var(trials["value"] - np.polyval(line, x)) / np.var(trials["value"])
    r2, _ = field_effect(trials["optim.lr"], trials["value"], LR)
    assert r2 > line_r2 + 0.3, (r2, line_r2)


def test_fields_drawn_together_say_so():
    """TPE narrows on good regions of several fields at once: a blind field drawn along with the deciding one
    shares its effect, and the table says they were drawn together instead of leaving it unexplained."""
    trials = simulated_trials(12, seed=4)
    trials["layer_decay"] = 0.75 + 0.1 * (np.log10(trials["optim.lr"]) + 4) + 0.01 * np.random.default_rng(4).normal(
        size=12)
    table = effects(trials, {"optim.lr": LR, "layer_decay": DECAY}, "end").set_index("field")
    assert table.loc["layer_decay", "correlated_with"].startswith("optim.lr (rho +")
    assert table.loc["optim.lr", "correlated_with"].startswith("layer_decay (rho +")
    assert "drawn together with optim.lr" in verdict({"field": "layer_decay", **table.loc["layer_decay"]})
    independent = effects(simulated_trials(12, seed=4), {"optim.lr": LR, "layer_decay": DECAY}, "end")
    assert (independent["correlated_with"] == "").all()


def test_choices_explain_by_their_group_means():
    rng = np.random.default_rng(0)
    strategy = pd.Series(rng.choice(STRATEGY.values, 18))
    value = strategy.map({"full": 0.8, "discriminative": 0.82, "linear_probe": 0.6}) + 0.02 * rng.normal(size=18)
    r2, p = field_effect(strategy, value, STRATEGY)
    means = value.groupby(strategy).transform("mean")
    eta2 = ((means - value.mean()) ** 2).sum() / ((value - value.mean()) ** 2).sum()  # between / total
    assert r2 == pytest.approx(eta2) and p < 0.01


def test_too_few_or_constant_trials_are_not_estimated():
    trials = simulated_trials(MIN_TRIALS - 1, seed=0)
    assert field_effect(trials["optim.lr"], trials["value"], LR) == (None, None)
    flat = simulated_trials(8, seed=0).assign(value=0.5)
    assert field_effect(flat["optim.lr"], flat["value"], LR) == (None, None)
    one_choice = pd.Series(["full"] * 8)
    assert field_effect(one_choice, simulated_trials(8, 0)["value"], STRATEGY) == (None, None)
    row = effects(trials, {"optim.lr": LR}, "end").iloc[0].to_dict()
    assert np.isnan(row["r2"]) and "not estimated (n=3" in verdict(row)


def test_holm_adjusts_step_down_and_keeps_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([None, 0.2, 0.9]) == [None, pytest.approx(0.4), pytest.approx(0.9)]
    assert holm([0.6, 0.6]) == [1.0, 1.0]


def test_the_views_of_a_sweep_with_pruned_trials():
    """Completed trials at their final value; all completed and pruned trials at the latest step every one of
    them reached (a running or failed trial is in neither)."""
    import optuna

    from ptft_core.sweeps.driver import distributions, effect_table

    spec = spec_from_dict({"base": {"kind": "finetune", "base": "tiny", "dataset": "amazon"},
                           "space": {"optim.lr": {"low": 1e-5, "high": 1e-3, "log": True},
                                     "layer_decay": {"low": 0.5, "high": 1.0}},
                           "objective": {"metric": "accuracy"}, "pruner": "none"})
    dists = distributions(spec)
    study = optuna.create_study(direction="maximize")
    rng = np.random.default_rng(5)
    for i in range(10):
        params = {"optim.lr": float(10 ** rng.uniform(-5, -3)), "layer_decay": float(rng.uniform(0.5, 1.0))}
        good = 0.8 - 0.1 * abs(np.log10(params["optim.lr"]) + 3.7)
        steps = [9, 18, 27] if i % 2 == 0 else [9, 18]  # the odd ones pruned at step 18
        trial = optuna.trial.create_trial(
            params=params, distributions=dists, intermediate_values={s: good * s / 27 for s in steps},
            value=good if i % 2 == 0 else None,
            state=optuna.trial.TrialState.COMPLETE if i % 2 == 0 else optuna.trial.TrialState.PRUNED)
        study.add_trial(trial)
    study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, state=optuna.trial.TrialState.FAIL))
    table = effect_table(study, spec)
    views = list(dict.fromkeys(table["view"]))
    assert views == ["end of training: the 5 completed trials", "step 18: all 10 completed and pruned trials"]
    assert list(table.groupby("view", sort=False)["n"].max()) == [5, 10]
    at_step = table[table["view"] == views[1]].set_index("field")
    assert at_step.loc["optim.lr", "r2"] > 0.9 > at_step.loc["layer_decay", "r2"]
    figure = plots.effects_figure(table)
    assert [bar.name for bar in figure.data] == views and figure.layout.barmode == "group"
    assert any("p " in text for text in figure.data[1].text)
    assert plots.effects_figure(table.iloc[0:0]).layout.annotations  # says what it needs instead of empty axes
