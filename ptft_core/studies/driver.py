"""The study driver: launches a study's plan through the engine and moves it along; plus the read side (progress,
the data a report is built from).

A study is stored as a plan (`studies.config`: every planned run's config, labels and `base_from`), and the
runs carry their planned key as tag `study-key:<key>`. Launching submits the whole plan at once, parents
first: a planned run that starts from another's checkpoint is submitted with `run:<parent run id>[/step-<N>]`
as its base, and the engine's scheduler holds it until that checkpoint exists (or fails it, with the reason,
when the parent ended without it). Cross-domain evaluation is a run of its own (kind `evaluate`) that starts
from a fine-tune's final checkpoint, so it queues, runs and recovers like any other run.

`StudyDriver.tick()` — called by the service's background thread (`start()`) or a wait loop — only repairs:
a planned run with no run yet (a launch cut short by a crash, or a parent retried later) is submitted once its
parent has a run. Nothing but the runs themselves is state, so a driver can stop and start (or run in another
process later) without losing track. Ticks in one process are serialised by a lock (no double submits).

This module never imports torch.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ptft_core.config import (
    CHECKPOINT_FIELD,
    ConfigError,
    EvaluateConfig,
    FinetuneConfig,
    ImageFinetuneConfig,
    ImagePretrainConfig,
    config_to_dict,
)
from ptft_core.ids import STUDY, new_id
from ptft_core.lab import TERMINAL  # pruned: by hand, a study never prunes
from ptft_core.studies.costs import dataset_chance, dataset_classes, dataset_shape, estimate_seconds, run_seconds
from ptft_core.studies.templates import PlannedRun, build_runs, get_template
from ptft_core.ticker import Ticker

log = logging.getLogger(__name__)

KEY_TAG = "study-key:"
PLAN_VERSION = 2  # 2: cross-domain evaluations are planned runs of kind evaluate (1: a list on the fine-tune)
# An evaluate run's status as the report reads it; others: pending.
EVALUATION_STATE = {"completed": "done", "running": "running", "failed": "failed", "cancelled": "failed",
                    "interrupted": "failed", "pruned": "failed"}


# --- the plan ------------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    template: str
    preset: str
    tiny: bool
    runs: list[PlannedRun]
    meta: dict[str, Any] = field(default_factory=dict)  # per dataset: chance rate, train rows
    env: dict[str, Any] = field(default_factory=dict)
    estimate_s: float = 0.0

    def run(self, key: str) -> PlannedRun:
        return next(r for r in self.runs if r.key == key)

    def to_dict(self) -> dict[str, Any]:
        return {"version": PLAN_VERSION, "template": self.template, "preset": self.preset, "tiny": self.tiny,
                "runs": [r.to_dict() for r in self.runs], "meta": self.meta, "env": self.env,
                "estimate_s": self.estimate_s}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return cls(data["template"], data["preset"], bool(data.get("tiny")),
                   [PlannedRun.from_dict(r) for r in data["runs"]], data.get("meta") or {}, data.get("env") or {},
                   float(data.get("estimate_s") or 0.0))


def make_plan(template: str, preset: str, tiny: bool = False, slots: int = 1, device: str = "cpu") -> Plan:
    """The plan of a template under a preset, with what the report needs to know about the data."""
    runs = build_runs(template, preset, tiny)
    datasets = sorted({d for r in runs for d in _datasets(r.config)})
    meta: dict[str, Any] = {"datasets": {}}
    for name in datasets:
        splits, _ = dataset_shape(name)
        meta["datasets"][name] = {"chance": dataset_chance(name), "splits": splits,
                                  "classes": dataset_classes(name)}
    for run in runs:
        c = run.config
        if isinstance(c, FinetuneConfig) and "label_fraction" in run.labels:
            n = meta["datasets"][c.dataset]["splits"].get("train", 0)
            run.labels.setdefault("labelled_examples", max(1, round(c.label_fraction * n)))
    return Plan(template, preset, tiny, runs, meta, environment(),
                estimate_seconds(runs, slots=slots, device=device))


def _datasets(config) -> tuple[str, ...]:
    if isinstance(config, FinetuneConfig):
        return tuple(d for d in (config.dataset, config.then_dataset) if d)
    if isinstance(config, ImageFinetuneConfig | ImagePretrainConfig):
        return (config.dataset,)
    return tuple(config.datasets) if isinstance(config, EvaluateConfig) else ()


def environment(devices: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """Versions and machine, read without importing torch (package metadata only)."""
    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
        "cpu_cores": os.cpu_count(), "torch": version("torch"), "transformers": version("transformers"),
        "plotly": version("plotly"), "duckdb": version("duckdb"), "pandas": version("pandas"),
        "devices": [d.get("device", "") + (f" ({d['description']})" if d.get("description") else "")
                    for d in devices],
    }


# --- the state of a study, derived from the store --------------------------------------------------------------


@dataclass
class RunState:
    key: str
    planned: PlannedRun
    state: str  # waiting | ready | queued | running | completed | failed | cancelled | interrupted
    run_id: str | None = None
    row: dict[str, Any] | None = None
    parent_id: str | None = None
    reason: str = ""  # why waiting


@dataclass
class StudyProgress:
    study_id: str
    name: str
    template: str
    preset: str
    created_at: Any
    total: int
    counts: dict[str, int]
    finished: bool
    remaining_s: float
    failed: list[dict[str, Any]]
    cross_eval: dict[str, str]  # fine-tune key -> pending | running | done | failed (its evaluate run)

    @property
    def completed(self) -> int:
        return self.counts.get("completed", 0)

    def line(self) -> str:
        parts = [f"{self.completed}/{self.total} completed"]
        for state in ("running", "queued", "waiting", "failed", "cancelled", "interrupted", "pruned"):
            if self.counts.get(state):
                parts.append(f"{self.counts[state]} {state}")
        return ", ".join(parts)


def _pick(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Of several runs of one key (a retry adds one), the one that counts: completed, else live, else newest."""
    rank = {"completed": 0, "running": 1, "queued": 1}
    return sorted(rows, key=lambda r: (rank.get(r["status"], 2), -pd.Timestamp(r["created_at"]).value))[0]


