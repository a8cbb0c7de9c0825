"""Inspect: inside one fine-tuned model. Attention of its base and of itself on one sentence, its confusion
matrix and most confident mistakes on the test split, and a box to classify any text. For an image run: the
class-activation map (Grad-CAM) of a test image before and after, the first layer's filters before and after,
the confusion matrix and the most confident mistakes as thumbnails."""

import streamlit as st

from ptft_core import data, plots, ui
from ptft_core import inspect as model_inspect
from ptft_core.config import IMAGE_KINDS

ui.require_frame()

lab = ui.lab()
BIND = {"bind": "query-params"}
EXAMPLE = "The film was slow at first, but the ending was surprisingly moving."

st.title("Inspect")
runs = lab.list_runs(status="completed")
runs = runs[runs["kind"].isin(["finetune", *IMAGE_KINDS])] if not runs.empty else runs
if runs.empty:
    st.info("No completed fine-tuning or image run yet: this page opens the final checkpoint of one.")
    st.stop()

labels = ui.run_labels(runs)
run_id = st.selectbox("Run", runs["id"], format_func=lambda rid: f"{labels[rid]} · {rid}", key="run", **BIND)
config = lab.get_run(run_id)["config"]
if config["kind"] in IMAGE_KINDS:
    try:
        start, tuned = ui.image_models(run_id)
        classes = config.get("classes") or []
        pixels, truth, probs = ui.image_test(run_id, config["dataset"], tuned.record["image_size"],
                                             tuned.record["channels"], classes)
    except (ValueError, OSError) as exc:  # a missing or unreadable checkpoint, a base deleted since
        ui.show_error(f"The models of {run_id} could not be loaded", exc)
        st.stop()
    origin = config.get("base") or f"{config['model']} (random init)"
    st.caption(f"Start **{origin}**{' (scratch)' if config.get('scratch') else ''} · trained on "
               f"**{config['dataset']}** at {tuned.record['image_size']} pixels"
               + (f" · strategy {config['strategy']}" if "strategy" in config else ""))
    cam_tab, filters_tab, errors_tab = st.tabs(["Class activation", "First-layer filters", "Test errors"],
                                               key="image-tab", **BIND)
    with cam_tab:
        if cam_tab.open:
            index = st.number_input("Test image", 0, len(truth) - 1, 0, key="image", **BIND)
            for column, (title, loaded) in zip(st.columns(2), [("Before", start), ("After", tuned)], strict=True):
                cam, predicted, probability = model_inspect.grad_cam(loaded, pixels[index])
                with column:
                    ui.chart(plots.grad_cam_figure(pixels[index], cam, title=f"{title}: {loaded.labels[predicted]} "
                                                                             f"({probability:.0%})"),
                             f"grad-cam-{run_id}-{index}-{title.lower()}", key=f"cam-{title}")
            st.caption(f"True class **{tuned.labels[truth[index]]}**. Grad-CAM: where the evidence for the predicted "
                       "class lies in the last stage's feature maps (bright: more), each model explaining its own "
                       "answer; before is the base with its own head (its source classes), or random weights.")
    with filters_tab:
        if filters_tab.open:
            before, after = model_inspect.image_filters(start), model_inspect.image_filters(tuned)
            ui.chart(plots.filters_figure(before, title="Before"), f"filters-{run_id}-before", key="filters-before")
            ui.chart(plots.filters_figure(after, title="After"), f"filters-{run_id}-after", key="filters-after")
            st.caption(f"The first convolution's {len(after)} filters. Mean |change| {abs(after - before).mean():.4f} "
                       f"(mean |weight| {abs(before).mean():.4f}): 0 where the strategy froze them.")
    with errors_tab:
        if errors_tab.open:
            predictions = probs.argmax(axis=1)
            left, right = st.columns([2, 3])
            with left:
                st.metric("Test accuracy", f"{(predictions == truth).mean():.1%}", help=f"{len(truth):,} test images")
                matrix = model_inspect.confusion_matrix(truth, predictions, len(tuned.labels))
                ui.chart(plots.confusion_figure(matrix, tuned.labels), f"confusion-{run_id}", key="confusion")
            with right:
                st.markdown("**Most confident mistakes**")
                # Its "text" column holds what it was given for each test row: here the row's index.
                mistakes = model_inspect.confident_mistakes(list(range(len(truth))), truth, probs, tuned.labels, n=12)
                stored = data.class_subset(data.load_split(config["dataset"], "test"),
                                           data.label_names(config["dataset"]), classes)[0]["image"]
                if mistakes.empty:
                    st.caption("No test image is misclassified.")
                else:
                    st.image([stored.iloc[i] for i in mistakes["text"]], width=72,
                             caption=[f"{t} → {p} ({c:.0%})" for t, p, c in zip(
                                 mistakes["true"], mistakes["predicted"], mistakes["confidence"], strict=True)])
    st.stop()
