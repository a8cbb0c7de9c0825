"""Compare: pick runs, overlay any metric, and the three named views (Convergence, Overfitting, Forgetting),
with a config diff. Every choice lives in the URL, so the address bar is a link to this exact view."""

import numpy as np
import pandas as pd
import streamlit as st

from ptft_core import plots, ui
from ptft_core.config import KINDS, RELIABILITY_SPLIT
from ptft_core.lab import X_AXES

ui.require_frame()

lab = ui.lab()
BIND = {"bind": "query-params"}
ANY = "(any)"
NO_GROUP = "(none)"
NOT_GROUPABLE = {"name", "seed", "tags"}

st.title("Compare")
runs_all = lab.list_runs()
if runs_all.empty:
    st.info("No runs yet: launch some from Pretrain or Fine-tune, then compare them here.")
    st.stop()

# --- which runs ---------------------------------------------------------------------------------------------------
filters = st.columns(3)
tags = sorted({t for ts in runs_all["tags"] for t in ts})
tag = filters[0].selectbox("Tag", [ANY, *tags], key="tag", **BIND)
studies = sorted(s for s in runs_all["study"].dropna().unique())
study = filters[1].selectbox("Study (seeds launched together)", [ANY, *studies], key="study", **BIND)
kind = filters[2].selectbox("Kind", [ANY, *(k for k in KINDS if k != "evaluate")], key="kind", **BIND)  # curves
shown = runs_all
if tag != ANY:
    shown = shown[[tag in ts for ts in shown["tags"]]]
if study != ANY:
    shown = shown[shown["study"] == study]
if kind != ANY:
    shown = shown[shown["kind"] == kind]
shown = shown.reset_index(drop=True)

linked = ui.param_list("runs")
event = st.dataframe(
    ui.runs_table(shown), hide_index=True, column_config=ui.RUNS_COLUMN_CONFIG, height=min(38 + 35 * len(shown), 300),
    on_select="rerun", selection_mode="multi-row", key=f"compare-runs-{tag}-{study}-{kind}",
    selection_default={"selection": {"rows": [i for i, rid in enumerate(shown["id"]) if rid in linked]}},
)
rows = sorted(event.selection.rows)
if rows:
    selected = shown.iloc[rows]
elif tag != ANY or study != ANY:
    selected = shown  # a tag or a study picks its runs
else:
    selected = shown.iloc[:0]
ui.set_params(runs=selected["id"].tolist() if rows else None)
if selected.empty:
    st.info("Select runs in the table (or pick a tag or a study) to compare them.")
    st.stop()
ids = selected["id"].tolist()

# --- how to draw --------------------------------------------------------------------------------------------------
controls = st.columns([2, 2, 1, 2])
x = controls[0].selectbox("x-axis", X_AXES, format_func=plots.X_TITLES.get, key="x", **BIND)
smoothing = controls[1].slider("Smoothing (EMA)", 0.0, 0.99, 0.0, 0.01, key="smooth", **BIND)
log_y = controls[2].toggle("Log scale", key="log", **BIND)
diff = lab.config_diff(ids)
group_keys = [k for k in diff.index if k not in NOT_GROUPABLE]
group = controls[3].selectbox("Group by (mean ± std)", [NO_GROUP, *group_keys], key="group", **BIND,
                              help="Runs sharing this config value become one line with a ±1 std band (seeds)")
group = None if group == NO_GROUP else group
names = lab.metric_names(ids)
# Reference floors are lines on the loss charts and reliability bins a diagram of their own: not picked as metrics.
names = names[~names["split"].isin([plots.REFERENCE_SPLIT, RELIABILITY_SPLIT])]
metrics = [plots.metric_key(s, n) for s, n in zip(names["split"], names["name"], strict=True)]
references = ui.load_references(lab, selected)


def pairs(keys: list[str]) -> list[tuple[str, str]]:
    return [tuple(k.split("/", 1)) for k in keys]


def figure_name(view: str) -> str:
    return f"ptft-{view}-{len(ids)}-runs"


def pick(label: str, options: list[str], preferred: list[str], key: str) -> str | None:
    """A metric selectbox whose default is the first preferred metric these runs logged."""
    if not options:
        return None
    default = next((p for p in preferred if p in options), options[0])
    return st.selectbox(label, options, index=options.index(default), key=key, **BIND)


explore, convergence, overfitting, forgetting, calibration = st.tabs(
    ["Explore", "Convergence", "Overfitting", "Forgetting", "Calibration"], key="view", **BIND)

with explore:
    chosen = st.multiselect("Metrics", metrics, default=[m for m in ("validation/accuracy", "validation/loss")
                                                         if m in metrics][:1] or metrics[:1], key="metrics", **BIND)
    facet = "metric" if st.checkbox("One panel per metric", value=len(chosen) > 1, key="facet") else None
    data = ui.load_series(lab, selected, pairs(chosen), x, group)
    ui.chart(plots.metric_figure(data, x=x, smoothing=smoothing, log_y=log_y, group="group" if group else None,
                                 group_title=group, facet=facet, references=references),
             figure_name("explore"), data, key="explore")

