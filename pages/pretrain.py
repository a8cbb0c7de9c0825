"""Pretrain: a preset of any family from scratch (with a fresh tokenizer) or further pretraining of a
checkpoint, with the family's objective, and an estimate of the tokens and the time before launching; or an
image classifier (ResNet, VGG) trained from scratch on a source image set."""

import streamlit as st

from ptft_core import ui
from ptft_core.config import (
    AUGMENT_HELP,
    FAMILY_OBJECTIVE,
    OBJECTIVE_TITLE,
    PRESETS,
    ImagePretrainConfig,
    PretrainConfig,
    field_spec,
)
from ptft_core.specs import parent_run

ui.require_frame()

st.title("Pretrain")
st.caption("Language-model pretraining. From scratch, a preset of a family (BERT, RoBERTa, DistilBERT, XLNet: "
           "masked LM; GPT-2: causal LM; T5: span corruption) learns its tokenizer and its weights from the "
           "corpus; further pretraining continues a checkpoint on new text (domain adaptation) with its own "
           "objective. The final checkpoint can then be fine-tuned.")

IMAGES = "Image classifier"
if st.segmented_control("What", ["Language model", IMAGES], default="Language model", key="pretrain-what",
                        label_visibility="collapsed") == IMAGES:
    st.caption("Supervised image pretraining, the ImageNet recipe at this lab's size: a ResNet or VGG from random "
               "weights learns to classify a source image set; an image fine-tune then starts from its checkpoint.")
    field = ui.ConfigForm(ImagePretrainConfig, "image_pretrain")
    images = {d.name: d for d in ui.datasets_or_stop("image")}
    if not images:
        st.warning("No image set is prepared: run `make data`, or add a zip of class folders on the Data page.")
        st.stop()
    row = st.columns(3)
    field(row[0], "model")
    dataset = field(row[1], "dataset", options=list(images))
    size = field(row[2], "image_size", step=4) or images[dataset].image_size
    # Keyed by the dataset: another set's classes are other options.
    classes = field.values["classes"] = ui.config_input(st, ImagePretrainConfig, "classes", f"image-pretrain-{dataset}",
                                                        options=images[dataset].label_names)
    augment = field(st, "augment")
    st.caption(f"Trains at {f'{size}×{size} pixels' if size else 'a size you give (the set mixes sizes)'}; "
               f"augmentation: {AUGMENT_HELP[augment]}.")
    row = st.columns(4)
    epochs = field(row[0], "epochs")
    batch = field(row[1], "batch_size", step=16)
    field(row[2], "eval_count")
    field(row[3], "log_every", step=5)
    optim = ui.optim_inputs("image_pretrain")
    run_fields, seeds = ui.run_inputs("image_pretrain")
    field.values.update(run_fields)
    rows = images[dataset].label_balance.get("train") or {}
    steps = epochs * (sum(n for name, n in rows.items() if not classes or name in classes) // batch)
    st.metric("Optimizer steps", f"{steps:,}", help="epochs x (training images // batch size)")
    ui.launch_button(lambda: ui.build_configs("image_pretrain", field.values, optim, seeds), None)
    st.stop()

field = ui.ConfigForm(PretrainConfig, "pretrain")  # label, help, bounds and default of each field from the config
fields = field.values

st.subheader("Model")
mode = st.radio("Start", ["From scratch", "Further pretraining of a checkpoint"], horizontal=True,
                label_visibility="collapsed")
if mode == "From scratch":
    left, middle, right = st.columns(3)
    field(left, "model", options=PRESETS, label="Preset")
    family = field(middle, "family")
    field(right, "vocab_size", step=1000)
    st.caption(f"Objective: **{OBJECTIVE_TITLE[FAMILY_OBJECTIVE[family]]}** (the one {family}'s classes support"
               + ("; XLNet's own permutation LM is not implemented" if family == "xlnet" else "") + ").")
else:
    fields["model"] = ui.checkpoint_picker("Checkpoint", "pretrain-base")
    st.caption("Objective: the checkpoint's own (masked LM for an encoder, causal LM for a decoder, span "
               "corruption for T5).")
    field(st, "freeze_encoder")

st.subheader("Data")
corpora = [d.name for d in ui.datasets_or_stop("text")]
left, right, third = st.columns(3)
corpus = field_spec(PretrainConfig, "corpus")
fields["corpus"] = left.multiselect(corpus.title, corpora, default=[c for c in corpus.default if c in corpora],
                                    help=corpus.help, key="pretrain-corpus")
field(right, "block_size", step=32)
field(third, "mask_prob", step=0.05)

st.subheader("Training")
row = st.columns(4)
field(row[0], "max_steps", step=100)
field(row[1], "batch_size", step=8)
field(row[2], "eval_every", step=10)
field(row[3], "log_every", step=5)
optim = ui.optim_inputs("pretrain")
run_fields, seeds = ui.run_inputs("pretrain")
fields.update(run_fields)

st.subheader("Estimate")
tokens = int(fields["max_steps"] * fields["batch_size"] * fields["block_size"])
rate, source = ui.throughput_for(fields["model"]) if fields["model"] else (None, "choose a checkpoint")
seconds = tokens / rate if rate else None
cols = st.columns(3)
cols[0].metric("Tokens seen", ui.format_count(tokens), help="steps x batch size x block size")
cols[1].metric("Time on CPU", ui.format_duration(seconds), help=source)
cols[2].metric("Throughput", f"{ui.format_count(rate)} tokens/s" if rate else "unknown", help=source)
st.caption(f"Throughput {source}; evaluation and checkpoints add a little. "
           + ("A GPU run is much faster." if ui.lab().has_gpu else ""))

if fields["model"] is None:
    st.info("Choose the checkpoint to continue from.")
else:
    ui.launch_button(lambda: ui.build_configs("pretrain", fields, optim, seeds), parent_run(fields["model"]))
