"""Pretrain: a preset of any family from scratch (with a fresh tokenizer) or further pretraining of a
checkpoint, with the family's objective, and an estimate of the tokens and the time before launching."""

import streamlit as st

from ptft_core import ui
from ptft_core.config import FAMILY_OBJECTIVE, OBJECTIVE_TITLE, PRESETS, PretrainConfig, field_spec
from ptft_core.specs import parent_run

ui.require_frame()

st.title("Pretrain")
st.caption("Language-model pretraining. From scratch, a preset of a family (BERT, RoBERTa, DistilBERT, XLNet: "
           "masked LM; GPT-2: causal LM; T5: span corruption) learns its tokenizer and its weights from the "
           "corpus; further pretraining continues a checkpoint on new text (domain adaptation) with its own "
           "objective. The final checkpoint can then be fine-tuned.")

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
