"""Sweeps: the spec's validation (unknown fields and bad ranges named), the sweep figures, the `pruned` state of a
run (through the engine: reason, metrics and checkpoint kept, never failed, also across an engine restart), a
sweep finishing across a `kill -9` of the service with every trial accounted for once (stand-in trainer), and the
tiny 8-trial ASHA sweep end to end from the CLI with real training."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pandas as pd
import psutil
import pytest

from ptft_core import paths, plots
from ptft_core.config import ConfigError
from ptft_core.rundir import RunDir
from ptft_core.store import Store
from ptft_core.sweeps.spec import load_spec, spec_from_dict
from tests.conftest import stop_lab, wait_for

REPO = paths.REPO_ROOT
FINETUNE = {"kind": "finetune", "base": "tiny", "dataset": "amazon", "label_fraction": 0.1}


def spec(space, **fields):
    return spec_from_dict({"base": FINETUNE, "space": space, **fields})


# --- the spec ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("space, fields, message", [
    ({"optim.lrr": {"low": 1e-5, "high": 1e-3}}, {},
     "space.optim.lrr: unknown field of a finetune config; did you mean 'optim.lr'?"),
    ({"optim.lr": {"low": 1e-3, "high": 1e-5}}, {}, "space.optim.lr: low must be < high (got low=0.001, high=1e-05)"),
    ({"layer_decay": {"low": 0.5, "high": 0.5}}, {}, "space.layer_decay: low must be < high"),
    ({"optim.lr": {"low": 0, "high": 1e-3, "log": True}}, {}, "space.optim.lr: a log range needs low > 0 (got low=0)"),
    ({"strategy": ["full", "sideways"]}, {}, "space.strategy: value \"sideways\": strategy: must be one of 'full'"),
    ({"strategy": []}, {}, "space.strategy: values: give at least one choice"),
    ({"label_fraction": {"low": 0.1, "high": 1.5}}, {},
     "space.label_fraction: high: label_fraction: must be <= 1 (got 1.5)"),  # the config's own bound speaks
    ({"batch_size": {"low": 8.5, "high": 32}}, {}, "space.batch_size: batch_size is a whole number"),
    ({"strategy": {"low": 1, "high": 2}}, {}, "space.strategy: a choice field takes values: [...], not a range"),
    ({"optim": {"low": 1, "high": 2}}, {}, "space.optim: a group of fields; search its fields (optim.optimizer, "),
    ({"name": ["a", "b"]}, {}, "space.name: not a setting to search"),
    ({"optim.lr": {"low": 1e-5, "high": 1e-3}}, {"sampler": "grid"}, "space.optim.lr: the grid sampler needs"),
    ({"optim.lr": {"low": 1e-5, "high": 1e-3}}, {"objective": {"metric": "perplexity"}},
     "objective.metric: a finetune run's validation metrics are accuracy, loss"),
    ({"optim.lr": {"low": 1e-5, "high": 1e-3}}, {"samplr": "tpe"}, "samplr: unknown field; did you mean 'sampler'?"),
    ({"optim.lr": {"low": 1e-5, "high": 1e-3}}, {"pruner": "hyperband"}, "pruner.type: must be one of 'none'"),
    ({"optim.lr": {"low": 1e-5, "high": 1e-3}}, {"n_trials": 0}, "n_trials: must be >= 1 (got 0)"),
    ({}, {}, "space: must have at least 1 item(s)"),
    ({"optim.lr": {"low": 1e-5, "high": 1e-3}}, {"enqueue": [{"optim.lrr": 1e-4}]},
     "enqueue[0].optim.lrr: not a searched field (the space has optim.lr)"),
    ({"optim.lr": {"low": 1e-5, "high": 1e-3}}, {"enqueue": [{"optim.lr": 1e-4}, {"optim.lr": 2e-3}]},
     "enqueue[1].optim.lr: 0.002 is outside the range [1e-05, 0.001]"),
    ({"strategy": ["full", "discriminative"]}, {"enqueue": [{"strategy": "sideways"}]},
     "enqueue[0].strategy: \"sideways\" is not one of [\"full\", \"discriminative\"]"),
    ({"optim.lr": {"low": 1e-5, "high": 1e-3}}, {"n_trials": 1, "enqueue": [{"optim.lr": 1e-4}] * 2},
     "enqueue: 2 trials, more than the sweep's 1"),
])
def test_the_spec_names_what_is_wrong(space, fields, message):
    with pytest.raises(ConfigError) as caught:
        spec(space, **fields)
    assert message in str(caught.value), str(caught.value)


def test_the_spec_names_every_problem_and_a_bad_base():
    with pytest.raises(ConfigError) as caught:
        spec({"optim.lrr": {"low": 1, "high": 2}, "optim.lr": {"low": 1, "high": 0.1}})
    assert "space.optim.lrr: unknown field" in str(caught.value) and "space.optim.lr: low must be < high" in str(
        caught.value)
    with pytest.raises(ConfigError, match=r"base: label_fraction: must be <= 1 \(got 2\)"):
        spec_from_dict({"base": {**FINETUNE, "label_fraction": 2}, "space": {"optim.lr": {"low": 1e-5, "high": 1}}})
    with pytest.raises(ConfigError, match="base.kind: a sweep tunes a training run"):
        spec_from_dict({"base": {"kind": "evaluate", "model": "run:x", "datasets": ["movies"]},
                        "space": {"seed": {"low": 0, "high": 3}}})


def test_a_valid_spec_types_its_space_and_builds_each_trial_config(tmp_path):
    s = spec({"optim.lr": {"low": 1e-5, "high": 1e-3, "log": True}, "batch_size": {"low": 8, "high": 32, "step": 8},
              "strategy": ["full", "discriminative"]}, objective={"metric": "accuracy"})
    assert s.maximize and s.trials == 20 and s.sampler == "tpe" and s.pruner.type == "asha"
    assert isinstance(s.space["batch_size"].low, int) and s.space["strategy"].values == ["full", "discriminative"]
    config = s.trial_config({"optim.lr": 3e-4, "batch_size": 16, "strategy": "full"})
    assert config["optim"]["lr"] == 3e-4 and config["batch_size"] == 16 and config["dataset"] == "amazon"
    assert not spec({"optim.lr": {"low": 1e-5, "high": 1e-3}}).maximize  # loss: minimized
    grid = spec({"strategy": ["full", "discriminative"], "batch_size": {"low": 8, "high": 16, "step": 8}},
                sampler="grid", n_trials=100)
    assert grid.trials == 4 and grid.grid() == {"strategy": ["full", "discriminative"], "batch_size": [8, 16]}
    # `base` may be a run config file, relative to the spec.
    (tmp_path / "base.yaml").write_text("kind: pretrain\nmodel: tiny\nmax_steps: 10\n")
    (tmp_path / "sweep.yaml").write_text("base: base.yaml\nspace: {optim.lr: {low: 1.0e-4, high: 1.0e-2}}\n")
    assert load_spec(tmp_path / "sweep.yaml").base["max_steps"] == 10
    (tmp_path / "bad.yaml").write_text("base: base.yaml\nspace: {optim.lr: {low: 1.0e-2, high: 1.0e-4}}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: space.optim.lr: low must be < high"):
        load_spec(tmp_path / "bad.yaml")


def test_the_example_specs_are_valid():
    specs = {p.stem: load_spec(p) for p in sorted((REPO / "configs" / "sweeps").glob("*.yaml"))}
    assert set(specs) >= {"tiny", "minilm_lr_decay", "strategy_lr_decay"}
    tiny = specs["tiny"]
    assert (tiny.trials, tiny.parallel, tiny.pruner.type, tiny.base["model"]) == (8, 2, "asha", "tiny")
    assert set(specs["minilm_lr_decay"].space) == {"optim.lr", "layer_decay"}
    assert specs["minilm_lr_decay"].base["label_fraction"] == 0.1
    assert set(specs["strategy_lr_decay"].space) == {"strategy", "optim.lr", "layer_decay"}


# --- the figures -----------------------------------------------------------------------------------------------


def trials_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "trial": [0, 1, 2, 3, 4], "state": ["completed", "pruned", "completed", "completed", "running"],
        "run_id": ["a", "b", "c", "d", "e"], "value": [0.7, 0.55, 0.8, 0.75, 0.6], "step": [40, 10, 40, 40, 20],
        "optim.lr": [1e-4, 1e-3, 3e-5, 2e-4, 5e-4], "strategy": ["full", "full", "discriminative", "full", "full"],
    })


def test_the_sweep_figures_build_from_the_trials_table():
    trials = trials_frame()
    history = plots.sweep_history_figure(trials, "accuracy", maximize=True)
    names = [t.name for t in history.data]
    assert names == ["completed", "pruned", "running", "best so far"]
    assert list(history.data[1].x) == [1] and history.data[1].marker.symbol == "x"
    assert list(history.data[-1].y) == [0.7, 0.8, 0.8]  # best so far over the completed trials
    space = {"optim.lr": {"low": 1e-5, "high": 1e-3, "log": True, "values": None},
             "strategy": {"low": None, "high": None, "log": False, "values": ["full", "discriminative"]}}
    parcoords = plots.parallel_coordinates_figure(trials, space, "accuracy", maximize=True).data[0]
    lr, strategy, steps, objective = parcoords.dimensions  # every trial with a value, pruned and running ones too
    assert lr.label == "optim.lr (log)" and list(lr.values) == pytest.approx(
        [-4, -3, -4.5229, -3.699, -3.301], abs=1e-3)
    assert list(lr.ticktext) == ["1e-5", "1e-4", "1e-3"]
    assert list(strategy.values) == [0, 0, 1, 0, 0] and list(strategy.ticktext) == ["full", "discriminative"]
    assert steps.label == "steps trained" and list(steps.values) == [40, 10, 40, 40, 20]
    assert list(objective.values) == [0.7, 0.55, 0.8, 0.75, 0.6]
    color = list(parcoords.line.color)  # grey (0) for the unfinished; the best completed brightest (1)
    assert color[1] == color[4] == 0 and color[2] == 1 and 0 < color[0] < color[3] < 1
    minimize = plots.parallel_coordinates_figure(trials, space, "loss", maximize=False).data[0]
    assert list(minimize.line.color)[0] == 1  # lower is better: the lowest completed value brightest
    finished = plots.parallel_coordinates_figure(trials[trials["state"] == "completed"], space, "accuracy",
                                                 maximize=True).data[0]
    assert [d.label for d in finished.dimensions] == ["optim.lr (log)", "strategy", "validation accuracy"]
    assert list(finished.line.color) == [0, 1, 0.5] and "not finished" not in finished.line.colorbar.ticktext
    empty = trials.assign(state="running", value=None)
    for fig in (plots.sweep_history_figure(empty, "loss", False),
                plots.parallel_coordinates_figure(empty, space, "loss", False),
                plots.effects_figure(pd.DataFrame(columns=["view", "field", "n", "r2", "p", "p_holm"]))):
        assert fig.layout.annotations  # says what is missing instead of empty axes


# --- the pruned state, through the engine (stand-in trainer) --------------------------------------------------------


def fake(steps: int = 60, every: int = 5):
    return {"kind": "pretrain", "name": "fake", "max_steps": steps, "eval_every": every}


@pytest.mark.slow
def test_a_pruned_run_keeps_its_metrics_and_checkpoint_and_is_not_failed(fake_lab):
    from ptft_core.engine import Engine

    with Engine(home=fake_lab, cpu_slots=1) as engine:
        engine.start()
        run_id = engine.submit(fake(steps=200))
        wait_for(lambda: not engine.store.artifacts(run_id).empty, 60, "the run's first checkpoint")
        reason = "pruned at step 5: validation loss 4.4, not in the top 1/2 of the trials at this rung (ASHA)"
        assert engine.prune(run_id, reason, wait=30) == "pruned"
        row = engine.store.get_run(run_id)
        assert row["status"] == "pruned" and row["error"] == reason and row["finished_at"] is not None
        assert 0 < row["step"] < 200
        assert len(engine.store.metric_series([run_id], names=["loss"], splits=["validation"])) >= 1
        assert RunDir(engine.run_dir(run_id)).saved_checkpoints()  # its checkpoint, to resume or inspect
        assert engine.store.list_runs(status="failed").empty
        assert engine.prune(run_id, "again") == "pruned"  # a finished run: nothing to stop, nothing changes
        assert engine.store.get_run(run_id)["error"] == reason
        engine.resume(run_id)  # like a cancelled run; the next stop is a cancel again
        assert engine.wait([run_id], timeout=60) == {run_id: "completed"}
        assert engine.store.get_run(run_id)["error"] is None
        blocker = engine.submit(fake(steps=400))
        wait_for(lambda: engine.store.get_run(blocker)["status"] == "running", 60, "the blocker to start")
        queued = engine.submit(fake())  # waits for the one slot
        assert engine.prune(queued, "pruned before it started") == "pruned"
        engine.cancel(blocker, wait=30)


@pytest.mark.slow
def test_a_prune_holds_across_a_restart_of_the_engine(fake_lab):
    """The engine asks the worker to stop and closes at once; the worker reports "cancelled" (all it knows) with no
    engine watching; the next engine's recovery reads that as pruned, with the reason."""
    from ptft_core.engine import Engine

    engine = Engine(home=fake_lab, cpu_slots=1)
    run_id = engine.submit(fake(steps=400))
    wait_for(lambda: engine.step() or engine.store.get_run(run_id)["step"] >= 5, 60, "the run to train")
    pid = engine.store.get_run(run_id)["pid"]
    engine.prune(run_id, "pruned at step 5: validation loss 4.4")
    engine.close()
    psutil.Process(pid).wait(timeout=30)
    with Engine(home=fake_lab, cpu_slots=1, launch_queued=False) as again:
        row = again.store.get_run(run_id)
        assert (row["status"], row["error"]) == ("pruned", "pruned at step 5: validation loss 4.4")


