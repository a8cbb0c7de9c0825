"""Fine-tune: a classifier on a labelled dataset from a checkpoint, an earlier run or a scratch baseline, with
the strategy, optimizer, forgetting probes, mitigations and an optional second task; or an image classifier
from an image pretraining, on a target image set, with the same strategies and the source task scored."""

import streamlit as st

from ptft_core import ui
from ptft_core.config import (
    AUGMENT_HELP,
    PRESETS,
    STRATEGY_HELP,
    FinetuneConfig,
    ImageFinetuneConfig,
    field_spec,
)
from ptft_core.specs import parent_run

ui.require_frame()

NO_SECOND_TASK = "(none)"

st.title("Fine-tune")
st.caption("Sequence classification on a labelled dataset. Launch the same config twice, once with the scratch "
           "baseline, to see what pretraining buys; several seeds give error bands on Compare.")

IMAGES = "Image classifier"
if st.segmented_control("What", ["Text classifier", IMAGES], default="Text classifier", key="finetune-what",
                        label_visibility="collapsed") == IMAGES:
    st.caption("Image transfer: a backbone pretrained on a source image set (an image pretraining run) under a new "
               "head for the target set; its source task is scored with its own head at every evaluation "
               "(forgetting). A model preset trains from random weights: the scratch baseline.")
    field = ui.ConfigForm(ImageFinetuneConfig, "image_finetune")
    images = {d.name: d for d in ui.datasets_or_stop("image")}
    if not images:
        st.warning("No image set is prepared: run `make data`, or add a zip of class folders on the Data page.")
        st.stop()
    field.values["base"] = ui.image_base_picker("Start from", "image-finetune-base")
    field(st, "scratch", label="Scratch baseline: the base's architecture, size and normalisation, random weights")
    row = st.columns(4)
    dataset = field(row[0], "dataset", options=list(images))
    field(row[1], "label_fraction", step=0.05)
    field(row[2], "image_size", step=4)
    field(row[3], "augment")
    # Keyed by the dataset: another set's classes are other options.
    classes = field.values["classes"] = ui.config_input(st, ImageFinetuneConfig, "classes", f"image-finetune-{dataset}",
                                                        options=images[dataset].label_names)
    row = st.columns([2, 1, 1, 1])
    strategy = field(row[0], "strategy", format_func=lambda s: s.replace("_", " "))
    field(row[1], "freeze_layers")
    field(row[2], "unfreeze_every_steps", step=10)
    field(row[3], "layer_decay", step=0.05)
    st.caption(f"{strategy.replace('_', ' ').capitalize()}: {STRATEGY_HELP[strategy]} (the stem is the "
               f"embeddings, each stage a layer). Augmentation: {AUGMENT_HELP[field.values['augment']]}.")
    row = st.columns(6)
    epochs = field(row[0], "epochs")
    cap = field(row[1], "max_steps", step=10)
    batch = field(row[2], "batch_size", step=8)
    field(row[3], "early_stopping_patience")
    field(row[4], "replay_fraction", step=0.05)
    field(row[5], "l2sp", step=0.1)
    optim = ui.optim_inputs("image_finetune")
    run_fields, seeds = ui.run_inputs("image_finetune")
    field.values.update(run_fields)
    rows = images[dataset].label_balance.get("train") or {}
    examples = round(sum(n for name, n in rows.items() if not classes or name in classes)
                     * field.values["label_fraction"])
    steps = epochs * (examples // max(1, batch))
    st.caption(f"≈ {min(steps, cap) if cap else steps:,} optimizer steps on {examples:,} training images.")
    if field.values["base"] is None:
        st.info("Choose the model to start from.")
    else:
        ui.launch_button(lambda: ui.build_configs("image_finetune", field.values, optim, seeds),
                         parent_run(field.values["base"]))
    st.stop()

datasets = ui.datasets_or_stop("text")
labelled = [d.name for d in datasets if d.kind == "labelled"]
if not labelled:
    st.warning("No labelled dataset is prepared: run `make data`, or add one on the Data page.")
    st.stop()

st.subheader("Model and data")
field = ui.ConfigForm(FinetuneConfig, "finetune")  # label, help, bounds and default of each field from the config
fields = field.values
fields["base"] = ui.checkpoint_picker("Start from", "finetune-base", presets=True)
if fields["base"] in PRESETS:
    field(st, "family", help="Random weights of this architecture at the preset's shape; bert reads with the "
          "built-in bert-base tokenizer, the others train their own on the dataset's training text.")
field(st, "scratch", label="Scratch baseline: same architecture and tokenizer, random weights")
row = st.columns(4)
field(row[0], "dataset", options=labelled)
field(row[1], "label_fraction", step=0.05)
field(row[2], "max_length", step=16)
field(row[3], "batch_size", step=8)

st.subheader("Strategy")
row = st.columns([2, 1, 1, 3])
strategy = field(row[0], "strategy", format_func=lambda s: s.replace("_", " "))
field(row[2], "pooling")
row[3].caption(f"**{strategy.replace('_', ' ')}**: {STRATEGY_HELP[strategy]}.")
STRATEGY_FIELD = {"freeze_bottom": "freeze_layers", "gradual_unfreeze": "unfreeze_every_steps",
                  "discriminative": "layer_decay"}
if strategy in STRATEGY_FIELD:
    field(row[1], STRATEGY_FIELD[strategy], **({"step": 0.05} if strategy == "discriminative" else {}))

st.subheader("Training")
row = st.columns(5)
field(row[0], "epochs")
field(row[1], "max_steps", step=50)
field(row[2], "eval_every", step=10)
field(row[3], "log_every", step=5)
field(row[4], "early_stopping_patience")
row = st.columns([1, 1, 1, 2])
field(row[0], "eval_val_samples", step=64)
field(row[1], "eval_train_samples", step=64)
field(row[2], "probe_every")
row[3].caption(ui.evaluation_plan(fields))
optim = ui.optim_inputs("finetune")
row = st.columns(3)
if row[0].checkbox("Override dropout", help=field_spec(FinetuneConfig, "dropout").help):
    field(row[1], "dropout", value=0.1, max_value=0.99, step=0.05)

with st.expander("Forgetting: probes and mitigations"):
    row = st.columns(4)
    field(row[0], "probe_mlm")
    field(row[1], "probe_drift")
    field(row[2], "probe_corpus", options=[d.name for d in datasets])
    field(row[3], "probe_size", step=32)
    row = st.columns(3)
    field(row[0], "replay_fraction", max_value=0.99, step=0.05)
    field(row[1], "replay_source")
    field(row[2], "l2sp", step=0.01)

with st.expander("Sequential fine-tuning: a second task afterwards"):
    row = st.columns(2)
    then = field(row[0], "then_dataset", options=[NO_SECOND_TASK, *labelled])
    fields["then_dataset"] = None if then == NO_SECOND_TASK else then
    field(row[1], "then_epochs")

st.subheader("Run")
run_fields, seeds = ui.run_inputs("finetune")
fields.update(run_fields)

train_rows = {d.name: d.splits["train"] for d in datasets}
examples = round(train_rows[fields["dataset"]] * fields["label_fraction"])
steps = ui.finetune_steps(fields, examples, round(train_rows.get(fields["then_dataset"], 0) * fields["label_fraction"]))
st.caption(f"≈ {steps:,} optimizer steps on {examples:,} labelled training examples"
           + (f", then {fields['then_dataset']}." if fields["then_dataset"] else "."))

if fields["base"] is None:
    st.info("Choose the model to start from.")
else:
    ui.launch_button(lambda: ui.build_configs("finetune", fields, optim, seeds), parent_run(fields["base"]))
