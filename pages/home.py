"""Home: what the lab is for, where to start, the engine's devices and queue, the latest runs."""

import pandas as pd
import streamlit as st

from ptft_core import ui

ui.require_frame()

lab = ui.lab()

st.title(":material/science: ptft lab")
st.markdown(
    "ptft is a lab for **pretraining** small transformers with masked-language modelling and **fine-tuning** "
    "them (or the built-in MiniLM) on text classification, all from this browser. "
    "Every run trains in its own process and streams its metrics here live, so you can watch it learn. "
    "Then compare runs side by side: how fast they converge, whether they overfit, and how much general "
    "knowledge fine-tuning makes them forget."
)

if ui.read_only():  # a demo: what there is to see (its page list has no training forms)
    st.subheader("What to look at")
    links = st.columns(3)
    links[0].page_link("pages/runs.py", label="Runs, training live", icon=":material/list_alt:")
    links[1].page_link("pages/compare.py", label="Compare runs side by side", icon=":material/monitoring:")
    links[2].page_link("pages/studies.py", label="Studies and their reports", icon=":material/science:")
else:
    st.subheader("Start here")
    steps = st.columns(4)
    with steps[0].container(border=True):
        st.markdown("**1 · Pretrain a tiny model**  \nMasked-LM from scratch with the `tiny` preset on wiki + news: "
                    "a few minutes on a CPU.")
        st.page_link("pages/pretrain.py", label="Open Pretrain", icon=":material/school:")
    with steps[1].container(border=True):
        st.markdown("**2 · Fine-tune: pretrained vs scratch**  \nFine-tune `minilm-l6` (or your run) on movies, "
                    "then launch the same config with *scratch baseline* on.")
        st.page_link("pages/finetune.py", label="Open Fine-tune", icon=":material/tune:")
    with steps[2].container(border=True):
        st.markdown("**3 · Compare**  \nPick both runs: convergence, overfitting and forgetting views, a config "
                    "diff, and a link to share.")
        st.page_link("pages/compare.py", label="Open Compare", icon=":material/monitoring:")
    with steps[3].container(border=True):
        st.markdown("**4 · Or run a whole study**  \nSix planned questions (does pretraining help? how much is "
                    "forgotten?) with seeds, lineage and a report whose conclusions come from the runs.")
        st.page_link("pages/studies.py", label="Open Studies", icon=":material/science:")
        st.page_link("pages/sweeps.py", label="Or sweep a config's settings", icon=":material/tune:")

left, right = st.columns([3, 2])
with left:
    st.subheader("Recent runs")
    runs = lab.list_runs()
    if runs.empty:
        st.info("No runs yet: start with step 1 above.")
    else:
        st.dataframe(ui.runs_table(runs.head(8)), hide_index=True, column_config=ui.RUNS_COLUMN_CONFIG)
        st.page_link("pages/runs.py", label=f"All {len(runs)} runs", icon=":material/list_alt:")
with right:
    st.subheader("Devices")
    devices = pd.DataFrame(lab.devices())
    st.dataframe(
        devices.assign(busy=[f"{b}/{s}" for b, s in zip(devices["busy"], devices["slots"], strict=True)])[
            ["device", "description", "busy"]],
        hide_index=True,
    )
    st.subheader("Queue")
    queue = lab.queue()
    if queue:
        st.dataframe(pd.DataFrame(queue)[["name", "kind", "priority", "needs"]], hide_index=True)
    else:
        st.caption("Nothing waiting.")