def study_runs(store, study_id: str) -> pd.DataFrame:
    return store.list_runs(study=study_id)


def run_states(plan: Plan, runs: pd.DataFrame) -> dict[str, RunState]:
    by_key: dict[str, list[dict[str, Any]]] = {}
    for row in runs.to_dict("records"):
        row = {k: (None if not isinstance(v, list | dict) and pd.isna(v) else v) for k, v in row.items()}
        if isinstance(row.get("config"), str):
            row["config"] = json.loads(row["config"])
        key = next((t[len(KEY_TAG):] for t in row["tags"] if t.startswith(KEY_TAG)), None)
        if key is not None:
            by_key.setdefault(key, []).append(row)
    states: dict[str, RunState] = {}
    for planned in plan.runs:
        rows = by_key.get(planned.key)
        if rows:
            row = _pick(rows)
            states[planned.key] = RunState(planned.key, planned, row["status"], row["id"], row,
                                           row.get("parent_run"))
            continue
        base = planned.base_from
        parent = states[base.key] if base is not None else None
        if parent is None or parent.run_id is not None:
            # Submitted at once: the engine holds it until the parent's checkpoint exists.
            states[planned.key] = RunState(planned.key, planned, "ready",
                                           parent_id=parent.run_id if parent is not None else None)
        else:
            states[planned.key] = RunState(planned.key, planned, "waiting", reason=f"{base.key} is {parent.state}")
    return states


def evaluation_states(states: dict[str, RunState]) -> dict[str, str]:
    """Fine-tune key -> the state of the evaluate run that scores it on other domains."""
    return {s.planned.base_from.key: EVALUATION_STATE.get(s.state, "pending")
            for s in states.values() if s.planned.config.kind == "evaluate" and s.planned.base_from is not None}


def get_plan(store, study_id: str) -> tuple[dict[str, Any], Plan]:
    row = store.get_study(study_id)
    if not row.get("config"):
        raise KeyError(f"study {study_id!r} has no plan (not created by ptft studies)")
    return row, Plan.from_dict(row["config"])


def study_progress(store, study_id: str) -> StudyProgress:
    row, plan = get_plan(store, study_id)
    states = run_states(plan, study_runs(store, study_id))
    counts: dict[str, int] = {}
    for s in states.values():
        state = "waiting" if s.state == "ready" else s.state
        counts[state] = counts.get(state, 0) + 1
    seconds = run_seconds(plan.runs)
    remaining = 0.0
    for key, s in states.items():
        if s.state in ("waiting", "ready", "queued"):
            remaining += seconds[key]
        elif s.state == "running" and s.row is not None:
            total, step = s.row.get("total_steps") or 0, s.row.get("step") or 0
            remaining += seconds[key] * (1 - step / total if total else 0.5)
    finished = all(s.state in TERMINAL for s in states.values())
    failed = [{"key": s.key, "run_id": s.run_id, "status": s.state,
               "error": (s.row or {}).get("error") or s.reason}
              for s in states.values() if s.state in ("failed", "cancelled", "interrupted", "pruned")]
    return StudyProgress(study_id, row.get("name") or study_id, plan.template, plan.preset, row.get("created_at"),
                         len(states), counts, finished, remaining, failed, evaluation_states(states))


