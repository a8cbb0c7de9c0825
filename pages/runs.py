"""Runs: live progress of what trains now, the queue, the history, and one run in detail (actions, tags, notes,
curves, config, log, checkpoints)."""

import pandas as pd
import streamlit as st

from ptft_core import plots, ui
from ptft_core.config import IMAGE_KINDS, KINDS
from ptft_core.lab import RESUMABLE, STATUSES

ui.require_frame()

lab = ui.lab()

st.title("Runs")


@st.fragment(run_every=2)
def live() -> None:
    """Progress bars with ETA of the running runs and the queue; reads only. When a run starts or ends, the
    whole page reruns so the table and the details follow."""
    running = lab.list_runs(status="running")
    queue = lab.queue()
    if running.empty:
        st.caption("No run is training right now.")
    pace = lab.seconds_per_step(list(running["id"]))
    for row in running.to_dict("records"):
        step, total, done = ui.run_progress(row)
        eta = ui.format_duration(ui.eta_seconds(row, seconds_per_step=pace.get(row["id"])))
        st.progress(done, text=f"{ui.STATUS_ICONS['running']} **{row['name']}** · step {step:,}/{total or '?'} · "
                               f"{done:.0%} · ETA {eta}{ui.training_pace(row)} · {row['device'] or ''} · "
                               f"`{row['id']}`")
    if queue:
        waiting = " · ".join(f"{q['name']} (waits for {q.get('waits_for') or q['needs']})" for q in queue)
        st.caption(f"{ui.STATUS_ICONS['queued']} Queued: {waiting}")
    active = tuple(sorted(running["id"])) + tuple(q["id"] for q in queue)
    previous = st.session_state.get("runs-active")
    st.session_state["runs-active"] = active
    # Only the fragment's own timed reruns may restart the page: inside a full run (a click) a rerun here would
    # drop the click before the code below handles it (a Save pressed as a run finished would be lost).
    if previous is not None and previous != active and not st.session_state.get("runs-full-run"):
        st.rerun()


st.session_state["runs-full-run"] = True
live()
st.session_state["runs-full-run"] = False

runs_all = lab.list_runs()
if runs_all.empty:
    st.info("No runs yet: launch one from Pretrain or Fine-tune.")
    st.stop()

filters = st.columns([2, 1, 2])
statuses = filters[0].multiselect("Status", list(STATUSES))
kind = filters[1].selectbox("Kind", ["all", *KINDS])
tags = sorted({t for ts in runs_all["tags"] for t in ts})
tag = filters[2].selectbox("Tag", ["all", *tags])
runs = runs_all
if statuses:
    runs = runs[runs["status"].isin(statuses)]
if kind != "all":
    runs = runs[runs["kind"] == kind]
if tag != "all":
    runs = runs[[tag in ts for ts in runs["tags"]]]
runs = runs.reset_index(drop=True)

event = st.dataframe(ui.runs_table(runs), hide_index=True, column_config=ui.RUNS_COLUMN_CONFIG, on_select="rerun",
                     selection_mode="single-row", key=f"runs-table-{statuses}-{kind}-{tag}")
if event.selection.rows:
    run_id = runs["id"].iloc[event.selection.rows[0]]
elif ui.param("run") in set(runs_all["id"]):
    run_id = ui.param("run")
elif not runs.empty:  # what trains now, else the newest
    running_ids = runs.loc[runs["status"] == "running", "id"]
    run_id = (running_ids if not running_ids.empty else runs["id"]).iloc[0]
else:
    st.caption("No run matches these filters.")
    st.stop()
ui.set_params(run=run_id)

# --- one run ------------------------------------------------------------------------------------------------------
row = lab.get_run(run_id)
st.divider()
st.subheader(f"{ui.STATUS_ICONS.get(row['status'], '')} {row['name']}")
st.caption(f"`{run_id}` · {row['kind']} · **{row['status']}** · device {row['device'] or '—'} · attempt "
           f"{row['attempt']} · created {row['created_at']:%Y-%m-%d %H:%M}"
           + (f" · from `{row['parent_run']}`" if row["parent_run"] else "")
           + (f" · {'sweep' if any(t.startswith('sweep:') for t in row['tags']) else 'study'} `{row['study']}`"
              if row["study"] else ""))
if row["error"] and row["status"] == "pruned":  # stopped early by its sweep's pruner: why, not a failure
    st.info(row["error"], icon=ui.STATUS_ICONS["pruned"])
elif row["error"]:
    st.error(row["error"], icon=":material/error:")
if row["status"] == "queued" and (waits := next((q["waits_for"] for q in lab.queue() if q["id"] == run_id), None)):
    st.info(f"Waiting for the {waits}: it starts when that checkpoint is saved.", icon=":material/hourglass_top:")

