"""Study 5, what does fine-tuning forget: sequential fine-tuning movies → a similar task (tweets, sentiment again)
or a dissimilar one (sources: which source a sentence comes from), with replay or L2-SP, and the drift of the
encoder. Its plan and its report."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ptft_core.config import BUILTIN_CHECKPOINT, OptimConfig
from ptft_core.plots import TEMPLATE, arm_color, empty_figure, seed_band, study_layout
from ptft_core.studies.report import Findings, chance_rate, finetune_runs, missing_note, seed_note
from ptft_core.studies.stats import (
    attach,
    cell,
    cells,
    first_values,
    fmt_stat,
    last_values,
    mean_curves,
    mean_std,
    paired,
    seed_matched,
)
from ptft_core.studies.templates import (
    BaseFrom,
    PlannedRun,
    ft_config,
    pt_config,
    report_for,
    run_name,
    seeds,
    template,
    train_rows,
)

if TYPE_CHECKING:
    from ptft_core.studies.driver import StudyData


# Arms: the second task and the mitigation. Quick keeps the three cells the question turns on; full adds the rest.
ARMS = {
    "similar (tweets)": dict(then_dataset="tweets"),
    "dissimilar (sources)": dict(then_dataset="sources"),
    "sources + replay 30%": dict(then_dataset="sources", replay_fraction=0.3),
    "sources + replay 10%": dict(then_dataset="sources", replay_fraction=0.1),
    "sources + L2-SP": dict(then_dataset="sources", l2sp=0.1),
}
# Quick: the two cells the question turns on, 4 seeds each (with 2-3 seeds the per-seed drops, 2 to 24 points on
# this budget, left even a 12-point mean drop within noise); the similar-task contrast and L2-SP are in full.
QUICK_ARMS = ("dissimilar (sources)", "sources + replay 30%")
PLAIN, SIMILAR, REPLAY = "dissimilar (sources)", "similar (tweets)", "sources + replay 30%"
# Optimizer steps of (the movies stage, the second stage), the same for every arm. Quick: one epoch of each task's
# 10 % at 16 a batch (movies 848 examples: 53 steps; sources 1,048: 66 steps): with 45 steps each the second
# stage was still rising in every run when it stopped, so its drop was still growing. A head-only MLM run first
# gives MiniLM a reader for the general-text probe, its encoder untouched.
STAGE_STEPS = {"quick": (53, 66), "full": (600, 600)}
HEAD_STEPS = {"quick": 80, "full": 600}


@template(
    "forgetting", "What does fine-tuning forget, and can replay or L2-SP prevent it?",
    "After fine-tuning on movies, how much movies accuracy is lost while fine-tuning on a second task, when that "
    "task is similar (tweets sentiment) or dissimilar (which source a sentence comes from), and how much does "
    "replaying movies (or L2-SP) keep; how far do the encoder's representations and its general masked-LM "
    "ability drift?",
    "A head-only masked-LM run on wiki first gives MiniLM an MLM head (it ships without one) with its encoder "
    "frozen, so the general-text MLM loss is a sensible reader of the unchanged encoder. From it: sequential "
    "fine-tuning movies → tweets and movies → sources (a head per task, one shared encoder), the latter also "
    "with 30 % of each batch replayed from movies (full: also 10 % replay and L2-SP); every arm trains the "
    "same steps per stage. Report: movies validation accuracy from the start of the second stage (its best "
    "weights) to its end, the second task's test accuracy, CKA similarity to the starting encoder and the general "
    "MLM loss along both stages; paired t-tests over seeds (the drop within each run; each arm against no "
    "mitigation seed by seed, as two arms with one seed share the movies stage).",
    "Sequential fine-tuning forgets the first task, more when the second task needs different features; replay "
    "of the first task and L2-SP reduce the loss (McCloskey & Cohen 1989; Li et al. 2018; de Masson d'Autume et "
    "al. 2019). A second sentiment task keeps much of what movies needs. Fine-tuning moves the top of the "
    "encoder and raises the general MLM loss.",
)
def build(preset: str, tiny: bool) -> list[PlannedRun]:
    quick = preset == "quick"
    head = pt_config(preset, name="fgt-mlm-head", model=BUILTIN_CHECKPOINT, corpus=["wiki"], freeze_encoder=True,
                     max_steps=HEAD_STEPS[preset], optim=OptimConfig(lr=1e-3, warmup_ratio=0.1))
    runs = [PlannedRun("mlm-head", head, {"arm": "mlm-head", "seed": 0}, priority=1)]
    first, second = STAGE_STEPS[preset]
    arms = QUICK_ARMS if quick else tuple(ARMS)
    for seed in seeds(preset, 4, 5):
        for arm in arms:
            fields = ARMS[arm]
            batch = 16 if quick else 32
            config = ft_config(preset, name=run_name("fgt", arm.split(" (")[0].replace(" + ", "-").replace(" ", "-")
                                                     .replace("%", "pct"), f"s{seed}"),
                               base="pending", dataset="movies", label_fraction=0.1,
                               # max_steps caps each stage; the movies stage ends with its epochs
                               epochs=epochs_for(first, "movies", batch),
                               then_epochs=epochs_for(second, fields["then_dataset"], batch),
                               max_steps=max(first, second), probe_drift=True, probe_mlm=True,
                               probe_size=16 if quick else 128, probe_corpus="wiki", seed=seed,
                               # quick: 4 seeds need cheaper evaluations (two tasks and the probes at each)
                               **({"eval_count": 3, "eval_val_samples": 128, "eval_train_samples": 0} if quick else {}),
                               **fields)
            runs.append(PlannedRun(f"seq/{arm}/s{seed}", config, {"arm": arm, "seed": seed,
                                                                   "second_task": fields["then_dataset"]},
                                   base_from=BaseFrom("mlm-head")))
    return runs


def epochs_for(steps: int, dataset: str, batch_size: int, fraction: float = 0.1) -> int:
    """Epochs over `fraction` of `dataset` that cover `steps` optimizer steps (max_steps then stops each stage)."""
    return math.ceil(steps / math.ceil(max(1, round(fraction * train_rows(dataset))) / batch_size))


# --- the report -------------------------------------------------------------------------------------------------------


def stage_values(m: pd.DataFrame, run_id: str) -> tuple[float, float, float] | None:
    """(movies accuracy at the second stage's start, at its end, the step it starts) from prev_task_accuracy."""
    prev = m[(m["run_id"] == run_id) & (m["name"] == "prev_task_accuracy")].sort_values("x")
    if len(prev) < 2:
        return None
    return float(prev["value"].iloc[0]), float(prev["value"].iloc[-1]), float(prev["x"].iloc[0])


@report_for("forgetting")
def report(data: StudyData, out: Findings) -> None:
    m = data.metrics
    runs = finetune_runs(data)
    before, after, bounds = {}, {}, {}
    for rid in runs.loc[runs["status"] == "completed", "run_id"]:
        values = stage_values(m, rid)
        if values is not None:
            before[rid], after[rid], bounds[rid] = values
    runs = attach(runs, pd.Series(before, dtype=float), "before")
    runs = attach(runs, pd.Series(after, dtype=float), "after")
    runs["drop"] = runs["before"] - runs["after"]
    runs = attach(runs, last_values(m, "test", "accuracy"), "second")
    order = [a for a in ARMS if a in set(runs["arm"])]
    b_cells, a_cells = cells(runs, ["arm"], "before"), cells(runs, ["arm"], "after")
    d_cells, t_cells = cells(runs, ["arm"], "drop"), cells(runs, ["arm"], "second")
    # A second stage that only learned the label prior had little reason to change the encoder: its "forgetting"
    # says nothing, so the arm is reported invalid rather than interpreted.
    invalid = set(runs.loc[runs["majority_only"].astype(bool), "arm"])
    out.numbers["second_stage_at_majority_rate"] = sorted(invalid)
    rows = []
    for arm in order:
        b, a, d, t = (cell(x, arm=arm) for x in (b_cells, a_cells, d_cells, t_cells))
        task = ARMS[arm]["then_dataset"]
        chance = chance_rate(data, task)
        rows.append({"arm": arm, "movies at the second stage's start": fmt_stat(b["stat"]),
                     "movies at its end": fmt_stat(a["stat"]), "movies drop": fmt_stat(d["stat"]),
                     "second task test accuracy": fmt_stat(t["stat"]),
                     "second task majority class": f"{chance:.1%}" if chance else "n/a",
                     "valid": "no: learned only the majority class" if arm in invalid else "yes"})
        if d["complete"] and t["complete"]:
            drop = paired(d["stat"])
            out.numbers.setdefault("movies_accuracy", {})[arm] = {
                "before": b["stat"].as_dict(), "after": a["stat"].as_dict(), "drop": d["stat"].as_dict(),
                "drop_test": drop.as_dict(), "second_test": t["stat"].as_dict(), "valid": arm not in invalid}
    out.tables["forgetting"] = pd.DataFrame(rows)
    note = missing_note(d_cells, lambda r: f"{r['arm']}")
    if note:
        out.caveats.append(note)
    for arm in sorted(invalid):
        out.caveats.append(f"{arm}: the second stage ended at the majority-class rate of "
                           f"{ARMS[arm]['then_dataset']} (it learned the label prior, not the task), so its movies "
                           "drop is not interpreted.")

    def complete(arm: str) -> bool:
        d = cell(d_cells, arm=arm)
        return d is not None and bool(d["complete"]) and arm not in invalid

    if complete(PLAIN):
        b0, a0 = cell(b_cells, arm=PLAIN), cell(a_cells, arm=PLAIN)
        forgot = paired(cell(d_cells, arm=PLAIN)["stat"])  # before and after are the same runs: paired
        out.headline = (f"Fine-tuning on a dissimilar task (sources) after movies took movies validation accuracy "
                        f"from {fmt_stat(b0['stat'])} to {fmt_stat(a0['stat'])}: a drop of {forgot.text()}.")
        out.findings.append(out.headline)
        for arm, what in ((SIMILAR, "a similar task (tweets) instead"), (REPLAY, "30 % replay of movies")):
            if not complete(arm):
                continue
            diff = seed_matched(runs, "drop", arm, PLAIN)
            out.numbers.setdefault("drop_vs_dissimilar", {})[arm] = diff.as_dict()
            out.findings.append(f"With {what}, the movies drop is {fmt_stat(cell(d_cells, arm=arm)['stat'])} "
                                f"against {fmt_stat(cell(d_cells, arm=PLAIN)['stat'])}: {diff.text()}, seed by "
                                "seed.")
        for arm in order:
            if arm not in (PLAIN, SIMILAR, REPLAY) and complete(arm):
                diff = seed_matched(runs, "drop", arm, PLAIN)
                out.numbers.setdefault("drop_vs_dissimilar", {})[arm] = diff.as_dict()
                out.findings.append(f"{arm}: movies drop {fmt_stat(cell(d_cells, arm=arm)['stat'])} ({diff.text()} "
                                    "against no mitigation).")

    # Movies accuracy along both stages.
    done = runs[runs["status"] == "completed"]
    prev = mean_curves(m, done, "forgetting", "prev_task_accuracy", ["arm"])
    val1 = m[(m["split"] == "validation") & (m["name"] == "accuracy")].merge(done[["run_id", "arm"]], on="run_id")
    val1 = val1[np.array([x <= bounds.get(r, math.inf) for r, x in zip(val1["run_id"], val1["x"], strict=True)],
                         dtype=bool)]
    stage1 = val1.groupby(["arm", "x"])["value"].agg(mean="mean", std="std", n="count").reset_index()
    fig = go.Figure()
    for i, arm in enumerate(order):
        seed_band(fig, pd.concat([stage1[stage1["arm"] == arm], prev[prev["arm"] == arm]]), arm, arm_color(i))
    if bounds:
        fig.add_vline(x=min(bounds.values()) - 0.5, line_dash="dot", line_color="gray",
                      annotation_text="second stage starts")
    fig.update_yaxes(tickformat=".0%")
    out.figures["movies_accuracy"] = (study_layout(fig, "Movies validation accuracy: movies stage, then along the "
                                                        "second stage (mean ± std over seeds)", "step",
                                                   "movies validation accuracy")
                                      if fig.data else empty_figure("Movies accuracy along the second stage"))
    # Drift probes.
    fig = make_subplots(rows=1, cols=2, subplot_titles=("CKA similarity to the starting encoder",
                                                        "general-text masked-LM loss (wiki, head-only MLM reader)"))
    for col, name in ((1, "cka_similarity"), (2, "general_mlm_loss")):
        curves = mean_curves(m, done, "forgetting", name, ["arm"])
        for i, arm in enumerate(order):
            seed_band(fig, curves[curves["arm"] == arm], arm, arm_color(i), showlegend=col == 1, row=1, col=col)
        if bounds:
            fig.add_vline(x=min(bounds.values()) - 0.5, line_dash="dot", line_color="gray", row=1, col=col)
    fig.update_layout(template=TEMPLATE, height=420, title="Representation drift during fine-tuning (dotted: the "
                      "second stage starts)", legend=dict(orientation="h", y=-0.2))
    fig.update_xaxes(title_text="step")
    out.figures["drift"] = fig
    plain = done[done["arm"] == PLAIN]
    for name, label in (("cka_similarity", "CKA similarity to the starting encoder"),
                        ("general_mlm_loss", "general-text MLM loss")):
        series = m[(m["name"] == name) & m["run_id"].isin(plain["run_id"])]
        if series.empty:
            continue
        stage1_end = [series[(series["run_id"] == r) & (series["x"] < bounds.get(r, math.inf))]
                      .sort_values("x")["value"] for r in plain["run_id"]]
        start = mean_std(first_values(series, "forgetting", name))
        end1 = mean_std(s.iloc[-1] for s in stage1_end if len(s))
        end = mean_std(last_values(series, "forgetting", name))
        out.numbers.setdefault("drift", {})[name] = {"first_eval": start.as_dict(), "end_of_movies": end1.as_dict(),
                                                      "end_of_second": end.as_dict()}
        out.findings.append(f"{label} ({PLAIN}): {fmt_stat(start, percent=False, digits=3)} before the first "
                            f"step, {fmt_stat(end1, percent=False, digits=3)} at the end of the movies stage, "
                            f"{fmt_stat(end, percent=False, digits=3)} after the second stage"
                            + (" (the probe: masked-LM loss of the head-only reader on held-out wiki text; a "
                               "uniform guess over 30,522 WordPieces scores 10.3)." if name == "general_mlm_loss"
                               else "."))
    seed_note(runs, out)