def list_studies(store) -> pd.DataFrame:
    """One row per study, newest first, with its progress (for the page and `study --status`)."""
    studies = store.list_studies()
    rows = []
    for study in studies.to_dict("records"):
        try:
            p = study_progress(store, study["id"])
        except (KeyError, ValueError, ConfigError) as exc:  # a study row another tool wrote
            log.debug("skipping study %s: %s", study["id"], exc)
            continue
        rows.append({"id": p.study_id, "name": p.name, "template": p.template, "preset": p.preset,
                     "created": study.get("created_at"), "runs": p.total, "completed": p.completed,
                     "failed": len(p.failed), "finished": p.finished, "progress": p.line(),
                     "remaining_s": p.remaining_s})
    return pd.DataFrame(rows, columns=["id", "name", "template", "preset", "created", "runs", "completed", "failed",
                                       "finished", "progress", "remaining_s"])


# --- the driver --------------------------------------------------------------------------------------------------


class StudyDriver(Ticker):
    """Launches studies and moves them along; one per engine (`driver_for(engine)`).

    `tick()` is one pass over every unfinished study, submitting the planned runs that have no run yet and can
    have one. `start()` ticks in a daemon thread every `interval` seconds.
    """

    name = "ptft-studies"

    def __init__(self, engine, interval: float = 2.0):
        super().__init__(engine, interval)
        self._finished: set[str] = set()

    # -- launching ---------------------------------------------------------------------------------------------
    def launch(self, template: str, preset: str = "quick", tiny: bool = False, name: str | None = None) -> str:
        """Create the study (its plan in the store) and submit every planned run; returns its id."""
        get_template(template)
        slots = max(1, sum(d["slots"] for d in self.engine.devices() if d["kind"] == "cpu"))
        has_gpu = any(d["kind"] == "cuda" for d in self.engine.devices())
        plan = make_plan(template, preset, tiny, slots=slots, device="cuda" if has_gpu else "cpu")
        plan.env = {**plan.env, **environment(self.engine.devices())}
        study_id = new_id(STUDY)
        name = name or f"{template} ({preset}{', tiny' if tiny else ''})"
        self.engine.store.create_study(study_id, name, template=template, preset=preset, config=plan.to_dict())
        log.info("study %s (%s): %d runs planned, about %.0f min", study_id, name, len(plan.runs),
                 plan.estimate_s / 60)
        self.tick()
        return study_id

    # -- moving along ------------------------------------------------------------------------------------------
    def tick(self) -> list[str]:
        """One pass over the unfinished studies; returns the ids of the runs submitted."""
        submitted: list[str] = []
        with self._lock:
            for study_id in self.engine.store.list_studies()["id"].tolist():
                if study_id in self._finished:
                    continue
                try:
                    submitted += self._tick_study(study_id)
                except (KeyError, ValueError, ConfigError) as exc:
                    log.warning("study %s: %s", study_id, exc)
                    self._finished.add(study_id)  # not ours, or a broken plan: stop looking at it
        return submitted

    def _tick_study(self, study_id: str) -> list[str]:
        store = self.engine.store
        row, plan = get_plan(store, study_id)
        submitted = []
        # One pass per lineage level: a parent submitted in this tick gives its children a run id to start from.
        while True:
            states = run_states(plan, study_runs(store, study_id))
            ready = [state for state in states.values() if state.state == "ready"]
            if not ready:
                break
            submitted += [self._submit(study_id, row.get("name") or study_id, state) for state in ready]
        if all(state.state in TERMINAL for state in states.values()):
            self._finished.add(study_id)
            log.info("study %s finished: %s", study_id, study_progress(store, study_id).line())
        return submitted

    def _submit(self, study_id: str, study_name: str, state: RunState) -> str:
        planned = state.planned
        config = config_to_dict(planned.config)
        if planned.base_from is not None:
            config[CHECKPOINT_FIELD[config["kind"]]] = planned.base_from.spec(state.parent_id)
        run_id = self.engine.submit(config, priority=planned.priority, parent=state.parent_id, study=study_id,
                                    tags=[f"{KEY_TAG}{planned.key}"], name=f"{study_name} / {planned.key}")
        log.info("study %s: submitted %s as %s", study_id, planned.key, run_id)
        return run_id

    # -- waiting (the background thread is Ticker's) ---------------------------------------------------------------
    def progress(self, study_id: str) -> StudyProgress:
        return study_progress(self.engine.store, study_id)

    def wait(self, study_ids: str | Iterable[str], timeout: float | None = None, interval: float = 0.5,
             on_progress=None) -> dict[str, StudyProgress]:
        """Tick (and step the engine when its thread is not running) until the studies are finished."""
        ids = [study_ids] if isinstance(study_ids, str) else list(study_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not self.engine.running:
                self.engine.step()
            self.tick()
            progress = {sid: self.progress(sid) for sid in ids}
            if on_progress is not None:
                on_progress(progress)
            if all(p.finished for p in progress.values()):
                return progress
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"studies not finished after {timeout} s: "
                                   + "; ".join(f"{k}: {p.line()}" for k, p in progress.items()))
            time.sleep(interval)


