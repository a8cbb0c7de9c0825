"""Sweeps: search a config space with early stopping of bad trials, then see which settings matter and which trial
is best. Optuna samples and prunes; the trials are ordinary runs (Runs and Compare show them like any other).

Thin: the spec, the driver and the figures live in ptft_core (sweeps, plots); no SQL, no torch here. The service
drives launched sweeps: they move on with no page open.
"""

import streamlit as st
import yaml

from ptft_core import paths, plots, ui
from ptft_core.sweeps.spec import spec_from_dict, spec_to_dict

ui.require_frame()

lab = ui.lab()
read_only = ui.read_only()
EXAMPLES = sorted((paths.REPO_ROOT / "configs" / "sweeps").glob("*.yaml"))

st.title("Sweeps")
st.caption("A sweep searches a config's settings: Optuna proposes each trial (random, grid or TPE), the lab runs "
           "it as an ordinary run, and a pruner (median rule or ASHA) stops the trials that fall behind at a "
           "validation step. Pruned trials keep their metrics and checkpoint.")

tab_sweeps, *tab_launch = st.tabs(["Sweeps and trials", *([] if read_only else ["Launch"])])

# --- launch (not in a read-only demo) ------------------------------------------------------------------------------
for tab in tab_launch:
    with tab:
        st.markdown("A spec names a **base** run config, the **space** (config fields with a range — `log: true` "
                    "for a log scale — or a list of choices), the **objective** (a validation metric), the "
                    "**sampler**, the **pruner**, **n_trials** and how many run at once (**parallel**). The same "
                    "file runs from the terminal: `python -m ptft_core sweep SPEC.yaml`.")
        example = st.selectbox("Start from an example", EXAMPLES, format_func=lambda p: p.stem)
        text = st.text_area("Sweep spec (YAML)", value=example.read_text(encoding="utf-8"), height=420,
                            key=f"spec-{example.stem}")
        name = st.text_input("Name (optional)", placeholder="the spec's name")
        if st.button("Launch", type="primary", icon=":material/rocket_launch:"):
            try:
                spec = spec_from_dict(yaml.safe_load(text), example.parent)  # every problem before anything runs
                sweep_id = lab.launch_sweep(spec_to_dict(spec), name=name.strip() or None)
            except yaml.YAMLError as exc:
                ui.show_error("Not launched: the spec is not valid YAML", exc)
            except (ValueError, OSError) as exc:
                ui.show_error("Not launched", exc)
            else:
                ui.set_params(sweep=sweep_id)
                st.success(f"Sweep {sweep_id} launched: see Sweeps and trials.", icon=":material/rocket_launch:")

# --- sweeps and their trials -----------------------------------------------------------------------------------------
with tab_sweeps:

    @st.fragment(run_every=5)
    def sweep_table() -> None:
        sweeps = lab.sweep_table()
        if sweeps.empty:
            st.info("No sweep yet: launch one from Launch (or `python -m ptft_core sweep configs/sweeps/tiny.yaml`).")
            return
        st.dataframe(sweeps[["name", "status", "progress", "created", "id"]], hide_index=True)

    sweep_table()
    sweeps = lab.sweep_table()
    if sweeps.empty:
        st.stop()
    ids = sweeps["id"].tolist()
    names = dict(zip(sweeps["id"], sweeps["name"], strict=True))
    selected = st.selectbox("Sweep", ids, index=ui.option_index(ids, ui.param("sweep")),
                            format_func=lambda sid: f"{names[sid]} · {sid}")
    ui.set_params(sweep=selected)
    spec = lab.get_sweep(selected)["spec"]
    finished = lab.sweep_progress(selected).finished

    @st.fragment(run_every=None if finished else 5)
    def sweep_view(sweep_id: str) -> None:
        """The selected sweep as it stands: reads only, redrawn every 5 s until it is finished."""
        progress = lab.sweep_progress(sweep_id)
        trials = lab.sweep_trials(sweep_id)
        line = progress.line()
        if progress.status == "done":
            st.success(line, icon=":material/check_circle:")
        elif progress.status == "running":
            st.info(line, icon=":material/pending:")
        else:
            st.warning(line, icon=":material/warning:")
        maximize = progress.direction == "maximize"
        cols = st.columns(4)
        cols[0].metric("Trials", f"{len(trials)}/{progress.n_trials}")
        cols[1].metric("Completed", progress.counts.get("completed", 0))
        cols[2].metric("Pruned", progress.counts.get("pruned", 0), help="stopped early by the pruner; never failed")
        cols[3].metric(f"Best {progress.metric}", "—" if progress.best_value is None else f"{progress.best_value:.4g}",
                       help=f"validation {progress.metric}, {'higher' if maximize else 'lower'} is better")
        if progress.best_run:
            links = st.container(horizontal=True)
            links.page_link("pages/compare.py", label=f"Open the best trial (#{progress.best_trial}) in Compare",
                            icon=":material/monitoring:", query_params={"runs": progress.best_run})
            links.page_link("pages/compare.py", label="Compare every trial", icon=":material/stacked_line_chart:",
                            query_params={"tag": f"sweep:{sweep_id}"})
            st.caption("Best settings: " + ", ".join(f"`{k}` = {v:.4g}" if isinstance(v, float) else f"`{k}` = {v}"
                                                     for k, v in progress.best_params.items()))
        ui.chart(plots.sweep_history_figure(trials, progress.metric, maximize), f"{sweep_id}-history",
                 key=f"history-{sweep_id}")
        ui.chart(plots.parallel_coordinates_figure(trials, spec["space"], progress.metric, maximize),
                 f"{sweep_id}-parallel", key=f"parallel-{sweep_id}")
        effects = lab.sweep_effects(sweep_id)
        ui.chart(plots.effects_figure(effects), f"{sweep_id}-effects", key=f"effects-{sweep_id}")
        st.caption("R²: the share of the trials' objective that the field's value alone explains (a quadratic in "
                   "it, log scale for a log range; group means for choices). p: the share of 999 shuffles of the "
                   "field's values that explain as much, Holm-adjusted over the fields; n.s. = not "
                   "distinguishable from no effect at 0.05. Where trials were pruned, the second view compares "
                   "every trial at the step the pruner judged them (the same step for all), which favours "
                   "settings that learn fast.")
        st.subheader("Trials")
        # Plain states: a table cell shows a `:material/...:` icon code as its text, not as an icon.
        st.dataframe(trials.drop(columns=["status"]), hide_index=True, column_config={
            "value": st.column_config.NumberColumn(f"validation {progress.metric}", format="%.4g"),
            "step": st.column_config.NumberColumn("last step", format="%d"),
            "prune_step": st.column_config.NumberColumn("pruned at", format="%d"),
            "seconds": st.column_config.NumberColumn("seconds", format="%.0f"),
        })

    sweep_view(selected)
    if not read_only and not finished and st.button("Cancel the sweep", icon=":material/stop:",
                                                    help="No more trials; the running ones stop (each saves a "
                                                         "checkpoint)"):
        cancelled = lab.cancel_sweep(selected)
        st.toast(f"Sweep cancelled ({len(cancelled)} trial runs stopping)", icon=":material/stop:")
    with st.expander("Spec"):
        st.json(spec)