def test_ticks_repair_a_trial_asked_but_never_submitted_and_never_exceed_n_trials(fake_lab):
    """No worker runs (the engine launches nothing). A driver asks a trial and dies before submitting it; the next
    driver (a restarted service) submits it with its sampled values, once; a cancelled sweep asks no more, and its
    trials are told as failed once their runs end."""
    from ptft_core.engine import Engine
    from ptft_core.sweeps.driver import SweepDriver, distributions, open_study

    three = {**FAKE_SWEEP, "n_trials": 3, "parallel": 2}
    with Engine(home=fake_lab, cpu_slots=1, launch_queued=False) as engine:
        sweep_id = SweepDriver(engine).launch(three)
        assert len(engine.store.list_runs(tag=f"sweep:{sweep_id}")) == 2  # two at once
        study = open_study(fake_lab, sweep_id, spec_from_dict(three))
        crashed = study.ask(distributions(spec_from_dict(three)))  # asked, then the process died
        driver = SweepDriver(engine)  # the next service's
        assert len(driver.tick()) == 1 and driver.tick() == []
        runs = engine.store.list_runs(tag=f"sweep:{sweep_id}")
        assert sorted(runs["tags"].map(lambda t: next(x for x in t if x.startswith("sweep-trial:")))) == [
            "sweep-trial:0", "sweep-trial:1", "sweep-trial:2"]
        mine = runs[runs["tags"].map(lambda t: "sweep-trial:2" in t)].iloc[0]
        assert json.loads(mine["config"])["seed"] == crashed.params["seed"]
        assert sorted(driver.cancel(sweep_id)) == sorted(runs["id"])
        progress = driver.progress(sweep_id)
        assert progress.finished and progress.status == "cancelled" and progress.counts == {"failed": 3}
        assert driver.tick() == []


