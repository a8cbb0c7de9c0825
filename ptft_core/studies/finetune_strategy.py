"""Study 4, how should one fine-tune: five fine-tuning strategies and a learning-rate sweep of full
fine-tuning. Its plan and its report."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd
import plotly.graph_objects as go

from ptft_core.config import OptimConfig
from ptft_core.plots import arm_color, bar_figure, chance_line, empty_figure, seed_band, study_layout
from ptft_core.studies.report import Findings, chance_rate, missing_note, seed_note
from ptft_core.studies.stats import (
    Difference,
    attach,
    cell,
    cells,
    difference,
    fmt_stat,
    last_values,
    max_values,
    mean_curves,
)
from ptft_core.studies.templates import (
    Budget,
    PlannedRun,
    ft_config,
    report_for,
    run_name,
    seeds,
    template,
    train_rows,
)

if TYPE_CHECKING:
    from ptft_core.studies.driver import StudyData


# One budget rule for every arm: quick 40 steps (1.5 epochs of 5 % of movies), full 3 epochs of all of it.
QUICK_BUDGET = Budget(epochs=2, min_steps=40, max_steps=40)
FULL_BUDGET = Budget(epochs=3, min_steps=300, max_steps=3000, patience=4)


@template(
    "finetune_strategy", "How should one fine-tune?",
    "Which parts of MiniLM should train, at which learning rate: full fine-tuning, a linear probe, a frozen "
    "bottom half, gradual unfreezing or discriminative learning rates; and what does too large a learning "
    "rate do to what pretraining gave?",
    "Fine-tunes minilm-l6 on movies with five strategies, and full fine-tuning at learning rates from 2e-5 to "
    "1e-3. Report: test accuracy and trainable parameters per strategy, accuracy against learning rate next "
    "to the majority-class rate, and the training curves.",
    "Full fine-tuning at a small rate (2e-5..1e-4) is the strong default; a linear probe is clearly worse on "
    "sentence-level sentiment; freezing the bottom half costs little; too large a rate (1e-3 with Adam) "
    "destroys the pretrained features and falls to chance level (Devlin et al. 2019; Sun et al. 2019; "
    "Howard & Ruder 2018; Mosbach et al. 2021).",
)
def build(preset: str, tiny: bool) -> list[PlannedRun]:
    quick = preset == "quick"
    lr = 1e-4 if quick else 5e-5
    fraction, budget = (0.05, QUICK_BUDGET) if quick else (1.0, FULL_BUDGET)
    steps = budget.steps(max(1, round(fraction * train_rows("movies"))), 16 if quick else 32)
    strategies = {
        "full": dict(strategy="full"),
        "linear_probe": dict(strategy="linear_probe", optim=OptimConfig(lr=1e-3, warmup_ratio=0.1)),
        "freeze_bottom": dict(strategy="freeze_bottom", freeze_layers=3),
        "gradual_unfreeze": dict(strategy="gradual_unfreeze", unfreeze_every_steps=max(1, steps // 8)),
        "discriminative": dict(strategy="discriminative", layer_decay=0.8),
    }
    lrs = (lr, 1e-3) if tiny else (2e-5, 1e-4, 1e-3) if quick else (2e-5, 5e-5, 1e-4, 5e-4, 1e-3)
    runs = []
    for seed in seeds(preset, 2, 5):
        for strategy, fields in strategies.items():
            fields = {"optim": OptimConfig(lr=lr, warmup_ratio=0.1), **fields}
            config = ft_config(preset, budget, name=run_name("fts", strategy, f"s{seed}"), dataset="movies",
                               label_fraction=fraction, seed=seed, **fields)
            runs.append(PlannedRun(f"strategy/{strategy}/s{seed}", config, {
                "arm": strategy, "group": "strategy", "strategy": strategy, "lr": config.optim.lr, "seed": seed}))
        for rate in lrs:
            if rate == lr:  # the full strategy's run is this point of the sweep
                continue
            config = ft_config(preset, budget, name=run_name("fts-lr", f"{rate:g}", f"s{seed}"), dataset="movies",
                               label_fraction=fraction, seed=seed,
                               optim=OptimConfig(lr=rate, warmup_ratio=0.1))
            runs.append(PlannedRun(f"lr/{rate:g}/s{seed}", config, {
                "arm": f"full, lr {rate:g}", "group": "lr", "strategy": "full", "lr": rate, "seed": seed}))
    return runs


# --- the report -------------------------------------------------------------------------------------------------------


@report_for("finetune_strategy")
def report(data: StudyData, out: Findings) -> None:
    m = data.metrics
    runs = attach(data.runs, last_values(m, "test", "accuracy"), "test_accuracy")
    runs = attach(runs, max_values(m, "train", "trainable_params"), "trainable")
    chance = chance_rate(data, "movies")
    strat = runs[runs["group"] == "strategy"]
    acc = cells(strat, ["strategy"], "test_accuracy")
    order = ["full", "linear_probe", "freeze_bottom", "gradual_unfreeze", "discriminative"]
    out.figures["strategies"] = bar_figure(acc, "strategy", "Test accuracy by fine-tuning strategy (mean ± std)",
                                           "movies test accuracy", chance=chance, order=order)
    trainable = strat.groupby("strategy")["trainable"].max()
    full = cell(acc, strategy="full")
    rows = []
    for s in order:
        c = cell(acc, strategy=s)
        if c is None:
            continue
        row = {"strategy": s, "lr": strat.loc[strat["strategy"] == s, "lr"].iloc[0],
               "trainable params (max)": _int(trainable.get(s)), "test accuracy": fmt_stat(c["stat"]), "vs full": ""}
        if s != "full" and full is not None and c["complete"] and full["complete"]:
            d = difference(c["stat"], full["stat"])
            row["vs full"] = d.text()
            out.numbers.setdefault("vs_full", {})[s] = d.as_dict()
        if c["complete"]:
            out.numbers.setdefault("strategy_accuracy", {})[s] = c["stat"].as_dict()
        rows.append(row)
    out.tables["strategies"] = pd.DataFrame(rows)
    note = missing_note(acc, lambda r: f"strategy {r['strategy']}")
    if note:
        out.caveats.append(note)
    ranked = acc[acc["complete"]].sort_values("mean", ascending=False)
    if len(ranked) >= 2:
        out.headline = ("Strategies ranked by test accuracy: "
                        + ", ".join(f"{r['strategy']} {fmt_stat(r['stat'])}" for _, r in ranked.iterrows()) + ".")
        out.findings.append(out.headline)
        for s, d in out.numbers.get("vs_full", {}).items():
            diff = Difference.from_dict(d)
            out.findings.append(f"{s} vs full fine-tuning: {diff.text()}"
                                f" with {_int(trainable.get(s))} of {_int(trainable.get('full'))} parameters trained"
                                " (at most).")

    # Learning-rate sweep (full fine-tuning): the sweep runs plus the full strategy's run.
    sweep = runs[(runs["strategy"] == "full")]
    lr_acc = cells(sweep, ["lr"], "test_accuracy").sort_values("lr")
    fig = go.Figure()
    done = lr_acc[lr_acc["n"] > 0]
    if len(done):
        seed_band(fig, done.rename(columns={"lr": "x"}), "full fine-tuning", arm_color(0))
        chance_line(fig, chance)
        fig.update_xaxes(type="log")
        fig.update_yaxes(tickformat=".0%")
        out.figures["lr_sweep"] = study_layout(fig, "Test accuracy vs learning rate, full fine-tuning (mean ± std)",
                                               "peak learning rate (log scale)", "movies test accuracy")
    else:
        out.figures["lr_sweep"] = empty_figure("Test accuracy vs learning rate")
    out.tables["lr_sweep"] = pd.DataFrame([{"lr": r["lr"], "test accuracy": fmt_stat(r["stat"]),
                                            "complete": bool(r["complete"])} for _, r in lr_acc.iterrows()])
    complete = lr_acc[lr_acc["complete"]]
    for _, r in complete.iterrows():
        out.numbers.setdefault("lr_accuracy", {})[f"{r['lr']:g}"] = r["stat"].as_dict()
    note = missing_note(lr_acc, lambda r: f"lr {r['lr']:g}")
    if note:
        out.caveats.append(note)
    if len(complete) >= 2:
        best = complete.loc[complete["mean"].idxmax()]
        top = complete.iloc[-1]
        d = difference(top["stat"], best["stat"])
        text = (f"Best learning rate {best['lr']:g} ({fmt_stat(best['stat'])}); the largest, {top['lr']:g}, gives "
                f"{fmt_stat(top['stat'])}: {d.text()}")
        if chance is not None:
            near = top["mean"] <= chance + 0.02
            text += (f", {'at' if near else 'above'} the majority-class rate {chance:.1%}"
                     + (": too large a rate destroyed what pretraining gave." if near else "."))
            out.numbers["largest_lr_at_chance"] = bool(near)
        out.findings.append(text)
    # Training loss per learning rate: divergence shows here first.
    curves = mean_curves(m, sweep, "train", "loss", ["lr"])
    fig = go.Figure()
    for i, lr in enumerate(sorted(curves["lr"].unique()) if len(curves) else []):
        c = curves[curves["lr"] == lr]
        seed_band(fig, c, f"lr {lr:g}", arm_color(i), mode="lines")
    out.figures["lr_train_loss"] = (study_layout(fig, "Training loss by learning rate (mean ± std over seeds)", "step",
                                                 "training loss")
                                    if fig.data else empty_figure("Training loss by learning rate"))
    seed_note(runs, out)


def _int(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{int(x):,}"