last = lab.last_metrics(run_id)
headline = last[last["split"].isin(["validation", "test"])
                & last["name"].isin(["accuracy", "f1", "loss", "perplexity"])]
if not headline.empty:
    for col, metric in zip(st.columns(min(len(headline), 6)), headline.head(6).to_dict("records"), strict=False):
        col.metric(f"{metric['split']} {metric['name']}", f"{metric['value']:.4g}", help=f"at step {metric['step']}")
if cost := ui.device_usage(last):
    for col, (label, value, help_text) in zip(st.columns(len(cost)), cost, strict=True):
        col.metric(label, value, help=help_text)


def act(action, done: str) -> None:
    """Run a lab action on this run and rerun; a refusal (wrong state, no checkpoint) shows as a message."""
    try:
        result = action(run_id)
    except (ValueError, KeyError, OSError) as exc:
        ui.show_error(f"Not done ({done.lower()})", exc)
        return
    st.session_state["runs-toast"] = f"{done}: {result}" if isinstance(result, str) else done
    if action == lab.delete:
        ui.set_params(run=None)
    st.rerun()


if toast := st.session_state.pop("runs-toast", None):
    st.toast(toast, icon=":material/check_circle:")

if row["tags"] or row["notes"]:
    st.caption(f"Tags: {', '.join(row['tags']) or '—'}" + (f" · Note: {row['notes']}" if row["notes"] else ""))
if not ui.read_only():
    actions = st.container(horizontal=True)
    if row["status"] in ui.ACTIVE and actions.button("Cancel", icon=":material/stop:"):
        act(lab.cancel, "Cancel requested")
    if row["status"] in RESUMABLE and actions.button("Resume", icon=":material/play_arrow:",
                                                     help="Continue from the newest checkpoint"):
        act(lab.resume, "Resumed")
    if actions.button("Retry", icon=":material/replay:", help="A new run with the same config"):
        act(lab.retry, "Queued a retry")
    with actions.popover("Tags and note", icon=":material/sell:"), st.form(f"annotate-{run_id}", border=False):
        tags_text = st.text_input("Tags (comma-separated)", value=", ".join(row["tags"]))
        notes = st.text_area("Note", value=row["notes"] or "", height=80)
        if st.form_submit_button("Save tags and note"):
            lab.set_tags(run_id, ui.parse_tags(tags_text))
            lab.set_notes(run_id, notes)
            st.session_state["runs-toast"] = "Saved tags and note"
            st.rerun()
    if row["status"] != "running":
        with actions.popover("Delete", icon=":material/delete:"):
            st.warning("This removes the run, its metrics and its checkpoints for good.")
            if st.button("Delete this run", type="primary"):
                act(lab.delete, "Deleted")

curves, config, log, checkpoints = st.tabs(["Curves", "Config", "Log", "Checkpoints"])
with curves:
    if row["kind"] == "evaluate":
        scores = ui.evaluation_table(last)
        if scores.empty:
            st.caption("No dataset scored yet.")
        else:
            st.dataframe(scores, column_config=ui.EVALUATION_COLUMNS)
    names = lab.metric_names([run_id])
    keys = [(s, n) for s, n in zip(names["split"], names["name"], strict=True)
            if (n in ("loss", "accuracy", "perplexity") and s in ("train", "validation"))
            or (s, n) == ("device", "mfu")]
    if keys:
        this_run = runs_all[runs_all["id"] == run_id]
        series = ui.load_series(lab, this_run, keys, "step")
        ui.chart(plots.metric_figure(series, facet="name", references=ui.load_references(lab, this_run)),
                 f"{run_id}-curves")
        if row["kind"] == "pretrain":
            st.caption("Dotted and dash-dotted lines: the validation loss that word frequencies alone reach on the "
                       "same targets (unigram; bigram: the previous token too), with this run's tokenizer.")
        elif row["kind"] in IMAGE_KINDS:
            st.caption("Dotted line on accuracy: always answering the most frequent training class (the majority "
                       "class), scored on the test split: the floor a classifier must beat.")
    elif row["kind"] != "evaluate":
        st.caption("No metrics logged yet.")
with config:
    st.json(row["config"])
with log:
    tail = lab.log_tail(run_id)
    st.code(tail[-12_000:] or "(the worker has not written anything yet)", language="log")
with checkpoints:
    artifacts = lab.artifacts(run_id)
    if artifacts.empty:
        st.caption("No checkpoint yet.")
    else:
        st.dataframe(pd.DataFrame(artifacts)[["step", "kind", "path", "created_at"]], hide_index=True)
