"""The sweep driver: Optuna samples and prunes, the engine runs the trials; plus the read side (trials, progress,
which settings matter).

A sweep is a row in the store's `sweeps` table (its spec) and an Optuna study in a journal file
(`PTFT_HOME/sweeps/<id>/optuna.journal`: Optuna's `JournalStorage`, append-only, so the sampler's history and the
pruner's rungs survive a restart). Each trial is an ordinary run, submitted through `Engine.submit` with the
base config plus the sampled values, tagged `sweep:<id>` and `sweep-trial:<n>` (its `study` column is the
sweep's id, so Compare picks the trials together); trial number -> run id is the tag (the trial's user attr
`run_id` repeats it).

`SweepDriver.tick()` (the service's background thread, every `interval` s) does, for each unfinished sweep:
1. a trial asked but with no run yet (a crash between ask and submit) is submitted now, with its sampled values;
2. each running trial's new validation values of the objective (by step; step 0 left out: every trial starts
   there) are reported to Optuna in step order, and after each the pruner is asked; a trial it prunes is
   stopped through `Engine.prune` (the worker checkpoints and exits; the run ends `pruned`, with the step and
   value that decided it as its reason), after its user attrs say so (re-sent, idempotently, after a restart);
3. a trial whose run has ended is told: completed -> its objective (best or last validation value), pruned ->
   PRUNED, failed / cancelled / interrupted -> FAIL;
4. free places (`parallel` minus the trials not yet told) are filled by `study.ask()` -> submit, until `n_trials`
   trials exist (asked first, so a crash never makes one too many); with every trial told, the sweep is done.
Every step reads its state from the store and the journal, so a tick may be repeated, or cut short by a crash,
and the next one (in this process or the next service) picks up where they stand.

This module imports Optuna (lazily, where it is used) and never torch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ptft_core import paths
from ptft_core.config import ConfigError
from ptft_core.ids import SWEEP, new_id
from ptft_core.lab import TERMINAL
from ptft_core.sweeps.effects import EFFECT_COLUMNS, effects
from ptft_core.sweeps.spec import SweepSpec, spec_from_dict, spec_to_dict
from ptft_core.ticker import Ticker

log = logging.getLogger(__name__)

SWEEP_TAG = "sweep:"
TRIAL_TAG = "sweep-trial:"
SPLIT = "validation"
FINISHED = ("done", "cancelled", "failed")  # a sweep's final statuses ("running" until then)
TRIAL_COLUMNS = ["trial", "state", "run_id", "status", "value", "step", "prune_step", "reason", "seconds"]


# --- Optuna: the study in its journal, the sampler, the pruner -----------------------------------------------------


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial in the service log is ours
    return optuna


_JOURNAL_LOCK = threading.Lock()


class _ProcessLock:
    """The journals' write lock (what `JournalFileBackend` asks of a `lock_obj`: acquire, release): one per
    process, not a lock file. The service is a sweep's only writer (the run store's lock sees to that: one service
    per home), and Optuna's file locks outlive a `kill -9` of their holder, so the next service would wait out
    their 30 s grace before its first tick. Readers (`sweep status` with no service) take no lock."""

    def acquire(self) -> bool:
        return _JOURNAL_LOCK.acquire()

    def release(self) -> None:
        _JOURNAL_LOCK.release()


def open_study(home: Path, sweep_id: str, spec: SweepSpec, create: bool = False, offset: int = 0):
    """The sweep's Optuna study, from its journal file (created with `create`). `offset` moves the sampler's seed:
    a driver that starts on a study with n trials seeds it `spec.seed + n`, so the draws go on deterministically
    instead of repeating the first ones."""
    optuna = _optuna()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = paths.sweep_journal(sweep_id, home)
    if not create and not path.is_file():
        raise KeyError(f"sweep {sweep_id!r} has no Optuna journal at {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(path), lock_obj=_ProcessLock()))
    if create:
        optuna.create_study(study_name=sweep_id, storage=storage, load_if_exists=True,
                            direction="maximize" if spec.maximize else "minimize")
    return optuna.load_study(study_name=sweep_id, storage=storage, sampler=make_sampler(spec, offset),
                             pruner=make_pruner(spec))


def make_sampler(spec: SweepSpec, offset: int = 0):
    optuna = _optuna()
    seed = spec.seed + offset
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "grid":
        class Grid(optuna.samplers.GridSampler):  # it reads which points are taken from the study itself
            def after_trial(self, study, trial, state, values) -> None:
                """No `study.stop()` once the grid is used up (that is for `optimize` loops, and raises outside
                one): the driver stops asking at the grid's size itself (`SweepSpec.trials`)."""

        return Grid(spec.grid(), seed=spec.seed)
    # TPE after a few random trials (a third of the budget, 2..10); constant liar: running trials count as bad
    # guesses, so trials asked at once do not all land on the same spot.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, spec.trials // 3)),
                                      constant_liar=True)