def driver_for(engine, start: bool = False) -> StudyDriver:
    """The one driver of `engine` in this process (created on first use; `start=True` starts its thread)."""
    return StudyDriver.for_engine(engine, start)


# --- the data a report is built from ----------------------------------------------------------------------------


@dataclass
class StudyData:
    """Everything report.py needs, as plain data (no store, no engine)."""

    study: dict[str, Any]
    plan: Plan
    runs: pd.DataFrame  # one row per planned run: key, run_id, status, error, config, labels..., seconds
    metrics: pd.DataFrame  # long: run_id, split, name, x (step), value
    wall: pd.DataFrame  # long: run_id, split, name, x (seconds since the run started), value; train loss only
    tokens: pd.DataFrame  # long: run_id, split, name, x (tokens seen), value; pretraining losses only
    cross_eval: dict[str, str] = field(default_factory=dict)


def load_study(store, study_id: str) -> StudyData:
    row, plan = get_plan(store, study_id)
    states = run_states(plan, study_runs(store, study_id))
    evaluations = {s.run_id: states[s.planned.base_from.key].run_id for s in states.values()
                   if s.planned.config.kind == "evaluate" and s.run_id and s.planned.base_from is not None}
    rows = []
    for s in states.values():
        if s.planned.config.kind == "evaluate":
            continue  # its scores join its fine-tune's metrics below; its state is in `cross_eval`
        r = s.row or {}
        started, finished = r.get("started_at"), r.get("finished_at")
        seconds = None
        if started is not None and finished is not None and not pd.isna(started) and not pd.isna(finished):
            seconds = (pd.Timestamp(finished) - pd.Timestamp(started)).total_seconds()
        config = r.get("config") or config_to_dict(s.planned.config)
        rows.append({"key": s.key, "run_id": s.run_id, "status": s.state, "error": r.get("error") or s.reason or None,
                     "kind": config["kind"], "config": config, "parent_run": s.parent_id,
                     "device": r.get("device"), "seconds": seconds, "step": r.get("step"),
                     **s.planned.labels})
    runs = pd.DataFrame(rows)
    ids = [s.run_id for s in states.values() if s.run_id]
    metrics = store.metric_series(ids, x="step", max_points=2000)
    metrics = metrics[~metrics["name"].isin(["lr", "grad_norm"])].reset_index(drop=True)
    # An evaluation's scores (split "transfer") read as its fine-tune's, where the transfer matrix looks for them.
    metrics["run_id"] = metrics["run_id"].replace(evaluations)
    wall = store.metric_series(ids, names=["loss"], splits=["train"], x="wall_time", max_points=2000)
    pretrain_ids = [s.run_id for s in states.values() if s.run_id and s.planned.config.kind == "pretrain"]
    tokens = store.metric_series(pretrain_ids, names=["loss"], x="tokens_seen", max_points=2000)
    study = {k: row.get(k) for k in ("id", "name", "template", "preset", "created_at")}
    return StudyData(study, plan, runs, metrics, wall, tokens, evaluation_states(states))


def study_report(store, study_id: str):
    """The report of a study (report.Report), built from the store as it is now."""
    from ptft_core.studies.report import build_report  # plotly: only where a report is drawn

    return build_report(load_study(store, study_id))
