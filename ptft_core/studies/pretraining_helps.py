"""Study 1, does pretraining help, and when: pretrained MiniLM against the same architecture from scratch, over
label budgets. Its plan and its report."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ptft_core.config import BUILTIN_CHECKPOINT
from ptft_core.plots import DASHES, arm_color, bar_figure, chance_line, empty_figure, seed_band, study_layout
from ptft_core.studies.report import Findings, calibration, chance_rate, finetune_runs, missing_note, seed_note
from ptft_core.studies.stats import (
    TARGET_SHARE,
    attach,
    cell,
    cells,
    difference,
    fmt_stat,
    last_values,
    max_values,
    mean_curves,
    pts,
    steps_to_target,
)
from ptft_core.studies.templates import (
    FINETUNE_BUDGET,
    Budget,
    PlannedRun,
    ft_config,
    pct,
    report_for,
    run_name,
    seeds,
    template,
)

if TYPE_CHECKING:
    from ptft_core.studies.driver import StudyData


# Quick: 1 %, 10 % and all of the labels, 3 seeds; full: five label budgets, 5 seeds. One budget rule for every arm
# of the study: two epochs, at least 50 steps (the 85-example arm trains many epochs), at most HELPS_BUDGET's cap.
# Quick caps at 250 steps of 16: the smallest budget in which MiniLM's architecture trained from scratch leaves the
# majority class on movies (a pilot, seed 0, all labels, lr 1e-4: validation 49 % at 100 steps, 61 % at 200, 69 %
# at 300), so the gap-versus-labels question is asked where both arms learn; at 1 % and 10 % scratch cannot.
# Patience 4 evaluations, not 3: a scratch run sits on the label prior for its first evaluations before it learns.
HELPS_BUDGET = {"quick": Budget(epochs=2, min_steps=50, max_steps=250, patience=4), "full": FINETUNE_BUDGET["full"]}


@template(
    "pretraining_helps", "Does pretraining help, and when?",
    "How much does starting from pretrained MiniLM beat the same architecture trained from scratch, and how does "
    "the gap change with the number of labelled examples?",
    "Fine-tunes minilm-l6 and a randomly re-initialised copy (scratch=True: same architecture and tokenizer) on "
    "movies with 1 %, 10 % and 100 % of the labels (quick; full adds 3 % and 30 %), 3 seeds each (full: 5), every "
    "arm under the same step budget rule (a floor of steps, early stopping at the plateau). Report: test accuracy "
    "against labelled examples (mean ± std), steps to reach a target validation accuracy, and the train − "
    "validation accuracy gap at the end.",
    "Pretraining should win at every label budget, by the widest margin when labels are scarce; the pretrained "
    "model should also reach a given validation accuracy in far fewer steps (Howard & Ruder 2018; Devlin et al. "
    "2019; Hendrycks et al. 2019).",
)
def build(preset: str, tiny: bool) -> list[PlannedRun]:
    quick = preset == "quick"
    fractions = (0.01, 0.1) if tiny else (0.01, 0.1, 1.0) if quick else (0.01, 0.03, 0.1, 0.3, 1.0)
    runs = []
    for seed in seeds(preset, 3, 5):
        for fraction in fractions:
            for arm, scratch in (("pretrained", False), ("scratch", True)):
                config = ft_config(preset, HELPS_BUDGET[preset],
                                   name=run_name("pth", arm, pct(fraction), f"s{seed}"), base=BUILTIN_CHECKPOINT,
                                   scratch=scratch, dataset="movies", label_fraction=fraction, seed=seed)
                runs.append(PlannedRun(f"{arm}/frac{fraction:g}/s{seed}", config,
                                       {"arm": arm, "label_fraction": fraction, "seed": seed}))
    return runs


# --- the report -------------------------------------------------------------------------------------------------------


@report_for("pretraining_helps")
def report(data: StudyData, out: Findings) -> None:
    runs = finetune_runs(data)
    m = data.metrics
    chance = chance_rate(data, "movies")
    runs = attach(runs, last_values(m, "test", "accuracy"), "test_accuracy")
    runs = attach(runs, max_values(m, "validation", "accuracy"), "peak_val")
    gap = last_values(m, "train", "accuracy") - last_values(m, "validation", "accuracy")
    runs = attach(runs, gap.dropna(), "gap")
    acc = cells(runs, ["label_fraction", "arm"], "test_accuracy")
    examples = runs.groupby("label_fraction")["labelled_examples"].first() if "labelled_examples" in runs else {}
    fractions = sorted(runs["label_fraction"].unique())

    # Data efficiency.
    fig = go.Figure()
    for i, arm in enumerate(("pretrained", "scratch")):
        part = acc[(acc["arm"] == arm) & (acc["n"] > 0)]
        seed_band(fig, part.assign(x=[examples.get(f, f) for f in part["label_fraction"]]), arm, arm_color(i))
    chance_line(fig, chance)
    fig.update_xaxes(type="log")
    fig.update_yaxes(tickformat=".0%")
    out.figures["data_efficiency"] = (study_layout(fig, "Test accuracy vs labelled examples (mean ± std over seeds)",
                                                   "labelled training examples (log scale)", "movies test accuracy")
                                      if (acc["n"] > 0).any() else empty_figure("Test accuracy vs labelled examples"))

    table_rows, per_fraction = [], {}
    for f in fractions:
        p, s = cell(acc, label_fraction=f, arm="pretrained"), cell(acc, label_fraction=f, arm="scratch")
        row = {"label fraction": f"{f:.0%}" if f >= 0.01 else f"{f:.1%}",
               "labelled examples": examples.get(f), "pretrained": fmt_stat(p["stat"]) if p is not None else "n/a",
               "scratch": fmt_stat(s["stat"]) if s is not None else "n/a", "difference": "n/a"}
        if p is not None and s is not None and p["complete"] and s["complete"]:
            d = difference(p["stat"], s["stat"])
            row["difference"] = d.text()
            per_fraction[f] = d
            out.numbers.setdefault("test_accuracy", {})[f"{f:g}"] = {
                "pretrained": p["stat"].as_dict(), "scratch": s["stat"].as_dict(), "difference": d.as_dict()}
            out.findings.append(
                f"With {row['label fraction']} of the labels ({row['labelled examples']} examples), pretrained "
                f"MiniLM reaches {fmt_stat(p['stat'])} test accuracy against {fmt_stat(s['stat'])} from scratch: "
                f"{d.text()}.")
        table_rows.append(row)
    out.tables["test_accuracy"] = pd.DataFrame(table_rows)
    note = missing_note(acc, lambda r: f"{r['arm']} at {r['label_fraction']:.0%} labels")
    if note:
        out.caveats.append(note)
    if len(per_fraction) >= 2:
        lo, hi = min(per_fraction), max(per_fraction)
        dlo, dhi = per_fraction[lo].delta, per_fraction[hi].delta
        helps = "helps" if all(d.delta > 0 for d in per_fraction.values()) else "does not always help"
        # Where a scratch run learned only the label prior, the gap there is the pretrained model's gain over that
        # prior: how the gap moves with labels is asked only across the fractions where both arms learn.
        prior = runs[(runs["arm"] == "scratch") & runs["majority_only"].astype(bool)]
        prior_fractions = sorted(set(prior["label_fraction"]) & set(per_fraction))
        learned = [f for f in sorted(per_fraction) if f not in prior_fractions]
        out.numbers["scratch_learned_at"] = [float(f) for f in learned]
        out.headline = f"Pretraining {helps}: {pts(dlo)} at {pct(lo)} labels, {pts(dhi)} at {pct(hi)}"
        if len(learned) >= 2:
            change = per_fraction[learned[-1]].delta - per_fraction[learned[0]].delta
            trend = "stays within a point" if abs(change) < 0.01 else "shrinks" if change < 0 else "grows"
            out.headline += (f"; where both arms learn ({', '.join(map(pct, learned))} labels) the advantage "
                             f"{trend} as labels grow.")
        elif learned:
            out.headline += (f"; the scratch arm leaves the majority class only at {pct(learned[0])} labels "
                             f"({per_fraction[learned[0]].text()} there).")
        else:
            out.headline += "; the scratch arm learned only the majority class at every label budget."
        out.findings.insert(0, out.headline)
        if prior_fractions:
            counts = ", ".join(f"{int((prior['label_fraction'] == f).sum())} of "
                               f"{int(((runs['arm'] == 'scratch') & (runs['label_fraction'] == f)).sum())} at {pct(f)}"
                               for f in prior_fractions)
            out.findings.append(
                f"From scratch, some runs ({counts} labels) ended at the majority-class "
                "rate (they learned only the label prior within this budget), so the gap there is the pretrained "
                "model's gain over the prior, not a comparison of two models that learned: it is not read as a "
                "trend." + ("" if learned else " Whether the gap is widest with few labels cannot be told until "
                            "the scratch arm learns (a larger label budget or the full preset)."))
        if len(learned) == 1 and prior_fractions and learned[0] > max(prior_fractions):
            f = learned[0]
            out.findings.append(
                f"Read with that in mind: with few labels the scratch arm cannot learn at all within the budget "
                f"while pretrained MiniLM can ({pts(per_fraction[max(prior_fractions)].delta)} at "
                f"{pct(max(prior_fractions))}); once the scratch arm has enough labels to learn ({pct(f)}), the "
                f"gap is {pts(per_fraction[f].delta)}. The expectation (pretraining wins everywhere, most with "
                "few labels) " + ("holds in that sense." if per_fraction[f].delta > 0 and per_fraction[f].delta
                                  < per_fraction[max(prior_fractions)].delta else "does not hold here."))
        elif len(learned) >= 2:
            agrees = (all(per_fraction[f].delta > 0 for f in learned)
                      and per_fraction[learned[-1]].delta <= per_fraction[learned[0]].delta)
            out.findings.append(
                "Where both arms learn: " + ", ".join(f"{pct(f)}: {per_fraction[f].text()}" for f in learned)
                + (". This agrees with the expectation (pretraining wins, most with few labels)." if agrees else
                   ". This does not fully agree with the expectation (pretraining winning everywhere, most with "
                   "few labels)."))

    # Convergence: steps to a target validation accuracy.
    val = mean_curves(m, runs, "validation", "accuracy", ["label_fraction", "arm"])
    peak = cells(runs, ["label_fraction", "arm"], "peak_val")
    conv_rows = []
    fig = go.Figure()
    for fi, f in enumerate(fractions):
        best = peak[(peak["label_fraction"] == f) & peak["complete"]]["mean"].max()
        if not np.isfinite(best):
            continue
        target = TARGET_SHARE * best
        for ai, arm in enumerate(("pretrained", "scratch")):
            curve = val[(val["label_fraction"] == f) & (val["arm"] == arm)]
            if not curve.empty:
                seed_band(fig, curve, f"{arm}, {f:.0%} labels", arm_color(ai), dash=DASHES[fi % len(DASHES)])
            group = runs[(runs["label_fraction"] == f) & (runs["arm"] == arm)]
            finished = group[group["status"] == "completed"]
            steps = [steps_to_target(m[(m["run_id"] == rid) & (m["split"] == "validation")
                                       & (m["name"] == "accuracy")], target) for rid in finished["run_id"]]
            reached = [s for s in steps if s is not None]
            complete = len(finished) == len(group)
            conv_rows.append({"label fraction": f"{f:.0%}", "arm": arm, "target": f"{target:.1%}",
                              "steps to target": (f"{np.mean(reached):.0f}" if reached else "not reached")
                              + (f" (reached in {len(reached)} of {len(steps)} seeds)" if len(reached) != len(steps)
                                 else ""),
                              "complete": complete})
            out.numbers.setdefault("steps_to_target", {}).setdefault(f"{f:g}", {})[arm] = {
                "target": target, "mean_steps": float(np.mean(reached)) if reached else None,
                "reached": len(reached), "seeds": len(steps)}
    if fig.data:
        out.figures["convergence"] = study_layout(fig, "Validation accuracy during fine-tuning (mean ± std over "
                                                       f"seeds); target = {TARGET_SHARE:.0%} of the best arm's peak",
                                                  "step", "movies validation accuracy")
        out.figures["convergence"].update_yaxes(tickformat=".0%")
    else:
        out.figures["convergence"] = empty_figure("Validation accuracy during fine-tuning")
    conv = pd.DataFrame(conv_rows)
    out.tables["steps_to_target"] = conv
    for f in fractions:
        part = conv[conv["label fraction"] == f"{f:.0%}"] if len(conv) else conv
        if len(part) == 2 and part["complete"].all():
            p, s = part.iloc[0], part.iloc[1]
            out.findings.append(f"To reach {p['target']} validation accuracy at {f:.0%} labels: pretrained "
                                f"{p['steps to target']} steps, scratch {s['steps to target']}.")

    # Overfitting gap.
    gaps = cells(runs, ["label_fraction", "arm"], "gap")
    gaps["label"] = [f"{f:.0%}" for f in gaps["label_fraction"]]
    fig = bar_figure(gaps, "label", "Train − validation accuracy at the end (mean ± std)", "accuracy gap", group="arm")
    if (gaps["n"] > 0).any():
        fig.update_yaxes(range=None, tickformat=".0%", autorange=True)
        fig.update_xaxes(title_text="label fraction")
    out.figures["overfitting_gap"] = fig
    gap_text = []
    for f in fractions:
        p, s = cell(gaps, label_fraction=f, arm="pretrained"), cell(gaps, label_fraction=f, arm="scratch")
        if p is not None and s is not None and p["complete"] and s["complete"]:
            gap_text.append(f"{f:.0%}: pretrained {fmt_stat(p['stat'])}, scratch {fmt_stat(s['stat'])}")
            out.numbers.setdefault("overfitting_gap", {})[f"{f:g}"] = {"pretrained": p["stat"].as_dict(),
                                                                      "scratch": s["stat"].as_dict()}
    if gap_text:
        out.findings.append("Train − validation accuracy at the end (a train sample scored like validation): "
                            + "; ".join(gap_text) + ".")
    largest = runs[runs["label_fraction"] == max(fractions)] if fractions else runs
    calibration(data, largest, lambda r: r["arm"], out, f"{pct(max(fractions)) if fractions else ''} labels")
    seed_note(runs, out)

