"""Study 5, what does fine-tuning forget: sequential fine-tuning movies → tweets with replay or L2-SP, and the
drift of the encoder. Its plan and its report."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ptft_core.config import BUILTIN_CHECKPOINT, OptimConfig
from ptft_core.plots import TEMPLATE, arm_color, empty_figure, study_layout
from ptft_core.studies.report import Findings, chance_rate, finetune_runs, missing_note, seed_note
from ptft_core.studies.stats import (
    NEGLIGIBLE,
    attach,
    cell,
    cells,
    difference,
    first_values,
    fmt_stat,
    last_values,
    mean_curves,
    mean_std,
    stage_boundary,
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
)

if TYPE_CHECKING:
    from ptft_core.studies.driver import StudyData


@template(
    "forgetting", "What does fine-tuning forget, and can replay or L2-SP prevent it?",
    "After fine-tuning on movies, how much movies accuracy is lost while fine-tuning on tweets, with 0 %, 10 % "
    "and 30 % of each batch replayed from movies, or with an L2-SP penalty; and how far do the encoder's "
    "representations and its general masked-LM ability drift during fine-tuning?",
    "A short masked-LM run on wiki first gives MiniLM an MLM head (it ships without one), so the general-text "
    "MLM loss can be probed. From it: sequential fine-tuning movies → tweets (a head per task, a shared "
    "encoder) with replay 0 %, 10 %, 30 % and with L2-SP. Report: movies validation accuracy along the tweets "
    "stage (prev_task_accuracy), tweets accuracy, and CKA similarity to the starting encoder and general MLM "
    "loss along both stages.",
    "Sequential fine-tuning forgets the first task; replaying a fraction of it and L2-SP reduce the loss "
    "(McCloskey & Cohen 1989; Li et al. 2018; de Masson d'Autume et al. 2019). Both tasks here are sentiment, "
    "so the shared encoder may stay useful for movies and forgetting may be small. Fine-tuning moves the top "
    "of the encoder and raises the general MLM loss.",
)
def build(preset: str, tiny: bool) -> list[PlannedRun]:
    quick = preset == "quick"
    head = pt_config(preset, name="fgt-mlm-head", model=BUILTIN_CHECKPOINT, corpus=["wiki"],
                     max_steps=20 if quick else 500, eval_every=20 if quick else 100,
                     optim=OptimConfig(lr=5e-5, warmup_ratio=0.1))
    runs = [PlannedRun("mlm-head", head, {"arm": "mlm-head", "seed": 0}, priority=1)]
    arms = {"replay 0%": dict(), "replay 10%": dict(replay_fraction=0.1), "replay 30%": dict(replay_fraction=0.3),
            "L2-SP": dict(l2sp=0.1)}
    for seed in seeds(preset, 2, 3):
        for arm, fields in arms.items():
            config = ft_config(preset, name=run_name("fgt", arm.replace(" ", "").replace("%", "pct"), f"s{seed}"),
                               base="pending", dataset="movies", then_dataset="tweets",
                               label_fraction=0.05 if quick else 0.5, epochs=1, then_epochs=2 if quick else 3,
                               eval_every=1000 if quick else 50, probe_drift=True, probe_mlm=True,
                               probe_size=32 if quick else 128, probe_corpus="wiki", seed=seed, **fields)
            runs.append(PlannedRun(f"seq/{arm}/s{seed}", config, {"arm": arm, "seed": seed},
                                   base_from=BaseFrom("mlm-head")))
    return runs


# --- the report -------------------------------------------------------------------------------------------------------


@report_for("forgetting")
def report(data: StudyData, out: Findings) -> None:
    m = data.metrics
    runs = finetune_runs(data)
    before, after, bounds = {}, {}, {}
    for rid in runs.loc[runs["status"] == "completed", "run_id"]:
        b = stage_boundary(m, rid)
        if b is None:
            continue
        bounds[rid] = b
        v1 = m[(m["run_id"] == rid) & (m["split"] == "validation") & (m["name"] == "accuracy") & (m["x"] < b)]
        prev = m[(m["run_id"] == rid) & (m["name"] == "prev_task_accuracy")].sort_values("x")
        if not v1.empty and not prev.empty:
            before[rid], after[rid] = float(v1["value"].max()), float(prev["value"].iloc[-1])
    runs = attach(runs, pd.Series(before, dtype=float), "before")
    runs = attach(runs, pd.Series(after, dtype=float), "after")
    runs["drop"] = runs["before"] - runs["after"]
    runs = attach(runs, last_values(m, "test", "accuracy"), "tweets")
    order = ["replay 0%", "replay 10%", "replay 30%", "L2-SP"]
    b_cells, a_cells = cells(runs, ["arm"], "before"), cells(runs, ["arm"], "after")
    d_cells, t_cells = cells(runs, ["arm"], "drop"), cells(runs, ["arm"], "tweets")
    rows = []
    for arm in order:
        b, a, d, t = (cell(x, arm=arm) for x in (b_cells, a_cells, d_cells, t_cells))
        if b is None:
            continue
        rows.append({"arm": arm, "movies before tweets": fmt_stat(b["stat"]),
                     "movies after tweets": fmt_stat(a["stat"]),
                     "movies drop": fmt_stat(d["stat"]), "tweets test accuracy": fmt_stat(t["stat"])})
        if d["complete"] and t["complete"]:
            out.numbers.setdefault("movies_accuracy", {})[arm] = {"before": b["stat"].as_dict(),
                                                                  "after": a["stat"].as_dict(),
                                                                  "drop": d["stat"].as_dict(),
                                                                  "tweets_test": t["stat"].as_dict()}
    out.tables["forgetting"] = pd.DataFrame(rows)
    note = missing_note(d_cells, lambda r: f"{r['arm']}")
    if note:
        out.caveats.append(note)
    base = cell(d_cells, arm="replay 0%")
    if base is not None and base["complete"]:
        b0, a0 = cell(b_cells, arm="replay 0%"), cell(a_cells, arm="replay 0%")
        forgot = difference(b0["stat"], a0["stat"])
        out.headline = (f"Without replay, movies validation accuracy went from {fmt_stat(b0['stat'])} after the movies "
                        f"stage to {fmt_stat(a0['stat'])} after the tweets stage: a drop of {forgot.text()}.")
        out.findings.append(out.headline)
        # A second stage that only learned the label prior (always the majority class) had little reason to change
        # the encoder: then "little forgetting" says nothing about forgetting, and the report must say why.
        chance, t0 = chance_rate(data, "tweets"), cell(t_cells, arm="replay 0%")
        prior_only = bool(chance and t0 is not None and t0["complete"] and t0["stat"].mean <= chance + 0.01)
        out.numbers["tweets_stage_at_majority_rate"] = prior_only
        if prior_only:
            out.caveats.append(f"without replay the tweets stage reached {fmt_stat(t0['stat'])} tweets test "
                               f"accuracy, the majority-class rate ({chance:.1%}): in this budget it learned the label "
                               "prior rather than tweets, so there was little to forget; the full preset trains the "
                               "second stage longer.")
        if forgot.delta < NEGLIGIBLE or forgot.verdict == "within noise":
            out.findings.append("Little forgetting: " + (
                "the tweets stage barely trained (see the caveats)." if prior_only else
                "both tasks are binary sentiment, so what the shared encoder learns on tweets still serves the "
                "movies head; the mitigations have little to fix."))
        for arm in order[1:]:
            d = cell(d_cells, arm=arm)
            if d is None or not d["complete"]:
                continue
            diff = difference(d["stat"], base["stat"])
            out.numbers.setdefault("drop_vs_no_replay", {})[arm] = diff.as_dict()
            t, t0 = cell(t_cells, arm=arm), cell(t_cells, arm="replay 0%")
            out.findings.append(f"{arm}: movies drop {fmt_stat(d['stat'])} vs {fmt_stat(base['stat'])} without "
                                f"replay ({diff.text()}); tweets test accuracy {fmt_stat(t['stat'])} vs "
                                f"{fmt_stat(t0['stat'])}.")
    # Movies accuracy along the tweets stage.
    done = runs[runs["status"] == "completed"]
    prev = mean_curves(m, done, "forgetting", "prev_task_accuracy", ["arm"])
    val1 = m[(m["split"] == "validation") & (m["name"] == "accuracy")].merge(done[["run_id", "arm"]], on="run_id")
    val1 = val1[np.array([x < bounds.get(r, math.inf) for r, x in zip(val1["run_id"], val1["x"], strict=True)],
                         dtype=bool)]
    stage1 = val1.groupby(["arm", "x"])["value"].mean().reset_index()
    fig = go.Figure()
    for i, arm in enumerate(order):
        c, s1 = prev[prev["arm"] == arm], stage1[stage1["arm"] == arm]
        xs, ys = list(s1["x"]) + list(c["x"]), list(s1["value"]) + list(c["mean"])
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=arm, marker_color=arm_color(i)))
    if bounds:
        fig.add_vline(x=min(bounds.values()) - 0.5, line_dash="dot", line_color="gray",
                      annotation_text="tweets stage starts")
    fig.update_yaxes(tickformat=".0%")
    out.figures["movies_accuracy"] = (study_layout(fig, "Movies validation accuracy: movies stage, then along the "
                                                        "tweets stage (mean over seeds)", "step",
                                                   "movies validation accuracy")
                                      if fig.data else empty_figure("Movies accuracy along the tweets stage"))
    # Drift probes.
    fig = make_subplots(rows=1, cols=2, subplot_titles=("CKA similarity to the starting encoder",
                                                        "general-text masked-LM loss (wiki)"))
    for col, name in ((1, "cka_similarity"), (2, "general_mlm_loss")):
        curves = mean_curves(m, done, "forgetting", name, ["arm"])
        for i, arm in enumerate(order):
            c = curves[curves["arm"] == arm]
            if not c.empty:
                fig.add_trace(go.Scatter(x=c["x"], y=c["mean"], mode="lines+markers", name=arm,
                                         marker_color=arm_color(i), showlegend=col == 1), row=1, col=col)
        if bounds:
            fig.add_vline(x=min(bounds.values()) - 0.5, line_dash="dot", line_color="gray", row=1, col=col)
    fig.update_layout(template=TEMPLATE, height=420, title="Representation drift during fine-tuning (dotted: the "
                      "tweets stage starts)", legend=dict(orientation="h", y=-0.2))
    fig.update_xaxes(title_text="step")
    out.figures["drift"] = fig
    plain = done[done["arm"] == "replay 0%"]
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
                                                      "end_of_tweets": end.as_dict()}
        out.findings.append(f"{label} (no replay): {fmt_stat(start, percent=False, digits=3)} at the first "
                            f"evaluation, {fmt_stat(end1, percent=False, digits=3)} at the end of the movies stage, "
                            f"{fmt_stat(end, percent=False, digits=3)} after tweets.")
    seed_note(runs, out)

