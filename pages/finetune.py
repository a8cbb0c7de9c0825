"""Fine-tune: a classifier on a labelled dataset from a checkpoint, an earlier run or a scratch baseline, with
the strategy, optimizer, forgetting probes, mitigations and an optional second task."""

from typing import get_args

import streamlit as st

from ptft_core import ui
from ptft_core.config import FinetuneConfig, Strategy

ui.require_frame()

DEFAULTS = FinetuneConfig()
NO_SECOND_TASK = "(none)"
STRATEGY_HELP = {
    "full": "every weight trains",
    "linear_probe": "the encoder is frozen; only the classification head trains",
    "freeze_bottom": "the embeddings and the k bottom layers stay frozen",
    "gradual_unfreeze": "starts with the head only and opens one layer group at a time, from the top",
    "discriminative": "every layer trains, lower layers with smaller learning rates",
}

st.title("Fine-tune")
st.caption("Sequence classification on a labelled dataset. Launch the same config twice, once with the scratch "
           "baseline, to see what pretraining buys; several seeds give error bands on Compare.")

datasets = ui.datasets_or_stop()
labelled = [d.name for d in datasets if d.kind == "labelled"]
if not labelled:
    st.warning("No labelled dataset is prepared: run `make data`, or add one on the Data page.")
    st.stop()

st.subheader("Model and data")
fields = {"base": ui.checkpoint_picker("Start from", "finetune-base", presets=True)}
fields["scratch"] = st.toggle("Scratch baseline: same architecture and tokenizer, random weights",
                              help="The fair baseline: what the same model learns without its pretraining")
row = st.columns(4)
fields["dataset"] = row[0].selectbox("Dataset", labelled, index=ui.option_index(labelled, DEFAULTS.dataset))
fields["label_fraction"] = row[1].number_input("Label fraction", min_value=0.0, max_value=1.0,
                                               value=DEFAULTS.label_fraction, step=0.05,
                                               help="Share of the training labels used (low-resource runs)")
fields["max_length"] = row[2].number_input("Max length (tokens)", min_value=0, max_value=512,
                                           value=DEFAULTS.max_length, step=16)
fields["batch_size"] = row[3].number_input("Batch size", min_value=0, value=DEFAULTS.batch_size, step=8)

st.subheader("Strategy")
strategies = get_args(Strategy)
row = st.columns([2, 1, 3])
fields["strategy"] = row[0].selectbox("Strategy", strategies, format_func=lambda s: s.replace("_", " "))
row[2].caption(f"**{fields['strategy'].replace('_', ' ')}**: {STRATEGY_HELP[fields['strategy']]}.")
if fields["strategy"] == "freeze_bottom":
    fields["freeze_layers"] = row[1].number_input("Frozen layers (k)", min_value=0, value=2)
elif fields["strategy"] == "gradual_unfreeze":
    fields["unfreeze_every_steps"] = row[1].number_input("Unfreeze every N steps", min_value=0, value=0,
                                                         help="0: one more layer group per epoch")
elif fields["strategy"] == "discriminative":
    fields["layer_decay"] = row[1].number_input("Layer lr decay", min_value=0.0, max_value=1.0,
                                                value=DEFAULTS.layer_decay, step=0.05)

st.subheader("Training")
row = st.columns(5)
fields["epochs"] = row[0].number_input("Epochs", min_value=0, value=DEFAULTS.epochs)
fields["max_steps"] = row[1].number_input("Max steps (0: all epochs)", min_value=0, value=DEFAULTS.max_steps,
                                          step=50)
fields["eval_every"] = row[2].number_input(
    "Evaluate every (steps)", min_value=0, value=DEFAULTS.eval_every, step=10,
    help=f"0: {DEFAULTS.eval_count} evaluations spread evenly over the task, plus one before the first step")
fields["log_every"] = row[3].number_input("Log every (steps)", min_value=0, value=DEFAULTS.log_every, step=5)
fields["early_stopping_patience"] = row[4].number_input("Early-stop patience (0: off)", min_value=0,
                                                        value=DEFAULTS.early_stopping_patience)
optim = ui.optim_inputs(DEFAULTS.optim, "finetune")
row = st.columns(3)
if row[0].checkbox("Override dropout"):
    fields["dropout"] = row[1].number_input("Dropout", min_value=0.0, max_value=0.99, value=0.1, step=0.05)

with st.expander("Forgetting: probes and mitigations"):
    row = st.columns(4)
    fields["probe_mlm"] = row[0].checkbox("MLM probe", value=DEFAULTS.probe_mlm,
                                          help="Masked-LM loss on general text (when the model has an MLM head)")
    fields["probe_drift"] = row[1].checkbox("Drift probe (CKA)", value=DEFAULTS.probe_drift,
                                            help="Similarity of the encoder's representations to its start")
    corpora = [d.name for d in datasets]
    fields["probe_corpus"] = row[2].selectbox("Probe corpus", corpora,
                                              index=ui.option_index(corpora, DEFAULTS.probe_corpus))
    fields["probe_size"] = row[3].number_input("Probe texts", min_value=0, value=DEFAULTS.probe_size, step=32)
    row = st.columns(3)
    fields["replay_fraction"] = row[0].number_input("Replay fraction", min_value=0.0, max_value=0.99,
                                                    value=DEFAULTS.replay_fraction, step=0.05,
                                                    help="Share of each batch replayed from the source")
    fields["replay_source"] = row[1].selectbox("Replay source", ["task", "mlm"],
                                               help="task: the earlier task (sequential runs); mlm: MLM batches")
    fields["l2sp"] = row[2].number_input("L2-SP strength", min_value=0.0, value=DEFAULTS.l2sp, step=0.01,
                                         help="Pulls the weights toward the starting checkpoint")

with st.expander("Sequential fine-tuning: a second task afterwards"):
    row = st.columns(2)
    then = row[0].selectbox("Then fine-tune on", [NO_SECOND_TASK, *labelled])
    fields["then_dataset"] = None if then == NO_SECOND_TASK else then
    fields["then_epochs"] = row[1].number_input("Epochs on the second task", min_value=0,
                                                value=DEFAULTS.then_epochs)

st.subheader("Run")
run_fields, seeds = ui.run_inputs("finetune")
fields.update(run_fields)

train_rows = {d.name: d.splits["train"] for d in datasets}
examples = round(train_rows[fields["dataset"]] * fields["label_fraction"])
steps = ui.finetune_steps(examples, fields["batch_size"], fields["epochs"], fields["max_steps"],
                          round(train_rows.get(fields["then_dataset"], 0) * fields["label_fraction"]),
                          fields["then_epochs"])
st.caption(f"≈ {steps:,} optimizer steps on {examples:,} labelled training examples"
           + (f", then {fields['then_dataset']}." if fields["then_dataset"] else "."))

if fields["base"] is None:
    st.info("Choose the model to start from.")
else:
    ui.launch_button(lambda: ui.build_configs("finetune", fields, optim, seeds), ui.parent_of(fields["base"]))