dataset = config.get("then_dataset") or config["dataset"]
base = config["base"] + (" (scratch: random init)" if config.get("scratch") else "")
st.caption(f"Base **{base}** · fine-tuned on **{dataset}** · strategy {config['strategy']} · "
           f"max length {config['max_length']}")

try:
    tuned = ui.classifier(run_id)
except (ValueError, OSError) as exc:  # a missing or unreadable checkpoint
    ui.show_error(f"The final checkpoint of {run_id} could not be loaded", exc)
    st.stop()

attention_tab, errors_tab, try_tab = st.tabs(["Attention", "Test errors", "Try it"], key="tab", **BIND)

with attention_tab:
    if attention_tab.open:
        text = st.text_input("Sentence", value=EXAMPLE, key="sentence")
        layers, heads = tuned.model.config.num_hidden_layers, tuned.model.config.num_attention_heads
        left, right = st.columns(2)
        layer = left.slider("Layer", 1, layers, layers, key="layer", **BIND) if layers > 1 else 1
        head = right.slider("Head", 1, heads, 1, key="head", **BIND) if heads > 1 else 1
        try:
            start = ui.base_encoder(config["base"], bool(config.get("scratch")), config.get("family", "bert"),
                                    config.get("dataset"))
        except (ValueError, OSError) as exc:
            ui.show_error(f"The base model {config['base']} could not be loaded", exc)
            st.stop()
        columns = st.columns(2)
        maps = []  # (tokens, this head's weights) of the base, then of the fine-tuned model
        for column, (title, loaded) in zip(columns, [(f"Before: {base}", start), ("After fine-tuning", tuned)],
                                           strict=True):
            tokens, weights = model_inspect.attention(loaded, text)
            maps.append((list(tokens), weights[layer - 1, head - 1]))
            with column:
                ui.chart(plots.attention_figure(maps[-1][1], tokens, title=f"{title} · layer {layer}, head {head}"),
                         f"attention-{run_id}-l{layer}h{head}", key=f"attention-{title}")
        st.caption("Each row is a token attending; each column a token attended to. Fine-tuning mostly "
                   "reshapes the top layers: compare the last layer with the first.")
        (before_tokens, before), (after_tokens, after) = maps
        if before_tokens != after_tokens or before.shape != after.shape:
            st.info("The base and the fine-tuned tokenizers split this sentence differently, so their attention "
                    "maps cannot be subtracted cell by cell: compare the two maps above by eye.")
        else:
            change = plots.attention_change(before, after)
            ui.chart(plots.attention_difference_figure(
                before, after, after_tokens, title=f"Change (after − before) · layer {layer}, head {head}"),
                f"attention-change-{run_id}-l{layer}h{head}", key="attention-difference")
            st.caption(f"After minus before, cell by cell: red where the fine-tuned model attends more, blue where "
                       f"less, white unchanged. Mean |Δ| {change.mean_abs:.4f} (largest {change.max_abs:.3f}; "
                       "the weights of a row sum to 1).")

with errors_tab:
    if errors_tab.open:
        test = data.load_split(dataset, "test")
        probs = ui.test_probabilities(run_id, dataset, config["max_length"])
        predictions = probs.argmax(axis=1)
        matrix = model_inspect.confusion_matrix(test["label"].to_numpy(), predictions, len(tuned.labels))
        left, right = st.columns([2, 3])
        with left:
            st.metric("Test accuracy", f"{(predictions == test['label'].to_numpy()).mean():.1%}",
                      help=f"{len(test):,} test texts of {dataset}")
            ui.chart(plots.confusion_figure(matrix, tuned.labels), f"confusion-{run_id}", key="confusion")
        with right:
            st.markdown("**Most confident mistakes**")
            mistakes = model_inspect.confident_mistakes(test["text"].tolist(), test["label"].to_numpy(), probs,
                                                        tuned.labels)
            st.dataframe(mistakes, hide_index=True, column_config={
                "text": st.column_config.TextColumn(width="large"),
                "confidence": st.column_config.ProgressColumn(format="percent", min_value=0, max_value=1),
            })

with try_tab:
    if try_tab.open:
        typed = st.text_area("Text to classify", value=EXAMPLE, key="typed")
        if typed.strip():
            probabilities = model_inspect.classify(tuned, typed, config["max_length"])
            ui.chart(plots.probability_figure(probabilities), f"classify-{run_id}", key="classify")
