"""Studies: templates that answer one question with a group of runs, their progress, and their reports (charts and
conclusions computed from the runs, downloadable as one self-contained HTML file).

Thin: the plans, the dependency handling and the reports live in ptft_core.studies (no SQL, no torch here).
"""

import streamlit as st

from ptft_core import ui
from ptft_core.studies.costs import estimate_seconds
from ptft_core.studies.driver import study_report
from ptft_core.studies.report import report_html
from ptft_core.studies.templates import STUDY_PRESETS, build_runs, list_templates

ui.require_frame()

lab = ui.lab()  # the service drives launched studies: they move on with no page open
read_only = ui.read_only()
devices = lab.devices()
cpu_slots = max(1, sum(d["slots"] for d in devices if d["kind"] == "cpu"))
has_gpu = any(d["kind"] == "cuda" for d in devices)

st.title("Studies")
st.caption("A study launches a planned group of runs (with lineage: pretrain → further pretrain → fine-tune) and, "
           "as they finish, fills a report whose conclusions are computed from the runs: means ± std over seeds.")

tab_templates, tab_studies = st.tabs(["Templates", "Studies and reports"])

# --- templates -----------------------------------------------------------------------------------------------------
with tab_templates:
    if read_only:
        ui.launch_disabled_note()
    for t in list_templates():
        with st.container(border=True):
            st.subheader(t.title)
            st.markdown(f"**{t.question}**")
            st.write(t.description)
            st.caption(f"Expected from the literature: {t.expectation}")
            estimates = []
            for preset in STUDY_PRESETS:
                runs = build_runs(t.name, preset)
                cpu = estimate_seconds(runs, slots=cpu_slots)
                gpu = estimate_seconds(runs, device="cuda")
                estimates.append(f"**{preset}**: {len(runs)} runs, about {ui.format_duration(cpu)} on this CPU"
                                 + (f", roughly {ui.format_duration(gpu)} on the GPU" if has_gpu else
                                    f" (roughly {ui.format_duration(gpu)} on a GPU)"))
            st.markdown(" · ".join(estimates))
            if read_only:
                continue
            cols = st.columns([1, 2, 1])
            preset = cols[0].radio("Preset", STUDY_PRESETS, horizontal=True, key=f"preset-{t.name}",
                                   help="quick: about 15 min on a 2-core CPU (fewer seeds and steps); full: for a GPU")
            name = cols[1].text_input("Name (optional)", key=f"name-{t.name}", placeholder=f"{t.name} ({preset})")
            if cols[2].button("Launch", type="primary", icon=":material/rocket_launch:", key=f"launch-{t.name}"):
                try:
                    study_id = lab.launch_study(t.name, preset, name=name.strip() or None)
                except (ValueError, OSError) as exc:
                    ui.show_error("Not launched", exc)
                else:
                    ui.set_params(study=study_id)
                    st.success(f"Study {study_id} launched: see Studies and reports.", icon=":material/rocket_launch:")

# --- studies and the report ------------------------------------------------------------------------------------------
with tab_studies:

    @st.fragment(run_every=5)
    def progress_table() -> None:
        studies = lab.study_table()
        if studies.empty:
            st.info("No study yet: launch one from Templates.")
            return
        studies["remaining"] = [ui.format_duration(s) if not f else "" for s, f in
                                zip(studies["remaining_s"], studies["finished"], strict=True)]
        st.dataframe(studies[["name", "template", "preset", "created", "progress", "remaining", "id"]],
                     hide_index=True)

    progress_table()
    studies = lab.study_table()
    if studies.empty:
        st.stop()
    ids = studies["id"].tolist()
    names = dict(zip(studies["id"], studies["name"], strict=True))
    selected = st.selectbox("Report of", ids, index=ui.option_index(ids, ui.param("study")),
                            format_func=lambda sid: f"{names[sid]} · {sid}")
    ui.set_params(study=selected)
    progress = lab.study_progress(selected)
    report = study_report(lab, selected)

    st.header(report.title)
    st.markdown(f"*{report.question}*")
    if report.status == "complete":
        st.success(report.status_line, icon=":material/check_circle:")
    else:
        st.warning(report.status_line + ("" if progress.finished else
                                         f" · about {ui.format_duration(progress.remaining_s)} left"),
                   icon=":material/pending:")
    st.subheader("Conclusions")
    st.markdown(f"**{report.conclusions['headline']}**")
    for finding in report.conclusions["findings"]:
        if finding != report.conclusions["headline"]:
            st.markdown(f"- {finding}")
    for caveat in report.conclusions["caveats"]:
        st.caption(f"⚠️ {caveat}")
    st.caption(f"Expected from the literature: {report.expectation}")
    st.download_button("Download the report (HTML, self-contained)", lambda: report_html(report),
                       f"{selected}.html", "text/html", on_click="ignore", icon=":material/download:",
                       key=f"html-{selected}")

    st.subheader("Charts")
    for key, fig in report.figures.items():
        st.plotly_chart(fig, theme=None, key=f"fig-{selected}-{key}")
    st.subheader("Tables")
    for key, table in report.tables.items():
        st.markdown(f"**{key.replace('_', ' ')}**")
        st.dataframe(table, hide_index=table.index.name is None)
    if not report.failed.empty:
        st.subheader("Runs that did not finish")
        st.dataframe(report.failed, hide_index=True)
    with st.expander("Runs and their configs"):
        for row in report.runs.to_dict("records"):
            st.markdown(f"`{row['key']}` · {row['run_id'] or 'not submitted'} · {row['status']}")
            st.json(row["config"], expanded=False)
    with st.expander("Environment"):
        st.json(report.env)