with convergence:
    validation = [m for m in metrics if m.startswith("validation/")]
    left, right = st.columns([2, 1])
    with left:
        metric = pick("Validation metric", validation, ["validation/accuracy", "validation/f1", "validation/loss"],
                      "conv")
    if metric is None:
        st.info("These runs have not logged a validation metric yet.")
    else:
        split, name = metric.split("/", 1)
        higher = plots.higher_is_better(name)
        by_step = ui.load_series(lab, selected, [(split, name)], "step", group)
        bests = plots.best_points(by_step, higher)["value"]
        target = right.number_input(f"Target ({'reach at least' if higher else 'get down to'})",
                                    value=float(np.round(bests.mean(), 3)) if len(bests) else 0.0, step=0.01,
                                    format="%.3f", key="target", **BIND)
        data = by_step if x == "step" else ui.load_series(lab, selected, [(split, name)], x, group)
        ui.chart(plots.metric_figure(data, x=x, smoothing=smoothing, log_y=log_y, group="group" if group else None,
                                     group_title=group, target=target, title=f"{metric} vs {plots.X_TITLES[x]}",
                                     references=references),
                 figure_name("convergence"), data, key="convergence")
        reached = plots.first_reach(by_step, target, higher).set_index("run_id").reindex(ids)
        table = pd.DataFrame({"run": list(ui.run_labels(selected).values()), f"best {name}": reached["best"].values,
                              "steps to target": reached["reached_at"].values})
        for axis, column in (("tokens_seen", "tokens to target"), ("wall_time", "time to target (s)")):
            series = ui.load_series(lab, selected, [(split, name)], axis)
            reached_at = plots.first_reach(series, target, higher).set_index("run_id")["reached_at"]
            table[column] = reached_at.reindex(ids).values
        st.dataframe(table, hide_index=True)
        st.caption("Empty cells: the run has not reached the target (yet). Fewer steps or seconds is faster.")

with overfitting:
    both = sorted({n for s, n in pairs(metrics) if s == "validation"}
                  & {("loss" if n == "eval_loss" else n) for s, n in pairs(metrics) if s == "train"})
    metric = pick("Metric", both, ["loss", "accuracy"], "ofit")
    if metric is None:
        st.info("Overfitting needs a metric logged on both the train and the validation split.")
    else:
        # The train-sample loss (no dropout, eval mode) is the fair counterpart of the validation loss; the
        # running training loss stands in for runs that have no train sample (pretraining).
        train_names = [("train", "eval_loss"), ("train", "loss")] if metric == "loss" else [("train", metric)]
        train = ui.load_series(lab, selected, train_names, x)
        if metric == "loss" and (train["name"] == "eval_loss").any():
            with_sample = set(train.loc[train["name"] == "eval_loss", "run_id"])
            train = train[(train["name"] == "eval_loss") | ~train["run_id"].isin(with_sample)]
        validation = ui.load_series(lab, selected, [("validation", metric)], x)
        fig = plots.overfitting_figure(train, validation, metric=metric, higher_better=plots.higher_is_better(metric),
                                       x=x, log_y=log_y)
        ui.chart(fig, figure_name("overfitting"),
                 pd.concat([train, validation]), key="overfitting")
        st.caption("Dashed: train (a fixed train sample scored like validation); solid: validation; ★ best "
                   "validation point (the checkpoint a run keeps). Gap above zero: validation is worse than train.")

with forgetting:
    probes = [m for m in metrics if m.startswith("forgetting/")]
    if not probes:
        st.info("No forgetting probes in these runs: fine-tune with the MLM or drift probe on, or with a second "
                "task (Fine-tune page, 'Forgetting' and 'Sequential' sections).")
    else:
        data = ui.load_series(lab, selected, pairs(probes), x, group)
        ui.chart(plots.metric_figure(data, x=x, smoothing=smoothing, log_y=log_y, group="group" if group else None,
                                     group_title=group, facet="metric"), figure_name("forgetting"), data,
                 key="forgetting")
        st.caption("general_mlm_loss: masked-LM loss on general text (up: general knowledge lost). "
                   "cka_similarity: how alike the encoder's representations stay to the starting model's (1: "
                   "unchanged). prev_task_accuracy: the first task's accuracy while training on the second.")

with calibration:
    bins = ui.load_series(lab, selected, [(RELIABILITY_SPLIT, n) for n in ("confidence", "accuracy", "count")],
                          "step")
    ece = ui.load_series(lab, selected, [("test", "ece")], "step").groupby("label")["value"].last().to_dict()
    ui.chart(plots.reliability_figure(bins, ece), figure_name("calibration"), bins, key="calibration")
    st.caption("Each finished classifier's test split, its predictions binned by confidence (15 bins): on the "
               "dotted diagonal a model is right as often as it is sure; below it, overconfident. Marker size and "
               "the bars: how many test examples a bin holds. ECE: the gap, weighted by those counts.")

st.subheader("Config diff")
if diff.empty:
    st.caption("The selected runs share one config." if len(ids) > 1 else "Select two runs or more to diff configs.")
else:
    labels = ui.run_labels(selected)
    st.dataframe(diff.rename(columns=labels), column_config={"key": st.column_config.TextColumn(pinned=True)})