@pytest.mark.slow
def test_a_grid_sweep_runs_each_combination_once_and_stops_at_its_size(fake_lab):
    from ptft_core.engine import Engine
    from ptft_core.sweeps.driver import SweepDriver

    grid = {"base": fake(steps=10), "space": {"seed": {"low": 0, "high": 2}, "optim.schedule": ["constant", "linear"]},
            "sampler": "grid", "pruner": {"type": "median", "startup_trials": 2}, "n_trials": 50, "parallel": 2}
    with Engine(home=fake_lab, cpu_slots=2) as engine:
        driver = SweepDriver(engine)
        sweep_id = driver.launch(grid)
        progress = driver.wait(sweep_id, timeout=120)
        trials = driver.view(sweep_id).trials()
    assert progress.status == "done" and progress.n_trials == len(trials) == 6, progress.line()
    assert sorted(zip(trials["seed"], trials["optim.schedule"], strict=True)) == [
        (s, k) for s in range(3) for k in ("constant", "linear")]
    assert engine.max_concurrent <= 2


@pytest.mark.slow
def test_enqueued_trials_run_first_with_their_values_and_count_towards_n_trials(fake_lab):
    """What `bench.sweep_bench` reruns a sweep's trials with: the given values, in order, then sampled ones."""
    from ptft_core.engine import Engine
    from ptft_core.sweeps.driver import SweepDriver

    given = [{"seed": 7, "optim.lr": 2e-3}, {"seed": 11}]  # the second one's lr is sampled
    sweep = {**FAKE_SWEEP, "base": fake(steps=10), "pruner": "none", "n_trials": 3, "parallel": 2, "enqueue": given}
    with Engine(home=fake_lab, cpu_slots=2) as engine:
        driver = SweepDriver(engine)
        sweep_id = driver.launch(sweep)
        progress = driver.wait(sweep_id, timeout=120)
        trials = driver.view(sweep_id).trials().set_index("trial")
        configs = {r["id"]: json.loads(r["config"]) for r in engine.store.list_runs(tag=f"sweep:{sweep_id}")
                   .to_dict("records")}
    assert progress.status == "done" and progress.counts == {"completed": 3}, progress.line()
    assert list(trials.index) == [0, 1, 2]
    assert (trials.loc[0, "seed"], trials.loc[0, "optim.lr"], trials.loc[1, "seed"]) == (7, 2e-3, 11)
    assert 1e-4 <= trials.loc[1, "optim.lr"] <= 1e-2 and trials.loc[2, "seed"] not in (7, 11)
    assert configs[trials.loc[0, "run_id"]]["optim"]["lr"] == 2e-3 and configs[trials.loc[1, "run_id"]]["seed"] == 11


