"""Study 8, does pretraining help for images, and which layers should train: resnet-small pretrained on a source
image task, then fine-tuned on a target with few to all labels, against the same network from scratch, with the
whole network, its top stage or only a new head training, and the source task scored all along (forgetting),
with and without replay. Two transfers: new classes of the same images (mnist 0-4 -> 5-9, the textbook case)
and the same classes in another domain (mnist -> scikit-learn's 8x8 digits). Its plan and its report."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ptft_core.config import ImageFinetuneConfig, ImagePretrainConfig, OptimConfig
from ptft_core.plots import REFERENCE_SPLIT, TEMPLATE, arm_color, seed_band
from ptft_core.studies.costs import image_rows
from ptft_core.studies.report import Findings, calibration, finetune_runs, majority_only, missing_note, seed_note
from ptft_core.studies.stats import (
    Difference,
    attach,
    cell,
    cells,
    difference,
    first_values,
    fmt_stat,
    last_values,
    mean_curves,
    mean_std,
    paired,
    pts,
    seed_matched,
)
from ptft_core.studies.templates import (
    BaseFrom,
    Budget,
    PlannedRun,
    pct,
    report_for,
    run_name,
    seeds,
    template,
)

if TYPE_CHECKING:
    from ptft_core.studies.driver import StudyData


@dataclass(frozen=True)
class Transfer:
    title: str
    source: dict[str, Any]  # the pretraining's dataset and classes
    target: dict[str, Any]  # the fine-tunes'


LOW, HIGH = [str(d) for d in range(5)], [str(d) for d in range(5, 10)]
TRANSFERS = {
    # The textbook case: the same kind of images, classes the network has never been asked to tell apart.
    "new classes": Transfer("mnist 0-4 → mnist 5-9", dict(dataset="mnist", classes=LOW),
                            dict(dataset="mnist", classes=HIGH)),
    # The same ten classes, another domain: 8x8 digits of 17 grey levels, read at the base's 28 pixels (blurred).
    "new domain": Transfer("mnist → 8×8 digits", dict(dataset="mnist"), dict(dataset="digits")),
}
# A linear probe trains a head alone on fixed features: at the whole network's rate (1e-3) it was still far from
# its plateau in a one-seed pilot (new classes, all labels: 70 % test at 1e-3, 82 % at 1e-2 after 1,500 steps), so
# it trains at ten times the rate, the usual practice for a head on frozen features; the "at the shared rate" arm
# (largest label budget) keeps the cost of that choice visible.
SHARED_OPTIM = OptimConfig(lr=1e-3, weight_decay=0.05, warmup_ratio=0.05)
PROBE_OPTIM = OptimConfig(lr=1e-2, weight_decay=0.05, warmup_ratio=0.05)
FULL, TOP, PROBE, SCRATCH = "full", "top stage", "linear probe", "scratch"
REPLAY, PROBE_SHARED = "full + replay 30%", "linear probe, shared rate"
ARMS: dict[str, dict[str, Any]] = {
    FULL: dict(strategy="full"),
    TOP: dict(strategy="freeze_bottom", freeze_layers=2),  # the stem and 2 of resnet-small's 3 stages frozen
    PROBE: dict(strategy="linear_probe", optim=PROBE_OPTIM),
    SCRATCH: dict(scratch=True),  # the base's architecture and input pipeline, random weights
    # full only
    "gradual unfreezing": dict(strategy="gradual_unfreeze"),
    "discriminative": dict(strategy="discriminative"),
}
QUICK_ARMS = (FULL, TOP, PROBE, SCRATCH)
# At the largest label budget only: the forgetting mitigations, and the probe at the shared rate.
LAST_ARMS: dict[str, dict[str, Any]] = {
    REPLAY: dict(replay_fraction=0.3),
    PROBE_SHARED: dict(strategy="linear_probe"),
    "full + replay 10%": dict(replay_fraction=0.1),  # full only
    "full + L2-SP": dict(l2sp=1.0),  # full only
}
QUICK_LAST_ARMS = (REPLAY, PROBE_SHARED)
# Label fractions of the target's training split (new classes: 2,000 images; new domain: 1,437): 2 % is 40 and 29
# images, 3-4 a class; every fine-tune takes batches of 16, so the smallest budget still fills one.
FRACTIONS = {"quick": (0.02, 0.1, 1.0), "full": (0.02, 0.05, 0.1, 0.3, 1.0)}
# The budget rule of the text studies (templates.Budget), in steps of 16 images: ten epochs, at least 200 steps
# (a 40-image arm trains 80 epochs: a scratch network needs them), at most 500 (quick); early stopping after 4
# evaluations of 10 without a new best; the best validation accuracy's weights are tested. Pilots (one seed):
# every pretrained arm had reached its plateau within it; scratch at 2 % labels was still rising slowly.
BUDGET = {"quick": Budget(epochs=10, min_steps=200, max_steps=500, patience=4),
          "full": Budget(epochs=20, min_steps=500, max_steps=3000, patience=5)}
PRETRAIN_EPOCHS = {"quick": 5, "full": 15}  # mnist, batch 64: 98 % test on 0-4, 95 % on 0-9 in the pilots
BATCH = 16


@template(
    "image_transfer", "Does pretraining help for images, and which layers should train?",
    "How much does a ResNet pretrained on one image task help on a small new one, against the same network from "
    "scratch, and how does that change with the number of labels; is it better to fine-tune everything, only the "
    "top stage, or only a new head; and how much of the source task does fine-tuning forget, with and without "
    "replay?",
    "Two transfers: new classes of the same images (resnet-small pretrained on mnist 0-4, fine-tuned on 5-9) and "
    "the same classes in another domain (pretrained on all of mnist, fine-tuned on scikit-learn's 8x8 digits read "
    "at 28 pixels). Each fine-tunes the pretraining of its seed with 2 %, 10 % and 100 % of the target's labels "
    "(full: 2, 5, 10, 30, 100 %): the whole network, its top stage (the stem and two bottom stages frozen), a "
    "linear probe (a new head alone, at ten times the rate), and the same network from scratch; at 100 % also "
    "full fine-tuning with 30 % of each batch replayed from the source, and the probe at the shared rate (full: "
    "gradual unfreezing, discriminative rates, 10 % replay, L2-SP). 4 seeds (full: 10), one budget rule for every "
    "arm, the best validation accuracy's weights tested. Report: test accuracy against labelled images "
    "(pretrained vs scratch: Welch's t-test; strategies against full fine-tuning: paired by seed, they share the "
    "pretraining), and the source task's validation accuracy before and after the fine-tune (its own head on the "
    "fine-tuned backbone: paired t-test of the drop; replay against none, paired by seed).",
    "Pretraining helps most when labels are few and its advantage shrinks as they grow (Yosinski et al. 2014; "
    "Kornblith et al. 2019). Lower layers learn general features and upper ones task-specific ones, so for a near "
    "task freezing the lower layers costs little (the Keras example: a CNN trained on digits 0-4, its "
    "convolutions frozen, reaches 99.2 % on 5-9 within a few epochs), while a farther task needs more of the "
    "network to train. Fine-tuning forgets the source task unless it is rehearsed (Li & Hoiem 2017; replay: "
    "Robins 1995).",
)
def build(preset: str, tiny: bool) -> list[PlannedRun]:
    quick = preset == "quick"
    transfers = ("new classes",) if tiny else tuple(TRANSFERS)
    fractions = (0.02, 1.0) if tiny else FRACTIONS[preset]
    arms = QUICK_ARMS if quick else tuple(ARMS)
    last_arms = QUICK_LAST_ARMS if quick else tuple(LAST_ARMS)
    runs = []
    for seed in seeds(preset, 4, 10):
        for transfer in transfers:
            t = TRANSFERS[transfer]
            source = ImagePretrainConfig(name=run_name("imt", transfer.replace(" ", "-"), "pretrain", f"s{seed}"),
                                         model="resnet-small", epochs=PRETRAIN_EPOCHS[preset], batch_size=64,
                                         eval_count=5, log_every=10, seed=seed, **t.source)
            pretrain_key = f"{transfer}/pretrain/s{seed}"
            runs.append(PlannedRun(pretrain_key, source, {"transfer": transfer, "arm": "pretraining", "seed": seed},
                                   priority=1))
            for fraction in fractions:
                planned = [(arm, ARMS[arm]) for arm in arms]
                if fraction == max(fractions):
                    planned += [(arm, LAST_ARMS[arm]) for arm in last_arms]
                for arm, fields in planned:
                    budget, examples = budget_fields(BUDGET[preset], t.target, fraction)
                    config = ImageFinetuneConfig(
                        name=run_name("imt", transfer.replace(" ", "-"), arm.replace(" ", "-").replace("%", "pct")
                                      .replace(",", ""), pct(fraction), f"s{seed}"),
                        base="pending", label_fraction=fraction, batch_size=BATCH, eval_count=10, log_every=10,
                        seed=seed, **{"optim": SHARED_OPTIM, **fields}, **budget, **t.target)
                    runs.append(PlannedRun(f"{transfer}/{arm}/frac{fraction:g}/s{seed}", config,
                                           {"transfer": transfer, "arm": arm, "label_fraction": fraction,
                                            "labelled_examples": examples, "seed": seed},
                                           base_from=BaseFrom(pretrain_key)))
    return runs


def budget_fields(budget: Budget, target: dict[str, Any], fraction: float) -> tuple[dict[str, int], int]:
    """(epochs / max_steps / early_stopping_patience of a fine-tune on `fraction` of `target`, its image count).
    The image loop drops an epoch's last, partial batch, so its epochs are counted in whole batches."""
    examples = max(1, round(fraction * image_rows(target["dataset"], target.get("classes") or [], "train")))
    steps = budget.steps(examples, BATCH)
    per_epoch = max(1, examples // BATCH)
    return {"epochs": math.ceil(steps / per_epoch), "max_steps": steps,
            "early_stopping_patience": budget.patience}, examples


# --- the report -------------------------------------------------------------------------------------------------------


def kept_steps(m: pd.DataFrame) -> pd.Series:
    """run_id -> the step whose weights a fine-tune kept: its first best validation accuracy after step 0 (the
    image loop's rule, training/images.py: Best)."""
    val = m[(m["split"] == "validation") & (m["name"] == "accuracy") & (m["x"] > 0)].sort_values(["run_id", "x"])
    if val.empty:
        return pd.Series(dtype=float)
    return val.loc[val.groupby("run_id", sort=False)["value"].idxmax()].set_index("run_id")["x"]


def source_at(m: pd.DataFrame, steps: pd.Series) -> pd.Series:
    """run_id -> the source task's validation accuracy (its own head on the backbone) at the given step."""
    source = m[(m["split"] == "forgetting") & (m["name"] == "prev_task_accuracy")]
    at = source[source["x"] == source["run_id"].map(steps)]
    return at.groupby("run_id")["value"].last()


def arm_order(present: set[str]) -> list[str]:
    return [a for a in (*ARMS, *LAST_ARMS) if a in present]


@report_for("image_transfer")
def report(data: StudyData, out: Findings) -> None:
    m = data.metrics
    runs = finetune_runs(data)
    runs = attach(runs, last_values(m, "test", "accuracy"), "test_accuracy")
    runs = attach(runs, first_values(m, "forgetting", "prev_task_accuracy"), "source_before")
    runs = attach(runs, source_at(m, kept_steps(m)), "source_after")
    runs["source_drop"] = runs["source_before"] - runs["source_after"]
    transfers = [t for t in TRANSFERS if t in set(runs.get("transfer", ()))]
    pretraining(data, out)
    for transfer in transfers:
        accuracy_section(data, runs[runs["transfer"] == transfer], transfer, out)
    out.figures["data_efficiency"] = efficiency_figure(runs, m, transfers)
    for transfer in transfers:
        forgetting_section(runs[runs["transfer"] == transfer], transfer, out)
    out.figures["source_accuracy"] = forgetting_figure(runs, m, transfers)
    for transfer in transfers:  # pretrained (full fine-tuning) against scratch, then the probe, all labels
        part = runs[(runs["transfer"] == transfer) & (runs["label_fraction"] == runs["label_fraction"].max())
                    & runs["arm"].isin([FULL, SCRATCH, PROBE])]
        part = part.sort_values("arm", key=lambda arms: arms.map({FULL: 0, SCRATCH: 1, PROBE: 2}))
        calibration(data, part, lambda r: r["arm"], out, f"{TRANSFERS[transfer].title}, all labels",
                    key=f"calibration ({transfer})")
    headline(out, transfers)
    seed_note(runs, out)


def pretraining(data: StudyData, out: Findings) -> None:
    """The source models: their test accuracy on the source task, per transfer; a caveat for one that learned
    only its majority class (what transfers from it is then no pretraining at all)."""
    done = data.runs[(data.runs["kind"] == "image_pretrain") & (data.runs["status"] == "completed")]
    accuracy, f1 = last_values(data.metrics, "test", "accuracy"), last_values(data.metrics, "test", "f1")
    rate = last_values(data.metrics, REFERENCE_SPLIT, "accuracy")
    for transfer, group in done.groupby("transfer"):
        classes = len(TRANSFERS[transfer].source.get("classes") or ()) or 10
        stuck = [r["key"] for _, r in group.iterrows() if majority_only(
            accuracy.get(r["run_id"], math.nan), f1.get(r["run_id"], math.nan), rate.get(r["run_id"]), classes)]
        if stuck:
            out.caveats.append(f"{TRANSFERS[transfer].title}: source model(s) at the majority-class rate "
                               f"({', '.join(stuck)}): their fine-tunes start from no pretraining worth the name.")
        stat = mean_std(accuracy.get(rid, math.nan) for rid in group["run_id"])
        out.numbers.setdefault("source_test_accuracy", {})[transfer] = stat.as_dict()
        out.findings.append(f"{TRANSFERS[transfer].title}: the pretrained resnet-small scores {fmt_stat(stat)} on "
                            f"its source task's test split ({TRANSFERS[transfer].source['dataset']}"
                            + (f" {', '.join(TRANSFERS[transfer].source['classes'])}"
                               if TRANSFERS[transfer].source.get("classes") else "") + ").")


def accuracy_section(data: StudyData, runs: pd.DataFrame, transfer: str, out: Findings) -> None:
    """Per label budget: every arm's test accuracy, pretrained against scratch (Welch: they share no weights),
    the strategies against full fine-tuning (paired by seed: they share the pretraining)."""
    title = TRANSFERS[transfer].title
    acc = cells(runs, ["label_fraction", "arm"], "test_accuracy")
    examples = runs.groupby("label_fraction")["labelled_examples"].first()
    numbers = out.numbers.setdefault("test_accuracy", {}).setdefault(transfer, {})
    rows = []
    for fraction in sorted(runs["label_fraction"].unique()):
        here = runs[runs["label_fraction"] == fraction]
        row: dict[str, Any] = {"labels": f"{pct(fraction)} ({int(examples[fraction]):,} images)"}
        stats, complete = {}, {}
        for arm in arm_order(set(here["arm"])):
            c = cell(acc, label_fraction=fraction, arm=arm)
            stats[arm], complete[arm] = c["stat"], bool(c["complete"])
            row[arm] = fmt_stat(c["stat"])
        entry = numbers.setdefault(f"{fraction:g}", {"examples": int(examples[fraction])})
        entry.update({arm: s.as_dict() for arm, s in stats.items()})
        if complete.get(FULL) and complete.get(SCRATCH):
            gain = difference(stats[FULL], stats[SCRATCH])
            entry["pretrained_vs_scratch"] = gain.as_dict()
            row["pretrained − scratch"] = gain.text()
            out.findings.append(f"{title}, {row['labels']}: fine-tuning the pretrained network reaches "
                                f"{fmt_stat(stats[FULL])} test accuracy, the same network from scratch "
                                f"{fmt_stat(stats[SCRATCH])}: {gain.text()}.")
        for arm in (TOP, PROBE, "gradual unfreezing", "discriminative", *LAST_ARMS):
            if complete.get(arm) and complete.get(FULL):
                diff = seed_matched(here, "test_accuracy", arm, FULL)
                entry.setdefault("vs_full", {})[arm] = diff.as_dict()
                row[f"{arm} − full"] = diff.text()
        if entry.get("vs_full"):
            out.findings.append(f"{title}, {row['labels']}, against full fine-tuning (seed by seed): " + "; ".join(
                f"{arm} {fmt_stat(stats[arm])}, {Difference.from_dict(d).text()}"
                for arm, d in entry["vs_full"].items()) + ".")
        rows.append(row)
    out.tables[f"test_accuracy ({transfer})"] = pd.DataFrame(rows)
    note = missing_note(acc, lambda r: f"{transfer}: {r['arm']} at {pct(r['label_fraction'])} labels")
    if note:
        out.caveats.append(note)


def forgetting_section(runs: pd.DataFrame, transfer: str, out: Findings) -> None:
    """At the largest label budget: the source task's accuracy before the fine-tune and with the weights it kept;
    the drop within each run (paired t-test) and each arm's drop against full fine-tuning's (paired by seed)."""
    title = TRANSFERS[transfer].title
    last = runs[(runs["label_fraction"] == runs["label_fraction"].max()) & (runs["arm"] != SCRATCH)]
    drops = cells(last, ["arm"], "source_drop")
    numbers = out.numbers.setdefault("source_drop", {}).setdefault(transfer, {})
    rows = []
    for arm in arm_order(set(last["arm"])):
        d, b, a = (cell(cells(last, ["arm"], column), arm=arm) for column in
                   ("source_drop", "source_before", "source_after"))
        row = {"arm": arm, "source accuracy before": fmt_stat(b["stat"]), "after (kept weights)": fmt_stat(a["stat"]),
               "drop": fmt_stat(d["stat"])}
        if d["complete"]:
            drop = paired(d["stat"])
            numbers[arm] = {"before": b["stat"].as_dict(), "after": a["stat"].as_dict(), "drop": drop.as_dict()}
            row["drop test"] = drop.text()
            if arm != FULL and cell(drops, arm=FULL) is not None and cell(drops, arm=FULL)["complete"]:
                versus = seed_matched(last, "source_drop", arm, FULL)
                numbers[arm]["vs_full"] = versus.as_dict()
                row["drop − full's"] = versus.text()
        rows.append(row)
    out.tables[f"source_task ({transfer})"] = pd.DataFrame(rows)
    full, replay = numbers.get(FULL), numbers.get(REPLAY)
    if full:
        out.findings.append(
            f"{title}, all labels: full fine-tuning takes the source task from {rows[0]['source accuracy before']} "
            f"to {rows[0]['after (kept weights)']} validation accuracy (its own head on the fine-tuned backbone): "
            f"a drop of {Difference.from_dict(full['drop']).text()}.")
    if full and replay and "vs_full" in replay:
        out.findings.append(f"{title}: replaying the source in 30 % of each batch leaves a drop of "
                            f"{pts(replay['drop']['delta'])} against {pts(full['drop']['delta'])}: "
                            f"{Difference.from_dict(replay['vs_full']).text()}, seed by seed.")
    note = missing_note(drops, lambda r: f"{transfer}: {r['arm']} (source task)")
    if note:
        out.caveats.append(note)


def headline(out: Findings, transfers: list[str]) -> None:
    """One sentence per question, from the numbers above (nothing when a cell is missing)."""
    parts = []
    for transfer in transfers:
        per = out.numbers.get("test_accuracy", {}).get(transfer, {})
        gains = {float(f): Difference.from_dict(e["pretrained_vs_scratch"]) for f, e in per.items()
                 if "pretrained_vs_scratch" in e}
        if len(gains) >= 2:
            lo, hi = min(gains), max(gains)
            parts.append(f"{TRANSFERS[transfer].title}: pretraining {pts(gains[lo].delta)} at {pct(lo)} labels "
                         f"({gains[lo].verdict}), {pts(gains[hi].delta)} at {pct(hi)} ({gains[hi].verdict})")
    if parts:
        out.headline = "; ".join(parts) + "."
        out.findings.insert(0, out.headline)
    best = []
    for transfer in transfers:
        per = out.numbers.get("test_accuracy", {}).get(transfer, {})
        for f, e in per.items():
            means = {arm: e[arm]["mean"] for arm in (FULL, TOP, PROBE) if arm in e and e[arm]["mean"] is not None}
            if len(means) == 3:
                winner = max(means, key=means.get)
                best.append(f"{TRANSFERS[transfer].title} at {pct(float(f))}: {winner}")
    if best:
        out.numbers["best_strategy"] = best
        out.findings.insert(1 if parts else 0, "Which layers should train (highest mean test accuracy of full, "
                                               "top stage and linear probe): " + "; ".join(best) + ".")


def efficiency_figure(runs: pd.DataFrame, m: pd.DataFrame, transfers: list[str]) -> go.Figure:
    """Test accuracy against labelled images, an arm per line (mean ± std over seeds), a panel per transfer."""
    fig = make_subplots(rows=1, cols=max(1, len(transfers)),
                        subplot_titles=[TRANSFERS[t].title for t in transfers] or ["no runs"])
    for col, transfer in enumerate(transfers, start=1):
        part = runs[runs["transfer"] == transfer]
        acc = cells(part, ["labelled_examples", "arm"], "test_accuracy")
        for i, arm in enumerate(arm_order(set(part["arm"]))):
            curve = acc[(acc["arm"] == arm) & (acc["n"] > 0)].rename(columns={"labelled_examples": "x"})
            seed_band(fig, curve, arm, arm_color(i), showlegend=col == 1, row=1, col=col)
        rate = mean_std(last_values(m, REFERENCE_SPLIT, "accuracy").reindex(part["run_id"]).dropna()).mean
        if math.isfinite(rate):
            fig.add_hline(y=rate, line_dash="dot", line_color="gray", annotation_text=f"majority class {rate:.0%}",
                          row=1, col=col)
    fig.update_xaxes(type="log", title_text="labelled training images (log scale)")
    fig.update_yaxes(tickformat=".0%", title_text="target test accuracy", col=1)
    fig.update_layout(template=TEMPLATE, height=440, title="Test accuracy vs labelled images (mean ± std over seeds)",
                      legend=dict(orientation="h", y=-0.25))
    return fig


def forgetting_figure(runs: pd.DataFrame, m: pd.DataFrame, transfers: list[str]) -> go.Figure:
    """The source task's validation accuracy along the fine-tune, at the largest label budget, per arm."""
    fig = make_subplots(rows=1, cols=max(1, len(transfers)),
                        subplot_titles=[TRANSFERS[t].title for t in transfers] or ["no runs"])
    for col, transfer in enumerate(transfers, start=1):
        part = runs[(runs["transfer"] == transfer) & (runs["label_fraction"] == runs["label_fraction"].max())]
        curves = mean_curves(m, part, "forgetting", "prev_task_accuracy", ["arm"])
        for i, arm in enumerate(arm_order(set(part["arm"]))):
            seed_band(fig, curves[curves["arm"] == arm], arm, arm_color(i), showlegend=col == 1, row=1, col=col)
    fig.update_xaxes(title_text="fine-tuning step")
    fig.update_yaxes(tickformat=".0%", title_text="source task validation accuracy", col=1)
    fig.update_layout(template=TEMPLATE, height=440, title="What the fine-tune forgets: the source task scored with "
                      "its own head along the fine-tune, all labels (mean ± std over seeds)",
                      legend=dict(orientation="h", y=-0.25))
    return fig
