"""The ptft lab dashboard: `streamlit run app.py` (or `make run`).

This file is the router and the frame around every page: page config, the navigation, the client of the lab
service (one per process, cached; the service owns the engine and the run store) and the sidebar's live
status. The pages live in pages/ and hold only widgets; the work is in ptft_core. Nothing here imports torch
(the Inspect page loads it on demand).
"""

import streamlit as st

from ptft_core import ui

st.set_page_config(page_title="ptft lab", page_icon=":material/science:", layout="wide")
# An unexpected error shows its type and a generic message in the browser; the traceback goes to the server log.
st.set_option("client.showErrorDetails", "type")
# Less empty space above each page's title (Streamlit's default top padding is sized for a header bar).
st.html("<style>[data-testid='stMainBlockContainer'] {padding-top: 2.5rem;}</style>")

# The pages by role: a read-only demo (a viewer's dashboard) has no forms its visitors could not use.
TRAIN = [
    st.Page("pages/pretrain.py", title="Pretrain", icon=":material/school:"),
    st.Page("pages/finetune.py", title="Fine-tune", icon=":material/tune:", url_path="finetune"),
]
PAGES = {
    "Lab": [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/data.py", title="Data", icon=":material/dataset:"),
    ],
    **({} if ui.read_only() else {"Train": TRAIN}),
    "Analyse": [
        st.Page("pages/runs.py", title="Runs", icon=":material/list_alt:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/monitoring:"),
        st.Page("pages/inspect.py", title="Inspect", icon=":material/visibility:"),
        st.Page("pages/arena.py", title="Arena", icon=":material/compare:"),
        st.Page("pages/studies.py", title="Studies", icon=":material/science:"),
        st.Page("pages/sweeps.py", title="Sweeps", icon=":material/stacked_line_chart:"),
    ],
}

page = st.navigation(PAGES)
ui.enter_frame([p for section in PAGES.values() for p in section])
with st.sidebar:
    if ui.read_only():
        st.warning("Read-only demo: launch, cancel and delete are off.", icon=":material/lock:")
lab = ui.lab()


@st.fragment(run_every=5)
def sidebar_status() -> None:
    active = lab.list_runs(status=list(ui.ACTIVE))
    running = int((active["status"] == "running").sum())
    st.caption(f"{ui.STATUS_ICONS['running']} {running} running · {ui.STATUS_ICONS['queued']} "
               f"{len(active) - running} queued")


with st.sidebar:
    sidebar_status()

page.run()