def _report_validation(store, run_id: str, losses: dict[int, float], total_steps: int) -> None:
    """What a worker's journal brings for a run: running, its progress, its validation losses."""
    events = [{"type": "status", "run_id": run_id, "seq": 1, "status": "running", "pid": os.getpid(),
               "device": "cpu", "attempt": 1, "wall_time": 1.0}]
    for step, loss in losses.items():
        events.append({"type": "metric", "run_id": run_id, "seq": len(events) + 1, "step": step, "epoch": 0.0,
                       "split": "validation", "name": "loss", "value": loss, "wall_time": 1.0 + step})
        events.append({"type": "progress", "run_id": run_id, "seq": len(events) + 1, "step": step,
                       "total_steps": total_steps, "wall_time": 1.0 + step})
    store.ingest_events(events, {run_id: 0})


@pytest.mark.slow
@pytest.mark.parametrize("rung, pruned_at", [(5, 5), (10, None)])
def test_the_pruner_is_not_acted_on_at_a_runs_last_step(fake_lab, rung, pruned_at):
    """ASHA with two trials: the worse one is pruned at a rung inside the run (step 5 of 10), but not at a rung
    on its last step, where nothing is left to save and stopping would lose its test score. No worker runs: the
    store gets what the workers' journals would bring."""
    from ptft_core.engine import Engine
    from ptft_core.sweeps.driver import SweepDriver

    sweep = {**FAKE_SWEEP, "base": fake(steps=10), "n_trials": 2, "parallel": 2,
             "pruner": {"type": "asha", "min_resource": rung, "reduction_factor": 2}}
    with Engine(home=fake_lab, cpu_slots=2, launch_queued=False) as engine:
        driver = SweepDriver(engine)
        sweep_id = driver.launch(sweep)
        runs = driver.view(sweep_id).trials().set_index("trial")["run_id"]
        _report_validation(engine.store, runs[0], {5: 3.0, 10: 2.0}, total_steps=10)  # the better one, first
        _report_validation(engine.store, runs[1], {5: 4.0, 10: 3.5}, total_steps=10)
        driver.tick()
        attrs = driver.study(sweep_id).trials[1].user_attrs
        assert attrs.get("prune_step") == pruned_at, attrs
        assert "prune_step" not in driver.study(sweep_id).trials[0].user_attrs


