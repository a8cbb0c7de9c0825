"""Arena: fine-tuned classifiers side by side at prediction time. One text (typed, or drawn from a test split):
each run's label and probabilities, and whether they agree. A whole test split: where two runs disagree, the most
confident disagreements first, by true label. Predictions come from the lab service's predictor (this page loads
no model); a read-only demo's viewers may predict too (it changes nothing)."""

import pandas as pd
import streamlit as st

from ptft_core import arena, plots, ui
from ptft_core.lab import COST_TEXTS, MAX_PREDICT_RUNS, MAX_TEXT_CHARS

ui.require_frame()

lab = ui.lab()
BIND = {"bind": "query-params"}
EXAMPLE = "The film was slow at first, but the ending was surprisingly moving."

st.title("Arena")
st.caption("Pretrained against scratch at prediction time: does the pretrained model answer differently, and more "
           "surely? Confidence alone proves nothing: Compare's Calibration tab says whether it is earned.")
runs = lab.list_runs(status="completed", kind="finetune")
if runs.empty:
    st.info("No completed text fine-tune yet: the arena puts finished classifiers side by side.")
    st.stop()
labels = ui.run_labels(runs)
chosen = st.multiselect(f"Classifiers (1 to {MAX_PREDICT_RUNS})", list(runs["id"]), default=list(runs["id"][:2]),
                        max_selections=MAX_PREDICT_RUNS, format_func=lambda rid: f"{labels[rid]} · {rid}",
                        key="arena-runs")
if not chosen:
    st.info("Choose the classifiers to compare.")
    st.stop()
configs = {rid: lab.get_run(rid)["config"] for rid in chosen}
datasets = list(dict.fromkeys(c.get("then_dataset") or c["dataset"] for c in configs.values()))
one, split_tab = st.tabs(["One text", "Where they disagree"], key="arena-tab", **BIND)


def predict(texts: list[str]):
    if not ui.prediction_allowed():
        st.warning(f"A viewer may ask for {ui.VIEWER_PREDICTIONS_PER_MINUTE} predictions a minute: wait a moment.",
                   icon=":material/hourglass_top:")
        st.stop()
    try:
        return ui.predictions(tuple(chosen), tuple(texts))
    except (ValueError, KeyError) as exc:  # Refused (no checkpoint, the predictor busy), an unknown run
        ui.show_error("No prediction", exc)
        st.stop()


with one:
    if one.open:  # a tab computes only when it is open: each prediction is the predictor's work
        source = st.radio("Text", ["Type one", "From a test split"], horizontal=True, key="arena-source")
        truth = None
        if source == "Type one":
            text = st.text_area("Text to classify", value=EXAMPLE, max_chars=MAX_TEXT_CHARS, key="arena-text")
        else:
            left, right = st.columns([2, 1])
            dataset = left.selectbox("Dataset", datasets, key="arena-dataset")
            split_texts, split_truth = arena.labelled_split(lab, dataset, "test")
            index = right.number_input("Test example", 0, len(split_texts) - 1, 0, key="arena-row")
            text, truth = split_texts[index], split_truth[index]
            st.markdown(f"> {text}")
        if text.strip():
            answer = predict([text])
            shown = answer.assign(run=answer["run_id"].map(labels))
            ui.chart(plots.predictions_figure(shown, title="Class probabilities"), "arena-one", shown, key="arena-one")
            top = arena.answers(answer)
            cost = answer.groupby("run_id", sort=False)[["ms_per_text", "model_mb"]].first()
            costs = "; ".join(f"{labels[r]} {c['ms_per_text']:.1f} ms a text, {c['model_mb']:.0f} MB in memory"
                              for r, c in cost.iterrows())
            st.caption(f"Inference cost on this machine (the lab service's predictor, float32, the model loaded): "
                       f"{costs}. `python -m bench.inference_bench` prices batches, bf16 and int8.")
            verdict = "agree" if top["label"].nunique() == 1 else "disagree"
            with st.expander("Inference cost of each classifier: float32, bf16, int8"):
                if st.button("Measure on this machine", key="arena-measure",
                             help=f"{COST_TEXTS} test texts, each alone, then in batches of 32, in each precision "
                                  "(a few seconds a classifier)") and ui.prediction_allowed():
                    try:
                        costs = [lab.inference_cost(r).assign(classifier=labels[r]) for r in chosen]
                    except (ValueError, KeyError) as exc:
                        ui.show_error("Not measured", exc)
                    else:
                        st.dataframe(pd.concat(costs)[["classifier", "precision", "p50_ms", "p95_ms", "texts_per_s",
                                                       "memory_mb", "disk_mb"]], hide_index=True)
                        st.caption("p50 / p95: one text at a time (ms); texts/s: batches of 32, sorted by length; "
                                   "int8: the linear layers quantised on the fly (its accuracy is not measured here).")
            st.caption(f"The {len(chosen)} classifiers {verdict}: " + "; ".join(
                f"{labels[r]} says **{lab_}** ({c:.0%})" for r, lab_, c in zip(top["run_id"], top["label"],
                                                                               top["confidence"], strict=True))
                + (f". True label: **{truth}**." if truth else "."))

with split_tab:
    if split_tab.open:
        if len(chosen) < 2:
            st.info("Choose two classifiers to see where they disagree.")
        else:
            left, middle, right = st.columns(3)
            dataset = left.selectbox("Test split of", datasets, key="arena-split")
            first = middle.selectbox("First", chosen, format_func=labels.get, key="arena-first")
            second = right.selectbox("Second", [r for r in chosen if r != first], format_func=labels.get,
                                     key="arena-second")
            texts, truth = arena.labelled_split(lab, dataset, "test")
            names = next(d.label_names for d in lab.datasets() if d.name == dataset)  # in the dataset's order
            answers = predict(texts)
            pair = answers[answers["run_id"].isin([first, second])]
            table = arena.disagreements(pair, texts, truth, first, second)
            true_label = st.selectbox("True label", ["(all)", *names], key="arena-truth")
            if true_label != "(all)":
                table = table[table["true label"] == true_label]
            top = arena.answers(pair)
            accuracy = {r: (top[top["run_id"] == r].set_index("row")["label"] == truth).mean() for r in (first, second)}
            st.caption(f"{labels[first]} and {labels[second]} agree on {arena.agreement(pair):.1%} of {len(texts):,} "
                       f"test texts of {dataset} (accuracy {accuracy[first]:.1%} and {accuracy[second]:.1%}). "
                       f"{len(table):,} disagreements below, the surest first (both confident and still apart).")
            st.dataframe(table.rename(columns={"first": labels[first], "second": labels[second],
                                               "first confidence": f"{labels[first]} confidence",
                                               "second confidence": f"{labels[second]} confidence"}),
                         hide_index=True, column_config={"text": st.column_config.TextColumn(width="large")})
