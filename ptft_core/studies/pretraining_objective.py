"""Study 7, masked vs causal pretraining: equal-size BERT (masked LM) and GPT-2 (causal LM) pretrained on the
same corpus with the same token budget, their checkpoints fine-tuned on movies. Its plan and its report."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ptft_core.config import OBJECTIVE_TITLE, OptimConfig
from ptft_core.plots import TEMPLATE, arm_color, reference_lines
from ptft_core.studies.report import (
    UNIGRAM_MARGIN,
    Findings,
    accuracy_by_tokens,
    chance_rate,
    finetune_runs,
    inference_speed,
    missing_note,
    reference_rows,
    seed_note,
    unigram_check,
)
from ptft_core.studies.stats import attach, cell, cells, difference, fmt_stat, last_values
from ptft_core.studies.templates import (
    BaseFrom,
    Budget,
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

# objective -> the family that trains with it, at one preset shape. Masked LM trains a RoFormer (BERT with rotary
# positions): with BERT's learned absolute positions a tiny masked LM stays at the unigram plateau on this CPU,
# so the comparison would be of an objective that learned against one that did not (docs/studies.md, "levers").
OBJECTIVES = {"mlm": "roformer", "clm": "gpt2"}
CHECKPOINTS = {"quick": (250, 800, 2000), "full": (500, 2000, 8000)}  # pretraining steps fine-tuned from
# Fine-tuning until the validation accuracy plateaus: the first quick preset (159 steps on 10 % of movies) left
# most arms still rising and some at the majority class, which measured the budget, not the objective.
BUDGET = {"quick": Budget(epochs=4, min_steps=200, max_steps=350, patience=3),
          "full": Budget(epochs=3, min_steps=500, max_steps=3000, patience=4)}


@template(
    "pretraining_objective", "Masked or causal pretraining?",
    "With the same model size, corpus and token budget, does masked-LM or causal-LM pretraining give the better "
    "classifier after fine-tuning, and how does each grow with pretraining tokens?",
    "Pretrains a RoFormer (BERT with rotary positions; masked LM, WordPiece) and a GPT-2 (causal LM, byte-level "
    "BPE, learned positions) of the same preset shape from "
    "scratch on wiki + news, with the same blocks, batch and steps (so the same tokens), keeping checkpoints at "
    "several steps; fine-tunes each checkpoint, and each untrained model (step 0: its architecture and tokenizer, "
    "re-initialised), on movies with the same budget rule (until the validation accuracy plateaus) and seeds. "
    "RoFormer's classifier reads its [CLS] token, GPT-2's its last token. Report: movies accuracy against pretraining "
    "tokens per objective, the gain each objective's pretraining brings over its own step 0, and the difference "
    "between objectives at equal tokens (Welch's t-test over seeds). The two arms differ in everything that makes "
    "RoFormer and GPT-2 what they are (attention direction, objective, tokenizer, positions, GPT-2's pre-norm "
    "blocks), as in the guides' comparison; the pretraining losses of the two objectives measure different tasks "
    "and are not compared.",
    "For classification, bidirectional masked-LM pretraining usually transfers better than causal-LM "
    "pretraining of the same size and data (Devlin et al. 2019, GPT vs BERT-base on GLUE; Radford et al. 2018); "
    "at this tiny scale and token budget both gains may be a few points at most.",
)
def build(preset: str, tiny: bool) -> list[PlannedRun]:
    quick = preset == "quick"
    steps = CHECKPOINTS[preset]
    runs: list[PlannedRun] = []
    for objective, family in OBJECTIVES.items():
        pt = pt_config(preset, name=run_name("obj-pretrain", objective), model="tiny" if quick else "mini",
                       family=family, corpus=["wiki", "news"], vocab_size=8000, max_steps=steps[-1],
                       checkpoint_steps=list(steps[:-1]), optim=OptimConfig(lr=1e-3, warmup_ratio=0.05))
        runs.append(PlannedRun(f"pretrain/{objective}", pt, {"arm": f"pretrain {objective}", "seed": 0,
                                                             "objective": objective}, priority=1))
    for objective in OBJECTIVES:
        pt = runs[list(OBJECTIVES).index(objective)].config
        for seed in seeds(preset, 3, 5):
            for step in (0, steps[0], steps[-1]) if tiny else (0, *steps):
                checkpoint = None if step == steps[-1] else f"step-{step or steps[0]}"
                name = run_name("obj-ft", objective, f"step{step}", f"s{seed}")
                config = ft_config(preset, BUDGET[preset], name=name, base="pending", scratch=step == 0,
                                   dataset="movies", label_fraction=0.25 if quick else 1.0, seed=seed,
                                   optim=OptimConfig(lr=1e-3 if quick else 5e-4, warmup_ratio=0.1))
                runs.append(PlannedRun(f"ft/{objective}/step{step}/s{seed}", config, {
                    "arm": f"{objective} step {step}", "objective": objective, "pretrain_step": step,
                    "pretrain_tokens": step * pt.batch_size * pt.block_size, "seed": seed},
                    base_from=BaseFrom(f"pretrain/{objective}", checkpoint)))
    return runs


# --- the report -------------------------------------------------------------------------------------------------------


@report_for("pretraining_objective")
def report(data: StudyData, out: Findings) -> None:
    ft = attach(finetune_runs(data), last_values(data.metrics, "test", "accuracy"), "test_accuracy")
    acc = cells(ft, ["objective", "pretrain_step", "pretrain_tokens"], "test_accuracy").sort_values(
        ["objective", "pretrain_tokens"])
    chance = chance_rate(data, "movies")

    fig = make_subplots(rows=1, cols=2, subplot_titles=("movies test accuracy after fine-tuning",
                                                        "pretraining validation loss (per objective's own task)"))
    references, below = [], {}
    for i, objective in enumerate(OBJECTIVES):
        done = acc[(acc["objective"] == objective) & (acc["n"] > 0)]
        accuracy_by_tokens(fig, done, f"{OBJECTIVE_TITLE[objective]} ({OBJECTIVES[objective]})", arm_color(i),
                           row=1, col=1)
        pt = data.runs[data.runs["key"] == f"pretrain/{objective}"]
        run_id = pt["run_id"].iloc[0] if len(pt) else None
        val = data.tokens[(data.tokens["run_id"] == run_id) & (data.tokens["split"] == "validation")]
        if isinstance(run_id, str) and not val.empty:
            fig.add_trace(go.Scatter(x=val["x"], y=val["value"], mode="lines+markers", marker_color=arm_color(i),
                                     name=f"{OBJECTIVE_TITLE[objective]} validation loss", showlegend=False),
                          row=1, col=2)
        references.append(reference_rows(data, run_id, OBJECTIVE_TITLE[objective]))
        below[objective] = unigram_check(data, run_id, f"{OBJECTIVE_TITLE[objective].capitalize()} pretraining", out)
    reference_lines(fig, pd.concat(references), row=1, col=2)
    if chance:
        fig.add_hline(y=chance, line_dash="dot", line_color="gray", row=1, col=1,
                      annotation_text=f"majority class {chance:.1%}")
    fig.update_xaxes(title_text="pretraining tokens", row=1, col=1)
    fig.update_xaxes(title_text="pretraining tokens", row=1, col=2)
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    fig.update_yaxes(title_text="loss", row=1, col=2)
    fig.update_layout(template=TEMPLATE, height=440, title="Masked vs causal pretraining: downstream accuracy "
                      "against pretraining tokens", legend=dict(orientation="h", y=-0.2))
    out.figures["accuracy_vs_tokens"] = fig

    out.tables["accuracy_by_objective"] = pd.DataFrame([{
        "objective": OBJECTIVE_TITLE[r["objective"]], "pretraining step": int(r["pretrain_step"]),
        "pretraining tokens": int(r["pretrain_tokens"]), "movies test accuracy": fmt_stat(r["stat"]),
        "complete": bool(r["complete"])} for _, r in acc.iterrows()])
    note = missing_note(acc, lambda r: f"{r['objective']} at step {int(r['pretrain_step'])}")
    if note:
        out.caveats.append(note)

    full = acc[acc["complete"]]
    last_step = int(full["pretrain_step"].max()) if len(full) else 0
    for objective in OBJECTIVES:
        start = cell(full, objective=objective, pretrain_step=0)
        end = cell(full, objective=objective, pretrain_step=last_step)
        if start is None or end is None or last_step == 0:
            continue
        d = difference(end["stat"], start["stat"])
        out.numbers.setdefault("gain_over_scratch", {})[objective] = d.as_dict()
        out.findings.append(f"{OBJECTIVE_TITLE[objective].capitalize()} pretraining ({int(end['pretrain_tokens']):,} "
                            f"tokens) against its own untrained model: {d.text()} ({fmt_stat(end['stat'])} vs "
                            f"{fmt_stat(start['stat'])}).")
    for step in sorted(set(full["pretrain_step"]) - {0}):
        mlm, clm = (cell(full, objective=o, pretrain_step=step) for o in OBJECTIVES)
        if mlm is None or clm is None:
            continue
        d = difference(mlm["stat"], clm["stat"])
        out.numbers.setdefault("masked_minus_causal", {})[str(int(step))] = {
            "tokens": int(mlm["pretrain_tokens"]), **d.as_dict()}
        if step == last_step:
            out.headline = (f"At {int(mlm['pretrain_tokens']):,} pretraining tokens, masked LM minus causal LM on "
                            f"movies test accuracy: {d.text()} ({fmt_stat(mlm['stat'])} vs {fmt_stat(clm['stat'])}).")
            out.findings.insert(0, out.headline)
    stuck = [OBJECTIVE_TITLE[o] for o, b in below.items() if b is not None and b < UNIGRAM_MARGIN]
    if stuck and out.headline:
        out.headline += (f" Not a comparison of objectives: {' and '.join(stuck)} did not learn past word "
                         "frequencies (the unigram line).")
        out.findings[0] = out.headline
    # The two arms are different models (RoFormer and GPT-2 with their own tokenizers): what each costs to predict.
    inference_speed(data, ft, lambda r: f"{OBJECTIVE_TITLE[r['objective']]} ({OBJECTIVES[r['objective']]})", out,
                    "masked against causal")
    seed_note(ft, out)