@pytest.mark.slow
def test_a_pruned_trials_later_values_do_not_compete_at_later_rungs(fake_lab):
    """What CI saw prune all 8 trials of a sweep: the loser at rung 5 trains on until its stop lands and logs step
    10, better than the survivor's step 10. The survivor must go on: rung 10 is judged among trials that earned
    it, not against values a pruned trial logged after its prune step. The store gets what the journals bring."""
    from ptft_core.engine import Engine
    from ptft_core.sweeps.driver import SweepDriver

    sweep = {**FAKE_SWEEP, "base": fake(steps=20), "n_trials": 2, "parallel": 2,
             "pruner": {"type": "asha", "min_resource": 5, "reduction_factor": 2}}
    with Engine(home=fake_lab, cpu_slots=2, launch_queued=False) as engine:
        driver = SweepDriver(engine)
        sweep_id = driver.launch(sweep)
        runs = driver.view(sweep_id).trials().set_index("trial")["run_id"]
        _report_validation(engine.store, runs[0], {5: 3.0}, total_steps=20)  # the better one at rung 5
        _report_validation(engine.store, runs[1], {5: 4.0}, total_steps=20)
        driver.tick()
        assert driver.study(sweep_id).trials[1].user_attrs.get("prune_step") == 5
        engine.store.ingest_events([  # the pruned run's step 10 lands before its stop, then the survivor's
            {"type": "metric", "run_id": runs[1], "seq": 10, "step": 10, "epoch": 0.0, "split": "validation",
             "name": "loss", "value": 1.0, "wall_time": 20.0}], {runs[1]: 0})
        driver.tick()
        engine.store.ingest_events([
            {"type": "metric", "run_id": runs[0], "seq": 10, "step": 10, "epoch": 0.0, "split": "validation",
             "name": "loss", "value": 2.5, "wall_time": 21.0}], {runs[0]: 0})
        driver.tick()
        assert "prune_step" not in driver.study(sweep_id).trials[0].user_attrs


