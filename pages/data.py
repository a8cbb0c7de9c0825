"""Data: the built-in and user datasets, a look inside one (rows, label balance, lengths; for an image set a grid
of examples per class), and uploads."""

from pathlib import Path

import pandas as pd
import streamlit as st

from ptft_core import data, plots, ui

ui.require_frame()

st.title("Data")
st.caption("Built-in datasets are prepared by `make data`; add your own file below. Any text dataset can serve as "
           "unlabelled text for pretraining; labelled ones can be fine-tuned on. Image sets (kind: labelled images) "
           "serve image runs.")

lab = ui.lab()
datasets = ui.datasets_or_stop()

if not datasets:
    st.warning("No dataset is prepared yet: run `make data` (or `python -m ptft_core data prepare`).")
else:
    st.dataframe(pd.DataFrame([{
        "name": d.name,
        "kind": d.kind + (" images" if d.modality == "image" else ""),
        "rows": d.total_rows,
        "train / validation / test": " / ".join(f"{n:,}" for n in d.splits.values()),
        "labels": ", ".join(d.label_names) or "—",
        "mean tokens": d.mean_tokens,
        "image size": f"{d.image_size}×{d.image_size} px" if d.image_size else "—",
        "source": "built-in" if d.builtin else "user",
    } for d in datasets]), hide_index=True)

    names = [d.name for d in datasets]
    first_labelled = next((i for i, d in enumerate(datasets) if d.kind == "labelled"), 0)
    name = st.selectbox("Look inside", names, index=first_labelled, key="dataset", bind="query-params")
    info = next(d for d in datasets if d.name == name)
    st.markdown(info.description)
    splits = [split for split, n in info.splits.items() if n]
    try:  # the first rows of each split, from the lab: a preview and the length histogram's sample
        samples = {split: lab.dataset_rows(name, split, ui.LENGTH_SAMPLE) for split in splits}
    except (data.DataError, KeyError) as exc:
        ui.show_error(f"Dataset {name} could not be loaded", exc)
        st.stop()

    image_set = info.modality == "image"
    first_tab, balance_tab, *lengths_tab = st.tabs(["Examples" if image_set else "Rows", "Label balance",
                                                    *([] if image_set else ["Lengths"])])
    with first_tab:
        split = st.segmented_control("Split", splits, default=splits[0], key="preview-split")
        frame = samples[split or splits[0]]
        if image_set:
            for label, strip in data.class_strips(frame, per_class=ui.IMAGES_PER_CLASS).items():
                st.image(strip, caption=f"{label}: {info.label_names[label]}")
            st.caption(f"Up to {ui.IMAGES_PER_CLASS} images a class, drawn from the first {len(frame):,} rows of "
                       f"the {split or splits[0]} split, shown at 56×56 pixels without smoothing.")
        else:
            frame = frame.head(200)
            if info.label_names and "label" in frame:
                frame = frame.assign(label_name=frame["label"].map(dict(enumerate(info.label_names))))
            st.dataframe(frame, hide_index=True, column_config={"text": st.column_config.TextColumn(width="large")})
            st.caption(f"First {len(frame):,} of {info.splits[split or splits[0]]:,} rows.")
    with balance_tab:
        st.plotly_chart(plots.label_balance_figure(info.label_balance if info.label_names else {}), theme=None,
                        config=plots.chart_config(f"{name}-labels"))
    for tab in lengths_tab:
        with tab:
            samples = {split: frame["text"].tolist() for split, frame in samples.items()}
            lengths = {split: ui.token_lengths(texts) for split, texts in samples.items()}
            if any(v is None for v in lengths.values()):
                st.warning("The built-in minilm-l6 tokenizer is not prepared: run `make data` to see token lengths.")
            else:
                long = pd.DataFrame([(s, n) for s, values in lengths.items() for n in values],
                                    columns=["split", "tokens"])
                max_length = st.number_input("Mark a max_length", min_value=8, max_value=512, value=128, step=8)
                st.plotly_chart(plots.length_histogram(long, max_length=int(max_length)), theme=None,
                                config=plots.chart_config(f"{name}-lengths"))
                over = float((long["tokens"] > max_length).mean())
                st.caption(f"Up to {ui.LENGTH_SAMPLE:,} texts per split. {over:.1%} are longer than {max_length} "
                           "tokens and would be truncated.")

st.divider()
st.subheader("Add your own dataset")
if ui.read_only():
    ui.launch_disabled_note()
    st.stop()

upload = st.file_uploader("A CSV, TSV, JSONL/JSON, Parquet or TXT file (TXT: one text per line), or a ZIP of "
                          "images in class folders (class/image.png)",
                          type=[suffix.lstrip(".") for suffix in data.UPLOAD_SUFFIXES])
if upload is not None:
    images = upload.name.lower().endswith(".zip")
    if images:  # a folder per class: the classes are the folders, nothing to pick
        st.caption("An image set: each top folder of the zip is a class (one folder around them is looked through).")
        columns = []
    else:
        try:
            peek = data.peek(upload.getvalue(), upload.name)
        except data.DataError as exc:
            ui.show_error(f"{upload.name} could not be read", exc)
            st.stop()
        st.dataframe(peek, hide_index=True)
        columns = [str(c) for c in peek.columns]
    with st.form("register"):
        left, mid, right = st.columns(3)
        new_name = left.text_input("Dataset name", value=Path(upload.name).stem.lower().replace(" ", "-")[:64],
                                   help="a-z, 0-9, '_' and '-'")
        text_column, label_column = "text", None
        if not images:
            text_column = mid.selectbox("Text column", columns, index=ui.option_index(columns, "text"))
            label_choice = right.selectbox("Label column", ["(none: unlabelled)", *columns],
                                           index=1 + ui.option_index(columns, "label", -1))
            label_column = None if label_choice.startswith("(none") else label_choice
        overwrite = st.checkbox("Replace a user dataset of the same name")
        if st.form_submit_button("Register dataset", type="primary"):
            try:
                upload.seek(0)
                registered = lab.add_dataset(new_name, upload.name, upload, text_column, label_column,
                                             overwrite=overwrite)
            except data.DataError as exc:
                ui.show_error("The file was not registered", exc)
            else:
                what = "images" if registered.modality == "image" else f"{registered.kind} rows"
                st.success(f"Registered **{registered.name}**: {registered.total_rows:,} {what} "
                           f"({' / '.join(f'{n:,}' for n in registered.splits.values())} train/validation/test).")
