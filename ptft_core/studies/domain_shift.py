"""Study 6, how well does a fine-tuned model transfer across domains: fine-tunes on each sentiment domain, scored
on every other one. Its plan and its report."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ptft_core.config import BUILTIN_CHECKPOINT, EvaluateConfig
from ptft_core.plots import TEMPLATE, arm_color, study_layout
from ptft_core.studies.report import Findings, chance_rate, finetune_runs, seed_note
from ptft_core.studies.stats import finite_or_none, pts, transfer_matrix
from ptft_core.studies.templates import (
    SENTIMENT_DOMAINS,
    BaseFrom,
    PlannedRun,
    ft_config,
    report_for,
    run_name,
    seeds,
    template,
)

if TYPE_CHECKING:
    from ptft_core.studies.driver import StudyData


DOMAIN_FRACTIONS_QUICK = {"movies": 0.05, "amazon": 0.15, "nyt": 0.1, "tweets": 0.12}  # ~420 examples each


@template(
    "domain_shift", "How well does a fine-tuned model transfer across domains?",
    "Fine-tuned on one sentiment domain, how accurate is the model on the other three, and does pretraining "
    "make it transfer better?",
    "Fine-tunes minilm-l6 and its from-scratch copy on each of movies, amazon, nyt and tweets (quick: about "
    "420 labelled examples each), then scores each final checkpoint on the test split of every domain. "
    "Report: the transfer matrix (train domain × test domain) as a heatmap per arm, and the in-domain vs "
    "out-of-domain drop.",
    "Accuracy drops out of domain; pretrained models transfer much better than models trained from scratch, "
    "whose features are narrower (Hendrycks et al. 2020; Blitzer et al. 2007).",
)
def build(preset: str, tiny: bool) -> list[PlannedRun]:
    quick = preset == "quick"
    runs = []
    for seed in seeds(preset, 1, 3):
        for arm, scratch in (("pretrained", False), ("scratch", True)):
            domains = SENTIMENT_DOMAINS[:2] if tiny else SENTIMENT_DOMAINS
            for domain in domains:
                others = tuple(d for d in domains if d != domain)
                config = ft_config(preset, name=run_name("dsh", arm, domain, f"s{seed}"), base=BUILTIN_CHECKPOINT,
                                   scratch=scratch, dataset=domain, seed=seed,
                                   label_fraction=DOMAIN_FRACTIONS_QUICK[domain] if quick else 1.0,
                                   epochs=1 if quick else 3)
                key, labels = f"{arm}/{domain}/s{seed}", {"arm": arm, "domain": domain, "seed": seed}
                runs.append(PlannedRun(key, config, labels))
                # Its final checkpoint scored on the other domains: a run of its own, after the fine-tune.
                # (`model` names the planned key until the driver puts the fine-tune's run id there.)
                runs.append(PlannedRun(f"{key}/other-domains", EvaluateConfig(
                    name=f"{config.name}-on-others", model=f"run:{key}", datasets=list(others), seed=seed), labels,
                    BaseFrom(key)))
    return runs


# --- the report -------------------------------------------------------------------------------------------------------


@report_for("domain_shift")
def report(data: StudyData, out: Findings) -> None:
    m = data.metrics
    runs = finetune_runs(data)
    domains = [d for d in SENTIMENT_DOMAINS if d in set(runs["domain"])]
    arms = [a for a in ("pretrained", "scratch") if a in set(runs["arm"])]
    fig = make_subplots(rows=1, cols=len(arms), subplot_titles=[f"{a}" for a in arms], horizontal_spacing=0.12)
    summary = {}
    for col, arm in enumerate(arms, start=1):
        part = runs[runs["arm"] == arm]
        mean, std, n = transfer_matrix(part, m, domains)
        planned = part.groupby("domain").size()
        out.tables[f"transfer_{arm}"] = mean.map(lambda v: f"{v:.1%}" if np.isfinite(v) else "n/a")
        text = [[(f"{mean.iloc[i, j]:.1%}" if np.isfinite(mean.iloc[i, j]) else "n/a")
                 + (f"<br>±{std.iloc[i, j]:.1%}" if np.isfinite(std.iloc[i, j]) else "")
                 for j in range(len(domains))] for i in range(len(domains))]
        fig.add_trace(go.Heatmap(z=mean.to_numpy(), x=domains, y=domains, text=text, texttemplate="%{text}",
                                 zmin=0.4, zmax=1.0, colorscale="Viridis", showscale=col == len(arms),
                                 hovertemplate="trained on %{y}, tested on %{x}: %{z:.2%}<extra>" + arm + "</extra>"),
                      row=1, col=col)
        # Complete cells only: every planned run of the source domain finished and was scored on the target.
        complete = n.apply(lambda row, planned=planned: row == planned.get(row.name, -1), axis=1)
        diag = [mean.loc[d, d] for d in domains if complete.loc[d, d]]
        off = [mean.loc[s, t] for s in domains for t in domains if s != t and complete.loc[s, t]]
        full_rows = [d for d in domains if complete.loc[d].all()]
        if len(full_rows) < len(domains):
            missing = [d for d in domains if d not in full_rows]
            out.caveats.append(f"{arm}: no complete transfer row for {', '.join(missing)} (runs or cross-domain "
                               "evaluations missing); the averages below leave those cells out")
        if diag and off:
            summary[arm] = {"in_domain": float(np.mean(diag)), "out_of_domain": float(np.mean(off)),
                            "drop": float(np.mean(diag) - np.mean(off)), "cells": len(diag) + len(off)}
            out.numbers.setdefault("transfer", {})[arm] = {
                **summary[arm], "matrix": {s: {t: finite_or_none(mean.loc[s, t]) for t in domains} for s in domains}}
            worst = min(((s, t) for s in domains for t in domains if s != t and complete.loc[s, t]),
                        key=lambda st: mean.loc[st])
            out.findings.append(
                f"{arm}: mean in-domain accuracy {summary[arm]['in_domain']:.1%}, out of domain "
                f"{summary[arm]['out_of_domain']:.1%} (drop {pts(summary[arm]['drop'])}); the hardest transfer is "
                f"{worst[0]} → {worst[1]} ({mean.loc[worst]:.1%}, majority class "
                f"{(chance_rate(data, worst[1]) or math.nan):.1%}).")
    fig.update_layout(template=TEMPLATE, height=440, title="Transfer matrix: test accuracy, trained on (rows) × "
                      "tested on (columns), mean over seeds")
    fig.update_xaxes(title_text="tested on")
    fig.update_yaxes(title_text="trained on", col=1)
    out.figures["transfer_matrix"] = fig
    # In-domain vs out-of-domain per training domain.
    fig = go.Figure()
    for i, arm in enumerate(arms):
        part = runs[runs["arm"] == arm]
        mean, _, _ = transfer_matrix(part, m, domains)
        ins = [mean.loc[d, d] for d in domains]
        outs = [np.nanmean([mean.loc[d, t] for t in domains if t != d]) if
                np.isfinite([mean.loc[d, t] for t in domains if t != d]).any() else np.nan for d in domains]
        fig.add_trace(go.Bar(x=domains, y=ins, name=f"{arm}: in domain", marker_color=arm_color(2 * i)))
        fig.add_trace(go.Bar(x=domains, y=outs, name=f"{arm}: other domains (mean)", marker_color=arm_color(2 * i + 1)))
    fig.update_layout(barmode="group")
    fig.update_yaxes(tickformat=".0%")
    out.figures["in_vs_out"] = study_layout(fig, "In-domain vs out-of-domain accuracy by training domain",
                                            "trained on", "test accuracy")
    if len(summary) == 2:
        p, s = summary["pretrained"], summary["scratch"]
        out.headline = (f"Out of domain, pretrained MiniLM keeps {p['out_of_domain']:.1%} accuracy (drop "
                        f"{pts(p['drop'])} from in-domain) against {s['out_of_domain']:.1%} from scratch (drop "
                        f"{pts(s['drop'])}).")
        out.findings.insert(0, out.headline)
        out.findings.append("Pretraining " + ("narrows" if p["drop"] < s["drop"] else "does not narrow")
                            + f" the in- vs out-of-domain gap here ({pts(p['drop'])} vs {pts(s['drop'])}), and "
                            + ("raises" if p["out_of_domain"] > s["out_of_domain"] else "does not raise")
                            + " out-of-domain accuracy.")
    seed_note(runs, out)

