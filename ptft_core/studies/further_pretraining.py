"""Study 3, does further pretraining on related text help: domain- and task-adaptive masked-LM pretraining of
MiniLM before fine-tuning, against none and against unrelated text. Its plan and its report."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import plotly.graph_objects as go

from ptft_core.config import BUILTIN_CHECKPOINT, OptimConfig
from ptft_core.plots import arm_color, bar_figure, empty_figure, reference_lines, study_layout
from ptft_core.studies.report import Findings, chance_rate, finetune_runs, missing_note, reference_rows, seed_note
from ptft_core.studies.stats import attach, cell, cells, difference, fmt_stat, last_values, pts
from ptft_core.studies.templates import (
    FINETUNE_BUDGET,
    BaseFrom,
    PlannedRun,
    ft_config,
    pct,
    pt_config,
    report_for,
    run_name,
    seeds,
    template,
)

if TYPE_CHECKING:
    from ptft_core.studies.driver import StudyData


FURTHER_ARMS = {  # arm -> (corpus of the further masked-LM pretraining, what it is)
    "none": (None, "MiniLM as shipped"),
    "domain (amazon)": ("amazon", "domain-adaptive: other review text"),
    "task (movies)": ("movies", "task-adaptive: the task's own training text"),
    "unrelated (wiki)": ("wiki", "an unrelated domain"),
}




@template(
    "further_pretraining", "Does further pretraining on related text help?",
    "Does continuing masked-LM pretraining of MiniLM on review text (domain-adaptive) or on the task's own "
    "training text (task-adaptive) improve movies fine-tuning, compared with no further pretraining and with "
    "further pretraining on unrelated text?",
    "Further-pretrains minilm-l6 with masked-LM on amazon review text, on the movies training text (labels "
    "unused) and on wiki, then fine-tunes each (and MiniLM itself) on movies with 10 % of the labels. "
    "Report: test accuracy per arm (mean ± std) and the masked-LM loss curves of the further pretraining.",
    "Domain- and task-adaptive pretraining help most when the task's domain is far from the original "
    "pretraining data and labels are scarce; unrelated text should help less or not at all (Gururangan et al. "
    "2020). Effects are a few points after thousands of steps; a few dozen steps may show nothing.",
)
def build(preset: str, tiny: bool) -> list[PlannedRun]:
    quick = preset == "quick"
    runs = []
    arms = {a: v for a, v in FURTHER_ARMS.items() if not tiny or a != "domain (amazon)"}
    for arm, (corpus, _) in arms.items():
        if corpus is None:
            continue
        pt = pt_config(preset, name=run_name("fpt", corpus), model=BUILTIN_CHECKPOINT, corpus=[corpus],
                       max_steps=40 if quick else 2000, eval_every=20 if quick else 200,
                       optim=OptimConfig(lr=1e-4, warmup_ratio=0.1))
        runs.append(PlannedRun(f"pretrain/{corpus}", pt, {"arm": arm, "corpus": corpus, "seed": 0}, priority=1))
    fractions = (0.1,) if quick else (0.1, 1.0)
    for seed in seeds(preset, 2, 5):
        for fraction in fractions:
            for arm, (corpus, _) in arms.items():
                config = ft_config(preset, FINETUNE_BUDGET[preset],
                                   name=run_name("fpt-ft", corpus or "none", pct(fraction), f"s{seed}"),
                                   base=BUILTIN_CHECKPOINT, dataset="movies", label_fraction=fraction, seed=seed)
                runs.append(PlannedRun(f"ft/{corpus or 'none'}/frac{fraction:g}/s{seed}", config,
                                       {"arm": arm, "label_fraction": fraction, "seed": seed},
                                       base_from=BaseFrom(f"pretrain/{corpus}") if corpus else None))
    return runs


# --- the report -------------------------------------------------------------------------------------------------------


@report_for("further_pretraining")
def report(data: StudyData, out: Findings) -> None:
    m = data.metrics
    ft = attach(finetune_runs(data), last_values(m, "test", "accuracy"), "test_accuracy")
    acc = cells(ft, ["label_fraction", "arm"], "test_accuracy")
    acc["labels"] = [f"{f:.0%} labels" for f in acc["label_fraction"]]
    arms = list(FURTHER_ARMS)
    fig = bar_figure(acc, "arm", "Movies test accuracy by further pretraining (mean ± std over seeds)",
                     "movies test accuracy", group="labels", chance=chance_rate(data, "movies"), order=arms)
    out.figures["accuracy_by_arm"] = fig
    rows = []
    for f in sorted(acc["label_fraction"].unique()):
        none = cell(acc, label_fraction=f, arm="none")
        for arm in arms:
            c = cell(acc, label_fraction=f, arm=arm)
            if c is None:
                continue
            row = {"labels": f"{f:.0%}", "arm": arm, "test accuracy": fmt_stat(c["stat"]), "vs none": ""}
            if arm != "none" and none is not None and c["complete"] and none["complete"]:
                d = difference(c["stat"], none["stat"])
                row["vs none"] = d.text()
                out.numbers.setdefault("vs_none", {}).setdefault(f"{f:g}", {})[arm] = d.as_dict()
                out.findings.append(f"{arm} at {f:.0%} labels: {fmt_stat(c['stat'])} vs {fmt_stat(none['stat'])} "
                                    f"without further pretraining: {d.text()}.")
            if c["complete"]:
                out.numbers.setdefault("test_accuracy", {}).setdefault(f"{f:g}", {})[arm] = c["stat"].as_dict()
            rows.append(row)
    out.tables["test_accuracy"] = pd.DataFrame(rows)
    note = missing_note(acc, lambda r: f"{r['arm']} at {r['label_fraction']:.0%} labels")
    if note:
        out.caveats.append(note)
    complete = acc[acc["complete"]]
    if len(complete) >= 2:
        for f in sorted(complete["label_fraction"].unique()):
            part = complete[complete["label_fraction"] == f]
            best = part.loc[part["mean"].idxmax()]
            diffs = out.numbers.get("vs_none", {}).get(f"{f:g}", {})
            clear = [a for a, d in diffs.items() if d["verdict"] == "clear"]
            out.headline = (f"At {f:.0%} labels the best arm is {best['arm']} ({fmt_stat(best['stat'])}); "
                            + (f"clear differences from no further pretraining: {', '.join(clear)}." if clear else
                               "no arm differs clearly from no further pretraining."))
            out.findings.insert(0, out.headline)
            related = [diffs.get(a, {}).get("delta") for a in ("domain (amazon)", "task (movies)")]
            unrelated = diffs.get("unrelated (wiki)", {}).get("delta")
            if None not in related and unrelated is not None:
                order = (f"Related text ({pts(related[0])} domain, {pts(related[1])} task) vs unrelated "
                         f"({pts(unrelated)}), each against no further pretraining: ")
                if not clear:  # an order among differences that are all within noise means nothing
                    out.findings.append(order + "none of them is clear at this n, so their order is not interpreted.")
                else:
                    agree = max(related) > unrelated
                    out.findings.append(order + ("related text helps more, as expected." if agree else
                                                 "related text does not beat unrelated text here, unlike the "
                                                 "expectation."))
    # The further pretraining itself.
    pt = data.runs[data.runs["kind"] == "pretrain"]
    fig, references = go.Figure(), []
    for i, (_, r) in enumerate(pt.iterrows()):
        s = m[(m["run_id"] == r["run_id"]) & (m["split"] == "validation") & (m["name"] == "loss")].sort_values("x")
        if not s.empty:
            fig.add_trace(go.Scatter(x=s["x"], y=s["value"], mode="lines+markers", name=f"{r['arm']}",
                                     marker_color=arm_color(i + 1)))
            references.append(reference_rows(data, r["run_id"], r["arm"]))
            out.numbers.setdefault("mlm_val_loss", {})[r["arm"]] = {"first": float(s["value"].iloc[0]),
                                                                   "last": float(s["value"].iloc[-1])}
    if references:
        reference_lines(fig, pd.concat(references))
    out.figures["mlm_loss"] = (study_layout(fig, "Further pretraining: masked-LM validation loss on each corpus",
                                            "step", "validation MLM loss (each on its own corpus)")
                               if fig.data else empty_figure("Further pretraining: masked-LM validation loss"))
    losses = out.numbers.get("mlm_val_loss", {})
    if losses:
        out.findings.append("Masked-LM validation loss during further pretraining: " + "; ".join(
            f"{arm} {v['first']:.2f} → {v['last']:.2f}" for arm, v in losses.items()) + ".")
    seed_note(ft, out)

