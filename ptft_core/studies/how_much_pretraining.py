"""Study 2, how much pretraining is enough: fine-tunes of a tiny BERT's pretraining checkpoints, against
pretraining tokens and compute. Its plan and its report."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ptft_core.config import OptimConfig
from ptft_core.plots import TEMPLATE, arm_color, empty_figure, reference_lines, study_layout
from ptft_core.studies.report import (
    Findings,
    accuracy_by_tokens,
    chance_rate,
    finetune_runs,
    missing_note,
    reference_rows,
    seed_note,
    unigram_check,
)
from ptft_core.studies.stats import attach, cells, difference, fmt_stat, last_values
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
    "how_much_pretraining", "How much pretraining is enough?",
    "How does downstream accuracy grow with the number of pretraining tokens, and what does pretraining cost "
    "next to fine-tuning?",
    "Pretrains a tiny RoFormer (BERT with rotary positions) from scratch (its own WordPiece vocabulary) with "
    "masked-LM on wiki + news, keeping "
    "checkpoints at several steps; fine-tunes each checkpoint, and the untrained model (step 0: the same "
    "architecture and tokenizer, re-initialised), on movies. Report: movies accuracy against pretraining "
    "tokens beside the pretraining loss curve, and the seconds spent pretraining vs fine-tuning. The classifiers "
    "read the mean of the last hidden states (masked LM never trains [CLS]).",
    "Downstream accuracy should rise with pretraining and flatten (diminishing returns) as the masked-LM loss "
    "flattens; a tiny model on under a million words of text gains a few points at most (Turc et al. 2019; "
    "Kaplan et al. 2020). Pretraining costs far more compute than one fine-tune.",
)
def build(preset: str, tiny: bool) -> list[PlannedRun]:
    quick = preset == "quick"
    # Quick: the recipe of bench.pretrain_levers_bench that got past word frequencies in minutes on 2 cores
    # (RoFormer: rotary positions; 4k vocabulary, blocks of 64, batches of 32, lr 2e-3): 1,500 steps, 3.1 M tokens.
    steps = (100, 300, 750, 1500) if quick else (250, 500, 1000, 2000, 5000)
    pt = pt_config(preset, name="hmp-pretrain", model="tiny" if quick else "mini", family="roformer",
                   corpus=["wiki", "news"], vocab_size=4000 if quick else 8000, max_steps=steps[-1],
                   checkpoint_steps=list(steps[:-1]), block_size=64 if quick else 128, batch_size=32,
                   eval_every=75 if quick else 250, optim=OptimConfig(lr=2e-3 if quick else 1e-3, warmup_ratio=0.05))
    runs = [PlannedRun("pretrain", pt, {"arm": "pretrain", "seed": 0}, priority=1)]
    for seed in seeds(preset, 3, 3):
        for step in (0, steps[0], steps[-1]) if tiny else (0, *steps):
            # Step 0: the first checkpoint's architecture and tokenizer, re-initialised (nothing pretrained).
            checkpoint = None if step == steps[-1] else f"step-{step or steps[0]}"
            # Mean pooling: masked LM trains every position's output but never [CLS]'s (no next-sentence task),
            # so the mean of the last hidden states is the feature this pretraining made; the untrained arm reads
            # the same (bench.pretrain_transfer_bench: at one epoch, [CLS] -7.9 points against the untrained
            # model, the mean -3.4).
            config = ft_config(preset, name=run_name("hmp-ft", f"step{step}", f"s{seed}"), base="pending",
                               scratch=step == 0, dataset="movies", label_fraction=1.0, epochs=1 if quick else 3,
                               pooling="mean",
                               seed=seed, batch_size=32, eval_every=100 if quick else 200,
                               optim=OptimConfig(lr=5e-4, warmup_ratio=0.1))
            runs.append(PlannedRun(f"ft/step{step}/s{seed}", config, {
                "arm": f"step {step}", "pretrain_step": step, "pretrain_tokens": step * pt.batch_size * pt.block_size,
                "seed": seed}, base_from=BaseFrom("pretrain", checkpoint)))
    return runs


# --- the report -------------------------------------------------------------------------------------------------------


@report_for("how_much_pretraining")
def report(data: StudyData, out: Findings) -> None:
    runs = data.runs
    m = data.metrics
    pt = runs[runs["key"] == "pretrain"].iloc[0]
    ft = attach(finetune_runs(data), last_values(m, "test", "accuracy"), "test_accuracy")
    acc = cells(ft, ["pretrain_step", "pretrain_tokens"], "test_accuracy").sort_values("pretrain_tokens")
    chance = chance_rate(data, "movies")

    fig = make_subplots(rows=1, cols=2, subplot_titles=("movies test accuracy after fine-tuning",
                                                        "pretraining masked-LM loss"))
    done = acc[acc["n"] > 0]
    accuracy_by_tokens(fig, done, "fine-tuned", arm_color(0), row=1, col=1)
    if chance:
        fig.add_hline(y=chance, line_dash="dot", line_color="gray", row=1, col=1,
                      annotation_text=f"majority class {chance:.1%}")
    tok = data.tokens[data.tokens["run_id"] == pt["run_id"]] if isinstance(pt["run_id"], str) else data.tokens.iloc[0:0]
    for i, split in enumerate(("train", "validation")):
        s = tok[tok["split"] == split]
        if not s.empty:
            fig.add_trace(go.Scatter(x=s["x"], y=s["value"], mode="lines" if split == "train" else "lines+markers",
                                     name=f"{split} MLM loss", marker_color=arm_color(i + 1)), row=1, col=2)
    reference_lines(fig, reference_rows(data, pt["run_id"]), row=1, col=2)
    for step in sorted(set(ft["pretrain_tokens"])):
        fig.add_vline(x=step, line_dash="dot", line_color="lightgray", row=1, col=2)
    fig.update_xaxes(title_text="pretraining tokens", row=1, col=1)
    fig.update_xaxes(title_text="pretraining tokens (dotted: the fine-tuned checkpoints)", row=1, col=2)
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    fig.update_yaxes(title_text="loss", row=1, col=2)
    fig.update_layout(template=TEMPLATE, height=440, title="Downstream accuracy vs pretraining tokens, beside the "
                      "pretraining loss", legend=dict(orientation="h", y=-0.2))
    out.figures["accuracy_vs_tokens"] = fig

    out.tables["accuracy_by_checkpoint"] = pd.DataFrame([{
        "pretraining step": int(r["pretrain_step"]), "pretraining tokens": int(r["pretrain_tokens"]),
        "movies test accuracy": fmt_stat(r["stat"]), "complete": bool(r["complete"])} for _, r in acc.iterrows()])
    note = missing_note(acc, lambda r: f"the step-{int(r['pretrain_step'])} checkpoint")
    if note:
        out.caveats.append(note)
    full = acc[acc["complete"]].reset_index(drop=True)
    for _, r in full.iterrows():
        out.numbers.setdefault("test_accuracy", {})[str(int(r["pretrain_step"]))] = {
            "tokens": int(r["pretrain_tokens"]), **r["stat"].as_dict()}
    if len(full) >= 2:
        first, last = full.iloc[0], full.iloc[-1]
        best = full.loc[full["mean"].idxmax()]
        d = difference(last["stat"], first["stat"])
        out.headline = (f"{_tokens(last['pretrain_tokens'])} tokens of pretraining change movies accuracy by "
                        f"{d.text()} against {_tokens(first['pretrain_tokens'])} ({fmt_stat(last['stat'])} vs "
                        f"{fmt_stat(first['stat'])}); the best checkpoint is step {int(best['pretrain_step'])} "
                        f"({fmt_stat(best['stat'])}).")
        out.findings.append(out.headline)
        if not (d.delta > 0 and d.verdict == "clear"):
            out.caveats.append(
                f"The most pretrained checkpoint is not clearly better than the untrained model ({d.text()}): "
                "whatever the pretraining loss says it learned, this task does not use it at this budget. A "
                "frozen-feature probe tells whether the pretrained features carry the task at all "
                "(bench.pretrain_transfer_bench --round features).")
        if len(full) >= 3:
            prev = full.iloc[-2]
            d_last = difference(last["stat"], prev["stat"])
            d_first = difference(full.iloc[1]["stat"], first["stat"])
            ratio = last["pretrain_tokens"] / max(prev["pretrain_tokens"], 1)
            out.findings.append(
                f"The first checkpoint ({_tokens(full.iloc[1]['pretrain_tokens'])} tokens) moved accuracy by "
                f"{d_first.text()}; the last {ratio:.1f}x more tokens ({_tokens(prev['pretrain_tokens'])} → "
                f"{_tokens(last['pretrain_tokens'])}) by {d_last.text()}"
                + (": diminishing returns." if abs(d_last.delta) < abs(d_first.delta) else "."))
    # Pretraining loss.
    val = tok[tok["split"] == "validation"].sort_values("x")
    if len(val) >= 2:
        out.findings.append(f"The pretraining validation MLM loss went from {val['value'].iloc[0]:.2f} at "
                            f"{_tokens(val['x'].iloc[0])} tokens to {val['value'].iloc[-1]:.2f} at "
                            f"{_tokens(val['x'].iloc[-1])}.")
        out.numbers["pretrain_val_loss"] = {"first": float(val["value"].iloc[0]), "last": float(val["value"].iloc[-1])}
    below = unigram_check(data, pt["run_id"], "The pretraining", out)
    if below is not None:
        out.numbers["pretrain_nats_below_unigram"] = below

    # Compute: seconds to reach each checkpoint vs seconds of one fine-tune.
    steps_wall = (_step_wall(data, pt["run_id"]) if isinstance(pt["run_id"], str)
                  else pd.DataFrame(columns=["step", "seconds"]))
    ft_seconds = cells(ft.assign(sec=[s if st == "completed" else math.nan for s, st in
                                      zip(ft["seconds"], ft["status"], strict=True)]),
                       ["pretrain_step", "pretrain_tokens"], "sec").sort_values("pretrain_tokens")
    # FLOPs (each run's estimate, split "device"): the cost in work, whatever else shared the machine.
    pt_flops = m[(m["run_id"] == pt["run_id"]) & (m["split"] == "device") & (m["name"] == "train_flops")]
    ft_flops = cells(attach(ft, last_values(m, "device", "train_flops"), "flops"), ["pretrain_step"], "flops")
    rows = []
    for _, r in ft_seconds.iterrows():
        step = int(r["pretrain_step"])
        pt_s = 0.0 if step == 0 else _seconds_at(steps_wall, step)
        pt_f = 0.0 if step == 0 or pt_flops.empty else float(np.interp(step, pt_flops["x"], pt_flops["value"]))
        ft_f = ft_flops.loc[ft_flops["pretrain_step"] == step, "mean"]
        rows.append({"checkpoint": f"step {step}", "pretraining s": pt_s, "fine-tuning s": r["mean"],
                     "pretraining tokens": int(r["pretrain_tokens"]), "pretraining FLOPs": pt_f,
                     "fine-tuning FLOPs": float(ft_f.iloc[0]) if len(ft_f) else math.nan})
    comp = pd.DataFrame(rows)
    out.tables["compute"] = comp
    if len(comp) and comp["pretraining s"].notna().any():
        fig = go.Figure()
        fig.add_trace(go.Bar(x=comp["checkpoint"], y=comp["pretraining s"], name="pretraining to this checkpoint",
                             marker_color=arm_color(1)))
        fig.add_trace(go.Bar(x=comp["checkpoint"], y=comp["fine-tuning s"], name="one fine-tune (mean over seeds)",
                             marker_color=arm_color(0)))
        fig.update_layout(barmode="group")
        out.figures["compute"] = study_layout(fig, "Compute: wall-clock seconds of pretraining vs fine-tuning "
                                                   "(setup and evaluations included)", "checkpoint", "seconds")
        last = comp.dropna().iloc[-1] if len(comp.dropna()) else None
        if last is not None and last["fine-tuning s"] > 0:
            out.findings.append(f"Pretraining to {last['checkpoint']} took {last['pretraining s']:.0f} s of wall "
                                f"clock, {last['pretraining s'] / last['fine-tuning s']:.1f}x one fine-tune "
                                f"({last['fine-tuning s']:.0f} s).")
            out.numbers["compute_seconds"] = {"pretraining": float(last["pretraining s"]),
                                              "finetuning": float(last["fine-tuning s"])}
        flops = comp.dropna(subset=["pretraining FLOPs", "fine-tuning FLOPs"])
        flops = flops[(flops["pretraining FLOPs"] > 0) & (flops["fine-tuning FLOPs"] > 0)]
        if len(flops):
            f = flops.iloc[-1]
            out.findings.append(f"In estimated training FLOPs, pretraining to {f['checkpoint']} cost "
                                f"{f['pretraining FLOPs']:.3g}, {f['pretraining FLOPs'] / f['fine-tuning FLOPs']:.1f}x "
                                f"one fine-tune ({f['fine-tuning FLOPs']:.3g}).")
            out.numbers["compute_flops"] = {"pretraining": float(f["pretraining FLOPs"]),
                                            "finetuning": float(f["fine-tuning FLOPs"])}
    else:
        out.figures["compute"] = empty_figure("Compute: pretraining vs fine-tuning")
    seed_note(ft, out)


def _tokens(n: float) -> str:
    n = float(n)
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def _step_wall(data: StudyData, run_id: str) -> pd.DataFrame:
    """(step, seconds since start) of a run's train-loss rows: the step and wall-time views of the same rows."""
    by_step = data.metrics[(data.metrics["run_id"] == run_id) & (data.metrics["split"] == "train")
                           & (data.metrics["name"] == "loss")].sort_values("x")
    by_wall = data.wall[(data.wall["run_id"] == run_id)].sort_values("x")
    if len(by_step) != len(by_wall) or by_step.empty:
        return pd.DataFrame(columns=["step", "seconds"])
    return pd.DataFrame({"step": by_step["x"].to_numpy(), "seconds": by_wall["x"].to_numpy()})


def _seconds_at(steps_wall: pd.DataFrame, step: int) -> float:
    if steps_wall.empty:
        return math.nan
    return float(np.interp(step, steps_wall["step"].astype(float), steps_wall["seconds"].astype(float)))