def make_pruner(spec: SweepSpec):
    optuna = _optuna()
    p = spec.pruner
    if p.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_steps)
    if p.type == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_resource or "auto",
                                                      reduction_factor=p.reduction_factor)
    return optuna.pruners.NopPruner()


def distributions(spec: SweepSpec) -> dict[str, Any]:
    """Each searched field as an Optuna distribution."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for name, p in spec.space.items():
        if p.is_choice:
            out[name] = CategoricalDistribution(p.values)
        elif isinstance(p.low, int) and isinstance(p.high, int):
            out[name] = IntDistribution(p.low, p.high, log=p.log, step=int(p.step or 1))
        else:
            out[name] = FloatDistribution(float(p.low), float(p.high), log=p.log, step=p.step)
    return out


def prune_reason(spec: SweepSpec, step: int, value: float) -> str:
    p = spec.pruner
    why = (f"not in the top 1/{p.reduction_factor} of the trials at this rung (ASHA)" if p.type == "asha"
           else "worse than the median of the other trials at this step")
    return f"pruned at step {step}: {SPLIT} {spec.objective.metric} {value:.4g}, {why}"


# --- the state of a sweep, from its journal and the store ----------------------------------------------------------


def trial_number(tags: Iterable[str]) -> int | None:
    for tag in tags:
        if tag.startswith(TRIAL_TAG) and tag[len(TRIAL_TAG):].isdigit():
            return int(tag[len(TRIAL_TAG):])
    return None


def trial_runs(store, sweep_id: str, trials) -> dict[int, dict[str, Any]]:
    """Trial number -> its run's row: the run the trial names (user attr), else the first run with its tag (a
    run retried by hand adds another; the trial keeps the one it was told about)."""
    runs = store.list_runs(tag=f"{SWEEP_TAG}{sweep_id}")
    named = {t.number: t.user_attrs.get("run_id") for t in trials}
    found: dict[int, dict[str, Any]] = {}
    for row in runs.sort_values("created_at").to_dict("records"):
        number = trial_number(row["tags"])
        if number is None:
            continue
        if number not in found or row["id"] == named.get(number):
            found[number] = {k: (None if not isinstance(v, list | dict) and pd.isna(v) else v)
                             for k, v in row.items()}
    return found


def objective_points(store, run_ids: list[str], spec: SweepSpec) -> dict[str, list[tuple[int, float]]]:
    """run id -> [(step, value)] of the objective, step order, step 0 left out (the shared starting point)."""
    if not run_ids:
        return {}
    df = store.metric_series(run_ids, names=[spec.objective.metric], splits=[SPLIT], x="step", max_points=100_000)
    by_step: dict[str, dict[int, float]] = {r: {} for r in run_ids}
    for run_id, x, value in zip(df["run_id"], df["x"], df["value"], strict=True):
        if x > 0 and math.isfinite(value):
            by_step[run_id][int(x)] = float(value)  # one value per step (an epoch end may repeat an evaluation)
    return {r: sorted(points.items()) for r, points in by_step.items()}


def summary_value(points: list[tuple[int, float]], spec: SweepSpec) -> float | None:
    if not points:
        return None
    if spec.objective.summary == "last":
        return points[-1][1]
    values = [v for _, v in points]
    return max(values) if spec.maximize else min(values)


@dataclass
class SweepProgress:
    sweep_id: str
    name: str
    status: str  # running | done | cancelled | failed
    created_at: Any
    n_trials: int
    counts: dict[str, int]  # completed | pruned | failed | running | queued | starting
    finished: bool
    metric: str
    direction: str
    best_value: float | None = None
    best_trial: int | None = None
    best_run: str | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def line(self) -> str:
        told = sum(self.counts.get(s, 0) for s in ("completed", "pruned", "failed"))
        parts = [f"{told}/{self.n_trials} trials finished"]
        for state in ("completed", "pruned", "failed", "running", "queued", "starting"):
            if self.counts.get(state):
                parts.append(f"{self.counts[state]} {state}")
        if self.best_value is not None:
            parts.append(f"best {self.metric} {self.best_value:.4g} (trial {self.best_trial})")
        if self.status in ("cancelled", "failed"):
            parts.append(self.status + (f": {self.error}" if self.error else ""))
        return ", ".join(parts)


TOLD = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed"}


def _state(trial, run: dict[str, Any] | None) -> str:
    """completed | pruned | failed (told), else starting (no run yet) | queued | running."""
    if trial.state.name in TOLD:
        return TOLD[trial.state.name]
    if run is None:
        return "starting"
    return "queued" if run["status"] == "queued" else "running"  # an ended run is told at the next tick


def _asked(study) -> list:
    """The trials asked so far: an enqueued one not yet asked (WAITING) is not a trial yet."""
    return [t for t in study.get_trials(deepcopy=False) if t.state.name != "WAITING"]


def trials_table(study, runs: dict[int, dict[str, Any]], spec: SweepSpec) -> pd.DataFrame:
    """One row per trial asked: TRIAL_COLUMNS, then one column per searched field (choices as text)."""
    rows = []
    for t in _asked(study):
        run = runs.get(t.number)
        value = t.value if t.state.name in ("COMPLETE", "PRUNED") else None
        last = t.last_step
        if t.state.name == "RUNNING" and last is not None:
            value = t.intermediate_values[last]  # running: the latest validation value
        seconds = None
        if run is not None and run.get("started_at") is not None and run.get("finished_at") is not None:
            seconds = (pd.Timestamp(run["finished_at"]) - pd.Timestamp(run["started_at"])).total_seconds()
        row = {"trial": t.number, "state": _state(t, run), "run_id": run["id"] if run else t.user_attrs.get("run_id"),
               "status": run["status"] if run else None, "value": value, "step": last,
               "prune_step": t.user_attrs.get("prune_step"),
               "reason": (run or {}).get("error") or t.user_attrs.get("error"), "seconds": seconds}
        for name, p in spec.space.items():
            row[name] = None
            if name in t.params:
                row[name] = str(t.params[name]) if p.is_choice else t.params[name]  # choices as text (one type)
        rows.append(row)
    columns = TRIAL_COLUMNS + list(spec.space)
    df = pd.DataFrame(rows, columns=columns)
    for name, p in spec.space.items():
        if not p.is_choice:
            df[name] = pd.to_numeric(df[name])
    return df.astype({"value": "float64", "seconds": "float64"})


def progress_of(row: dict[str, Any], spec: SweepSpec, trials: pd.DataFrame) -> SweepProgress:
    counts = trials["state"].value_counts().to_dict()
    done = trials[trials["state"] == "completed"]
    best = None
    if not done.empty:
        best = done.loc[done["value"].idxmax() if spec.maximize else done["value"].idxmin()]
    active = any(s in ("running", "queued", "starting") for s in counts)
    finished = row["status"] in FINISHED and not active
    return SweepProgress(
        row["id"], row.get("name") or row["id"], row["status"], row.get("created_at"), spec.trials,
        {k: int(v) for k, v in counts.items()}, finished, spec.objective.metric,
        "maximize" if spec.maximize else "minimize",
        None if best is None else float(best["value"]), None if best is None else int(best["trial"]),
        None if best is None else best["run_id"],
        {} if best is None else {name: best[name] for name in spec.space}, row.get("error"))


def _points(trials: list, value) -> pd.DataFrame:
    return pd.DataFrame([{**t.params, "value": value(t)} for t in trials])


def effect_table(study, spec: SweepSpec) -> pd.DataFrame:
    """Which settings matter (`sweeps.effects`: R² and a permutation p per searched field), in up to two views:
    the completed trials' objective, and, where the pruner stopped some, every completed or pruned trial at the
    latest validation step all of them reached (one step for all, so the values compare; it is also what the
    pruner judged them by)."""

    judged = [t for t in _asked(study) if t.state.name in ("COMPLETE", "PRUNED")]
    done = [t for t in judged if t.state.name == "COMPLETE"]
    frames = []
    if done:
        frames.append(effects(_points(done, lambda t: t.value), spec.space,
                              f"end of training: the {len(done)} completed trials"))
    if len(done) < len(judged):
        steps = set.intersection(*(set(t.intermediate_values) for t in judged))
        if steps:
            step = max(steps)
            frames.append(effects(_points(judged, lambda t: t.intermediate_values[step]), spec.space,
                                  f"step {step}: all {len(judged)} completed and pruned trials"))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=EFFECT_COLUMNS)


class SweepView:
    """The read side of one sweep (its row, spec, Optuna study and trial runs), for the service, the CLI and
    the driver itself."""

    def __init__(self, store, home: Path, sweep_id: str, study=None):
        self.row = store.get_sweep(sweep_id)
        self.spec = spec_from_dict(self.row["spec"])
        self.study = study if study is not None else open_study(home, sweep_id, self.spec)
        self.runs = trial_runs(store, sweep_id, self.study.get_trials(deepcopy=False))

    def trials(self) -> pd.DataFrame:
        return trials_table(self.study, self.runs, self.spec)

    def progress(self) -> SweepProgress:
        return progress_of(self.row, self.spec, self.trials())

    def effects(self) -> pd.DataFrame:
        return effect_table(self.study, self.spec)


def list_sweeps(store, home: Path, studies: dict[str, Any] | None = None) -> pd.DataFrame:
    """One row per sweep, newest first, with its progress (the page's table and `sweep status`)."""
    rows = []
    for sweep_id in store.list_sweeps()["id"]:
        try:
            p = SweepView(store, home, sweep_id, (studies or {}).get(sweep_id)).progress()
        except (KeyError, ValueError, ConfigError) as exc:
            log.debug("skipping sweep %s: %s", sweep_id, exc)
            continue
        rows.append({"id": p.sweep_id, "name": p.name, "status": p.status, "created": p.created_at,
                     "trials": p.n_trials, "completed": p.counts.get("completed", 0),
                     "pruned": p.counts.get("pruned", 0), "failed": p.counts.get("failed", 0),
                     "finished": p.finished, "metric": p.metric, "best": p.best_value, "best_run": p.best_run,
                     "progress": p.line()})
    return pd.DataFrame(rows, columns=["id", "name", "status", "created", "trials", "completed", "pruned", "failed",
                                       "finished", "metric", "best", "best_run", "progress"])


# --- the driver ------------------------------------------------------------------------------------------------------


class SweepDriver(Ticker):
    """Launches sweeps and moves them along; one per engine (`sweep_driver_for(engine)`)."""

    name = "ptft-sweeps"

    def __init__(self, engine, interval: float = 1.0):
        super().__init__(engine, interval)
        self._studies: dict[str, Any] = {}  # sweep id -> its Optuna study (journal replayed once per process)
        self._finished: set[str] = set()

    @property
    def store(self):
        return self.engine.store

    def study(self, sweep_id: str, spec: SweepSpec | None = None):
        with self._lock:
            if sweep_id not in self._studies:
                spec = spec or spec_from_dict(self.store.get_sweep(sweep_id)["spec"])
                first = open_study(self.engine.home, sweep_id, spec)
                self._studies[sweep_id] = open_study(self.engine.home, sweep_id, spec,
                                                     offset=len(first.get_trials(deepcopy=False)))
            return self._studies[sweep_id]

    def view(self, sweep_id: str) -> SweepView:
        self.store.get_sweep(sweep_id)  # KeyError first
        return SweepView(self.store, self.engine.home, sweep_id, self.study(sweep_id))

    def table(self) -> pd.DataFrame:
        ids = self.store.list_sweeps()["id"]
        studies = {}
        for sweep_id in ids:
            with contextlib.suppress(KeyError, ValueError, ConfigError):
                studies[sweep_id] = self.study(sweep_id)
        return list_sweeps(self.store, self.engine.home, studies)

    # -- launching and cancelling --------------------------------------------------------------------------------
    def launch(self, spec: SweepSpec | dict[str, Any], name: str | None = None) -> str:
        """Store the sweep, create its Optuna study and submit its first trials; returns its id."""
        spec = spec if isinstance(spec, SweepSpec) else spec_from_dict(spec)
        if name:
            spec.name = name
        sweep_id = new_id(SWEEP)
        with self._lock:
            study = self._studies[sweep_id] = open_study(self.engine.home, sweep_id, spec, create=True)
            for values in spec.enqueue:  # before the row: a sweep the store knows has all its enqueued trials
                study.enqueue_trial(values)
            self.store.create_sweep(sweep_id, spec.label(), spec_to_dict(spec))
        log.info("sweep %s (%s): %d trials, %d at once, %s sampler, %s pruner", sweep_id, spec.label(),
                 spec.trials, spec.parallel, spec.sampler, spec.pruner.type)
        self.tick()
        return sweep_id

    def cancel(self, sweep_id: str) -> list[str]:
        """Ask no more trials; cancel the queued and running ones (told FAIL once they end). Returns their ids."""
        with self._lock:
            row = self.store.get_sweep(sweep_id)
            if row["status"] == "running":
                self.store.set_sweep_status(sweep_id, "cancelled")
            ids = list(self.store.list_runs(tag=f"{SWEEP_TAG}{sweep_id}", status=["queued", "running"])["id"])
            for run_id in ids:
                self.engine.cancel(run_id)
        self.tick()
        return ids

    # -- moving along --------------------------------------------------------------------------------------------
    def tick(self) -> list[str]:
        """One pass over the unfinished sweeps; returns the ids of the runs submitted."""
        submitted: list[str] = []
        with self._lock:
            for row in self.store.list_sweeps().to_dict("records"):
                if row["id"] in self._finished:
                    continue
                if row["status"] in ("done", "failed"):  # every trial told (a cancelled one may still be ending)
                    self._finished.add(row["id"])
                    continue
                try:
                    submitted += self._tick_sweep(self.store.get_sweep(row["id"]))
                except (KeyError, ValueError, ConfigError) as exc:  # a broken spec or journal: say so, stop
                    log.warning("sweep %s: %s", row["id"], exc)
                    self.store.set_sweep_status(row["id"], "failed", str(exc))
                    self._finished.add(row["id"])
        return submitted

    def _tick_sweep(self, row: dict[str, Any]) -> list[str]:
        sweep_id = row["id"]
        spec = spec_from_dict(row["spec"])
        study = self.study(sweep_id, spec)
        optuna = _optuna()
        running_state = optuna.trial.TrialState.RUNNING
        trials = study.get_trials(deepcopy=False)
        runs = trial_runs(self.store, sweep_id, trials)
        submitted = []
        open_trials = [t for t in trials if t.state == running_state]
        for t in open_trials:  # 1. asked but never submitted (a crash in between)
            if t.number not in runs and row["status"] == "running":
                submitted.append(self._submit(sweep_id, spec, row, t))
            elif t.number not in runs:
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        points = objective_points(self.store, [runs[t.number]["id"] for t in open_trials if t.number in runs], spec)
        for t in open_trials:  # 2. and 3.
            if t.number in runs:
                self._follow(study, spec, t, runs[t.number], points[runs[t.number]["id"]])
        asked = _asked(study)
        active = sum(t.state == running_state for t in asked)
        while row["status"] == "running" and len(asked) < spec.trials and active < spec.parallel:  # 4.
            trial = study.ask(distributions(spec))  # an enqueued trial first (its values fixed), else sampled
            submitted.append(self._submit(sweep_id, spec, row, study.get_trials(deepcopy=False)[trial.number]))
            asked = _asked(study)
            active += 1
        if active == 0 and (len(asked) >= spec.trials or row["status"] != "running"):
            if row["status"] == "running":
                self.store.set_sweep_status(sweep_id, "done")
            self._finished.add(sweep_id)
            log.info("sweep %s finished: %s", sweep_id, self.view(sweep_id).progress().line())
        return submitted

    def _submit(self, sweep_id: str, spec: SweepSpec, row: dict[str, Any], trial) -> str:
        config = spec.trial_config(trial.params)
        config["name"] = f"{row.get('name') or sweep_id} #{trial.number}"
        run_id = self.engine.submit(config, study=sweep_id, name=config["name"],
                                    tags=[f"{SWEEP_TAG}{sweep_id}", f"{TRIAL_TAG}{trial.number}"])
        self.study(sweep_id)._storage.set_trial_user_attr(trial._trial_id, "run_id", run_id)
        log.info("sweep %s: trial %d is run %s (%s)", sweep_id, trial.number, run_id,
                 ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items()))
        return run_id

    def _follow(self, study, spec: SweepSpec, frozen, run: dict[str, Any], points: list[tuple[int, float]]) -> None:
        optuna = _optuna()
        storage = study._storage
        if frozen.user_attrs.get("run_id") != run["id"]:
            storage.set_trial_user_attr(frozen._trial_id, "run_id", run["id"])
        trial = optuna.trial.Trial(study, frozen._trial_id)
        status = run["status"]
        pruning = "prune_step" in frozen.user_attrs
        last_step = run.get("total_steps")
        for step, value in points:
            if step in frozen.intermediate_values:
                continue
            trial.report(value, step)
            # Asked at each step, also once the run has ended: the pruner's rungs record every trial's values. Not
            # acted on at the run's last step: nothing is left to save there, and stopping would lose its test score.
            # Never asked past a trial's prune step: a pruned run trains on until its stop lands, and its later
            # values, had they entered later rungs, would compete with the trials that earned those rungs (CI saw a
            # sweep prune all 8 trials that way: the survivor of rung 20 beaten at rung 40 by the trial pruned at 20).
            at_end = last_step is not None and step >= last_step
            if (spec.pruner.type != "none" and not pruning and trial.should_prune() and status == "running"
                    and not at_end):
                storage.set_trial_user_attr(frozen._trial_id, "prune_step", step)
                storage.set_trial_user_attr(frozen._trial_id, "prune_value", value)
                pruning = True
                log.info("sweep %s: trial %d (%s) pruned at step %d (%s %.4g)", study.study_name, frozen.number,
                         run["id"], step, spec.objective.metric, value)
        if pruning and status in ("running", "queued"):  # asked again after a restart: a no-op once it stops
            attrs = study._storage.get_trial(frozen._trial_id).user_attrs
            self.engine.prune(run["id"], prune_reason(spec, attrs["prune_step"], attrs["prune_value"]))
            return
        if status not in TERMINAL:
            return
        state = optuna.trial.TrialState
        if status == "completed":
            value = summary_value(points, spec)
            if value is None:
                storage.set_trial_user_attr(frozen._trial_id, "error", f"no {SPLIT} {spec.objective.metric} logged")
                study.tell(frozen.number, state=state.FAIL)
            else:
                study.tell(frozen.number, value)
        elif status == "pruned":
            study.tell(frozen.number, state=state.PRUNED)
        else:
            study.tell(frozen.number, state=state.FAIL)
        log.info("sweep %s: trial %d (%s) %s", study.study_name, frozen.number, run["id"], status)

    # -- waiting ---------------------------------------------------------------------------------------------------
    def progress(self, sweep_id: str) -> SweepProgress:
        return self.view(sweep_id).progress()

    def wait(self, sweep_id: str, timeout: float | None = None, interval: float = 0.5) -> SweepProgress:
        """Tick (and step the engine when its thread is not running) until the sweep is finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not self.engine.running:
                self.engine.step()
            self.tick()
            progress = self.progress(sweep_id)
            if progress.finished:
                return progress
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"sweep not finished after {timeout} s: {progress.line()}")
            time.sleep(interval)


def sweep_driver_for(engine, start: bool = False) -> SweepDriver:
    """The one sweep driver of `engine` in this process (created on first use; `start=True` starts its thread)."""
    return SweepDriver.for_engine(engine, start)
