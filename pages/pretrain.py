"""Pretrain: masked-LM from scratch (a preset and a fresh WordPiece vocabulary) or further pretraining of a
checkpoint, with an estimate of the tokens and the time before launching."""

import streamlit as st

from ptft_core import ui
from ptft_core.config import PRESETS, PretrainConfig

ui.require_frame()

DEFAULTS = PretrainConfig()

st.title("Pretrain")
st.caption("Masked-language-model pretraining. From scratch, a preset BERT learns a WordPiece vocabulary and "
           "its weights from the corpus; further pretraining continues a checkpoint on new text (domain "
           "adaptation). The final checkpoint can then be fine-tuned.")

st.subheader("Model")
mode = st.radio("Start", ["From scratch", "Further pretraining of a checkpoint"], horizontal=True,
                label_visibility="collapsed")
fields = {}
if mode == "From scratch":
    left, right = st.columns(2)
    fields["model"] = left.selectbox("Preset", PRESETS, index=PRESETS.index(DEFAULTS.model),
                                     help="tiny: 2 layers x 128; mini: 4 x 256; small: 4 x 512; base: 12 x 768")
    fields["vocab_size"] = right.number_input("Vocabulary size", min_value=0, max_value=100_000,
                                              value=DEFAULTS.vocab_size, step=1000)
else:
    fields["model"] = ui.checkpoint_picker("Checkpoint", "pretrain-base")

st.subheader("Data")
corpora = [d.name for d in ui.datasets_or_stop()]
left, right, third = st.columns(3)
fields["corpus"] = left.multiselect("Corpus", corpora, default=[c for c in DEFAULTS.corpus if c in corpora],
                                    help="Any dataset's text; labels are ignored")
fields["block_size"] = right.number_input("Block size (tokens)", min_value=0, max_value=512,
                                          value=DEFAULTS.block_size, step=32)
fields["mask_prob"] = third.number_input("Masking rate", min_value=0.0, max_value=1.0, value=DEFAULTS.mask_prob,
                                         step=0.05)

st.subheader("Training")
row = st.columns(4)
fields["max_steps"] = row[0].number_input("Steps", min_value=0, value=DEFAULTS.max_steps, step=100)
fields["batch_size"] = row[1].number_input("Batch size", min_value=0, value=DEFAULTS.batch_size, step=8)
fields["eval_every"] = row[2].number_input(
    "Evaluate every (steps)", min_value=0, value=DEFAULTS.eval_every, step=10,
    help=f"0: {DEFAULTS.eval_count} evaluations spread evenly over the run, plus one before the first step")
fields["log_every"] = row[3].number_input("Log every (steps)", min_value=0, value=DEFAULTS.log_every, step=5)
optim = ui.optim_inputs(DEFAULTS.optim, "pretrain")
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
           + ("A GPU run is much faster." if ui.engine().pool.has_gpu else ""))

if fields["model"] is None:
    st.info("Choose the checkpoint to continue from.")
else:
    ui.launch_button(lambda: ui.build_configs("pretrain", fields, optim, seeds), ui.parent_of(fields["model"]))