# --- a sweep across a kill -9 of the service (stand-in trainer) -------------------------------------------------------


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ptft_core", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=os.environ)


FAKE_SWEEP = {
    "name": "fake sweep", "base": fake(steps=60, every=5),
    "space": {"seed": {"low": 0, "high": 100_000}, "optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}},
    "objective": {"metric": "loss"}, "sampler": "random",
    "pruner": {"type": "asha", "min_resource": 5, "reduction_factor": 2}, "n_trials": 8, "parallel": 2, "seed": 3,
}


def assert_every_trial_once(runs: pd.DataFrame, trials: pd.DataFrame, n: int) -> None:
    numbers = [int(next(t for t in tags if t.startswith("sweep-trial:")).split(":")[1]) for tags in runs["tags"]]
    assert sorted(numbers) == list(range(n)), numbers  # one run per trial, n_trials and no more
    assert sorted(trials["trial"]) == list(range(n))
    by_run = dict(zip(runs["id"], runs["status"], strict=True))
    for t in trials.to_dict("records"):
        assert t["state"] in ("completed", "pruned"), t
        assert by_run[t["run_id"]] == t["state"], t  # what Optuna was told is how the run ended


@pytest.mark.slow
def test_a_sweep_finishes_across_a_kill_9_of_the_service(fake_lab, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from ptft_core import ui
    from ptft_core.client import connect, find_service

    monkeypatch.setenv("PTFT_FAKE_STEP_S", "0.03")
    assert cli("serve", "--detach", "--cpu-slots", "2").returncode == 0
    try:
        lab = connect(fake_lab)
        with pytest.raises(ConfigError, match="space.optim.lrr: unknown field"):
            lab.launch_sweep({**FAKE_SWEEP, "space": {"optim.lrr": {"low": 1, "high": 2}}})
        with pytest.raises(KeyError):
            lab.sweep_progress("sw-nope")
        with pytest.raises(PermissionError):
            connect(fake_lab, role="viewer").launch_sweep(FAKE_SWEEP)
        sweep_id = lab.launch_sweep(FAKE_SWEEP)

        def mid_sweep():
            p = lab.sweep_progress(sweep_id)
            told = sum(p.counts.get(s, 0) for s in ("completed", "pruned", "failed"))
            return told >= 1 and p.counts.get("running", 0) >= 1

        wait_for(mid_sweep, 120, "a trial finished and another one training")
        victim = find_service(fake_lab)["pid"]
        os.kill(victim, signal.SIGKILL)
        psutil.Process(victim).wait(timeout=30)
        assert cli("serve", "--detach", "--cpu-slots", "2").returncode == 0
        progress = wait_for(lambda: (p := lab.sweep_progress(sweep_id)).finished and p, 300, "the sweep to finish")
        assert progress.status == "done" and progress.best_run, progress.line()
        trials = lab.sweep_trials(sweep_id)
        runs = lab.list_runs(tag=f"sweep:{sweep_id}")
        assert_every_trial_once(runs, trials, 8)
        assert set(runs["study"]) == {sweep_id}  # Compare picks the trials together
        assert lab.sweep_table()["id"].tolist() == [sweep_id]
        effects = lab.sweep_effects(sweep_id)  # which settings matter, over the trials told
        assert set(effects["field"]) == {"seed", "optim.lr"}
        assert effects["view"].str.startswith("end of training: the ").any()
        assert (effects["n"] == len(trials[trials["state"] == "completed"])).any()

        ui.release_labs()
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
        at.switch_page("pages/sweeps.py")
        at.query_params["sweep"] = sweep_id
        at = at.run()
        assert not at.exception, at.exception
        assert len(at.get("plotly_chart")) == 3 and [m.value for m in at.metric][0] == "8/8"
        links = {link.proto.label: link.proto for link in at.get("page_link")}
        best = links[f"Open the best trial (#{progress.best_trial}) in Compare"]
        assert best.page == "compare" and progress.best_run in best.query_string
    finally:
        ui.release_labs()
        stop_lab(fake_lab)


# --- the tiny sweep, end to end with real training ---------------------------------------------------------------


@pytest.mark.slow
def test_the_tiny_asha_sweep_runs_end_to_end_from_the_cli_and_prunes(home, monkeypatch):
    """configs/sweeps/tiny.yaml as a user runs it: 8 trials of the tiny preset, 2 at once, ASHA. The command starts
    a service for its lifetime and returns when the sweep is done."""
    monkeypatch.setenv("PTFT_GPUS", "none")
    monkeypatch.delenv("PTFT_TRAINER", raising=False)
    ran = cli("sweep", str(REPO / "configs" / "sweeps" / "tiny.yaml"), "--cpu-slots", "2")
    assert ran.returncode == 0, ran.stdout + ran.stderr[-3000:]
    sweep_id = re.search(r"sweep (sw-\S+) launched", ran.stdout).group(1)
    assert "8/8 trials finished" in ran.stdout and "best: trial" in ran.stdout
    with Store(home / "ptft.duckdb", read_only=True) as store:
        runs = store.list_runs(tag=f"sweep:{sweep_id}")
        from ptft_core.sweeps.driver import SweepView

        view = SweepView(store, home, sweep_id)
        trials = view.trials()
        assert_every_trial_once(runs, trials, 8)
        pruned = runs[runs["status"] == "pruned"]
        assert len(pruned) >= 1, trials.to_string()
        print(f"tiny sweep: {len(pruned)} of 8 trials pruned, at steps {sorted(trials['prune_step'].dropna())}")
        for row in pruned.to_dict("records"):
            assert re.match(r"pruned at step \d+: validation loss \d", row["error"]), row["error"]
            assert not store.metric_series([row["id"]], names=["loss"], splits=["validation"]).empty
            assert RunDir(home / "runs" / row["id"]).saved_checkpoints(), row["id"]
        assert not (runs["status"] == "failed").any()
        intervals = sorted((r["started_at"], r["finished_at"]) for r in runs.to_dict("records"))
        for start, _ in intervals:  # never more than 2 trials training at once
            assert sum(s <= start < f for s, f in intervals) <= 2
        configs = [json.loads(c) for c in runs["config"]]
        assert {c["optim"]["schedule"] for c in configs} <= {"constant", "linear", "cosine"}
        assert all(1e-4 <= c["optim"]["lr"] <= 3e-2 and c["batch_size"] in (4, 8, 12, 16) for c in configs)
    status = cli("sweep", "status", sweep_id)
    assert status.returncode == 0 and "8/8 trials finished" in status.stdout and "pruned" in status.stdout
    assert "which settings matter, end of training: the " in status.stdout and "  optim.lr: " in status.stdout
