"""The study driver: launches a study's plan through the engine, submitting each run once its parent's checkpoint
exists, and runs the cross-domain evaluations; plus the read side (progress, the data a report is built from).

Dependencies without engine support. The engine queues runs but knows nothing of "after": a fine-tune of
`run:<pretrain id>/step-<N>` can only start once that checkpoint is on disk. So a study is stored as a plan
(`studies.config`: every planned run's config, labels and `base_from`), and `StudyDriver.tick()` — called by
a background thread (`start()`), by the CLI's wait loop or by a page — derives each planned run's state from
the store and the run folders, and submits the runs that became ready:

    planned run -> no run yet:  parent's checkpoint exists (or parent completed)  -> submit (parent=that run)
                                parent failed/cancelled/interrupted without it    -> "blocked" (never submitted)
                                otherwise                                         -> "waiting"
               -> its run (tag `study-key:<key>`): the run's own status

Nothing but the runs themselves is state, so a driver can stop and start (or run in another process later)
without losing track: the next tick picks up where the store stands. A blocked run unblocks by itself if its
parent is resumed and finishes. Ticks in one process are serialised by a lock (no double submits).

Cross-domain evaluation (the domain-shift study) has no run kind of its own: after a fine-tune completes, the
driver starts `python -m ptft_core.studies.driver cross-eval RUN_DIR ...` (one at a time, one thread), which
scores the final checkpoint on other datasets' test splits and appends the results to the run's own journal
(split "transfer", names "<metric>@<dataset>"); when it exits the driver ingests the new journal lines into the
store, exactly as the engine ingests a run. A failure leaves `RUN_DIR/cross_eval.failed` (no retry loop).

This module never imports torch, except inside `cross_evaluate` (the subprocess).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import platform
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ptft_core import paths
from ptft_core.config import ConfigError, FinetuneConfig, config_to_dict
from ptft_core.journal import JOURNAL_NAME, read_events
from ptft_core.studies.costs import dataset_chance, dataset_classes, dataset_shape, estimate_seconds, run_seconds
from ptft_core.studies.templates import TRANSFER_SPLIT, BaseFrom, PlannedRun, build_runs, get_template

log = logging.getLogger(__name__)

KEY_TAG = "study-key:"
PLAN_VERSION = 1
TERMINAL = ("completed", "failed", "cancelled", "interrupted")
CROSS_EVAL_FAILED = "cross_eval.failed"
CROSS_EVAL_LOG = "cross_eval.log"
CROSS_EVAL_METRICS = ("accuracy", "f1", "loss")


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
    datasets = sorted({d for r in runs if isinstance(r.config, FinetuneConfig)
                       for d in (r.config.dataset, r.config.then_dataset, *r.cross_eval) if d})
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


def new_study_id() -> str:
    return f"st-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


# --- the state of a study, derived from the store --------------------------------------------------------------


@dataclass
class RunState:
    key: str
    planned: PlannedRun
    state: str  # waiting | ready | blocked | queued | running | completed | failed | cancelled | interrupted
    run_id: str | None = None
    row: dict[str, Any] | None = None
    parent_id: str | None = None
    reason: str = ""  # why waiting or blocked


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
    cross_eval: dict[str, str]  # key -> pending | running | done | failed

    @property
    def completed(self) -> int:
        return self.counts.get("completed", 0)

    def line(self) -> str:
        parts = [f"{self.completed}/{self.total} completed"]
        for state in ("running", "queued", "waiting", "failed", "cancelled", "interrupted", "blocked"):
            if self.counts.get(state):
                parts.append(f"{self.counts[state]} {state}")
        pending = sum(1 for v in self.cross_eval.values() if v in ("pending", "running"))
        if pending:
            parts.append(f"{pending} cross-domain evaluations pending")
        return ", ".join(parts)


def _pick(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Of several runs of one key (a retry adds one), the one that counts: completed, else live, else newest."""
    rank = {"completed": 0, "running": 1, "queued": 1}
    return sorted(rows, key=lambda r: (rank.get(r["status"], 2), -pd.Timestamp(r["created_at"]).value))[0]


def study_runs(store, study_id: str) -> pd.DataFrame:
    return store.list_runs(study=study_id)


def run_states(plan: Plan, runs: pd.DataFrame, runs_dir: Path) -> dict[str, RunState]:
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
        if base is None:
            states[planned.key] = RunState(planned.key, planned, "ready")
            continue
        parent = states[base.key]
        if parent.run_id is None:
            blocked = parent.state == "blocked"
            states[planned.key] = RunState(planned.key, planned, "blocked" if blocked else "waiting",
                                           reason=f"{base.key} is {parent.state}")
            continue
        if _checkpoint_ready(parent, base, runs_dir):
            states[planned.key] = RunState(planned.key, planned, "ready", parent_id=parent.run_id)
        elif parent.state in TERMINAL:
            what = f"{base.checkpoint} of " if base.checkpoint else ""
            states[planned.key] = RunState(planned.key, planned, "blocked", parent_id=parent.run_id,
                                           reason=f"{what}{base.key} ({parent.run_id}) is missing: it {parent.state}")
        else:
            states[planned.key] = RunState(planned.key, planned, "waiting", parent_id=parent.run_id,
                                           reason=f"waiting for {base.checkpoint or 'the end'} of {base.key}")
    return states


def _checkpoint_ready(parent: RunState, base: BaseFrom, runs_dir: Path) -> bool:
    if base.checkpoint is None:
        return parent.state == "completed"
    folder = runs_dir / parent.run_id / "checkpoints" / base.checkpoint
    return (folder / "config.json").is_file()  # checkpoints are renamed into place: present means complete


def _cross_eval_state(state: RunState, store, runs_dir: Path, running: set[str]) -> str | None:
    if not state.planned.cross_eval:
        return None
    if state.state != "completed":
        return "pending" if state.state not in TERMINAL + ("blocked",) else None
    if state.run_id in running:
        return "running"
    if (runs_dir / state.run_id / CROSS_EVAL_FAILED).exists():
        return "failed"
    names = store.metric_names([state.run_id])
    return "done" if (names["split"] == TRANSFER_SPLIT).any() else "pending"


def get_plan(store, study_id: str) -> tuple[dict[str, Any], Plan]:
    row = store.get_study(study_id)
    if not row.get("config"):
        raise KeyError(f"study {study_id!r} has no plan (not created by ptft studies)")
    return row, Plan.from_dict(row["config"])


def study_progress(store, study_id: str, runs_dir: Path | None = None,
                   running_evals: Iterable[str] = ()) -> StudyProgress:
    runs_dir = runs_dir or paths.runs_dir()
    row, plan = get_plan(store, study_id)
    states = run_states(plan, study_runs(store, study_id), runs_dir)
    counts: dict[str, int] = {}
    for s in states.values():
        state = "waiting" if s.state == "ready" else s.state
        counts[state] = counts.get(state, 0) + 1
    running = set(running_evals)
    cross = {k: v for k, s in states.items() if (v := _cross_eval_state(s, store, runs_dir, running)) is not None}
    seconds = run_seconds(plan.runs)
    remaining = 0.0
    for key, s in states.items():
        if s.state in ("waiting", "ready", "queued"):
            remaining += seconds[key]
        elif s.state == "running" and s.row is not None:
            total, step = s.row.get("total_steps") or 0, s.row.get("step") or 0
            remaining += seconds[key] * (1 - step / total if total else 0.5)
    finished = (all(s.state in TERMINAL + ("blocked",) for s in states.values())
                and all(v in ("done", "failed") for v in cross.values()))
    failed = [{"key": s.key, "run_id": s.run_id, "status": s.state,
               "error": (s.row or {}).get("error") or s.reason}
              for s in states.values() if s.state in ("failed", "cancelled", "interrupted", "blocked")]
    return StudyProgress(study_id, row.get("name") or study_id, plan.template, plan.preset, row.get("created_at"),
                         len(states), counts, finished, remaining, failed, cross)


def list_studies(store, runs_dir: Path | None = None, running_evals: Iterable[str] = ()) -> pd.DataFrame:
    """One row per study, newest first, with its progress (for the page and `study --status`)."""
    studies = store.list_studies()
    rows = []
    for study in studies.to_dict("records"):
        try:
            p = study_progress(store, study["id"], runs_dir, running_evals)
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


class StudyDriver:
    """Launches studies and moves them along; one per engine (`driver_for(engine)`).

    `tick(engine)` is one pass over every unfinished study: submit ready runs, start/finish cross-domain
    evaluations. `start()` ticks in a daemon thread every `interval` seconds.
    """

    def __init__(self, engine, interval: float = 2.0):
        self.engine = engine
        self.interval = interval
        self._lock = threading.RLock()
        self._finished: set[str] = set()
        self._evals: dict[str, tuple[subprocess.Popen, str]] = {}  # run_id -> (process, study_id)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def runs_dir(self) -> Path:
        return Path(self.engine.runs_dir)

    # -- launching ---------------------------------------------------------------------------------------------
    def launch(self, template: str, preset: str = "quick", tiny: bool = False, name: str | None = None) -> str:
        """Create the study (its plan in the store) and submit the runs that need nothing; returns its id."""
        get_template(template)
        slots = max(1, sum(d["slots"] for d in self.engine.devices() if d["kind"] == "cpu"))
        has_gpu = any(d["kind"] == "cuda" for d in self.engine.devices())
        plan = make_plan(template, preset, tiny, slots=slots, device="cuda" if has_gpu else "cpu")
        plan.env = {**plan.env, **environment(self.engine.devices())}
        study_id = new_study_id()
        name = name or f"{template} ({preset}{', tiny' if tiny else ''})"
        self.engine.store.create_study(study_id, name, template=template, preset=preset, config=plan.to_dict())
        log.info("study %s (%s): %d runs planned, about %.0f min", study_id, name, len(plan.runs),
                 plan.estimate_s / 60)
        self.tick()
        return study_id

    # -- moving along ------------------------------------------------------------------------------------------
    def tick(self, engine=None) -> list[str]:
        """One pass over the unfinished studies; returns the ids of the runs submitted."""
        if engine is not None and engine is not self.engine:
            raise ValueError("this driver belongs to another engine; use driver_for(engine)")
        submitted: list[str] = []
        with self._lock:
            self._reap_evals()
            pending: list[tuple[str, RunState]] = []
            for study_id in self.engine.store.list_studies()["id"].tolist():
                if study_id in self._finished:
                    continue
                try:
                    submitted += self._tick_study(study_id, pending)
                except (KeyError, ValueError, ConfigError) as exc:
                    log.warning("study %s: %s", study_id, exc)
                    self._finished.add(study_id)  # not ours, or a broken plan: stop looking at it
            self._launch_cross_evals(pending)
        return submitted

    def _tick_study(self, study_id: str, pending: list[tuple[str, RunState]]) -> list[str]:
        store = self.engine.store
        row, plan = get_plan(store, study_id)
        states = run_states(plan, study_runs(store, study_id), self.runs_dir)
        submitted = []
        for state in states.values():
            if state.state == "ready":
                submitted.append(self._submit(study_id, row.get("name") or study_id, state))
            elif state.state == "completed" and state.planned.cross_eval and self._needs_cross_eval(state):
                pending.append((study_id, state))
        progress = study_progress(store, study_id, self.runs_dir, self._evals)
        if progress.finished and not submitted and not any(sid == study_id for sid, _ in pending):
            self._finished.add(study_id)
            log.info("study %s finished: %s", study_id, progress.line())
        return submitted

    def _submit(self, study_id: str, study_name: str, state: RunState) -> str:
        planned = state.planned
        config = config_to_dict(planned.config)
        if planned.base_from is not None:
            spec = planned.base_from.spec(state.parent_id)
            config["base" if config["kind"] == "finetune" else "model"] = spec
        run_id = self.engine.submit(config, priority=planned.priority, parent=state.parent_id, study=study_id,
                                    tags=[f"{KEY_TAG}{planned.key}"], name=f"{study_name} / {planned.key}")
        log.info("study %s: submitted %s as %s", study_id, planned.key, run_id)
        return run_id

    # -- cross-domain evaluation ---------------------------------------------------------------------------------
    def _needs_cross_eval(self, state: RunState) -> bool:
        """A completed run whose cross-domain scores are neither in the store nor being computed nor failed."""
        run_id = state.run_id
        if run_id in self._evals or (self.runs_dir / run_id / CROSS_EVAL_FAILED).exists():
            return False
        store = self.engine.store
        if (store.metric_names([run_id])["split"] == TRANSFER_SPLIT).any():
            return False
        # An evaluation that finished while no driver watched only needs its journal lines ingested.
        return not (self._ingest_journal(run_id) and (store.metric_names([run_id])["split"] == TRANSFER_SPLIT).any())

    def _launch_cross_evals(self, pending: list[tuple[str, RunState]]) -> None:
        """One process scores every pending run (one model load each, one interpreter start for all); one such
        process at a time, with one thread, beside the training runs."""
        if self._evals or not pending:
            return
        device = "cuda" if any(d["kind"] == "cuda" for d in self.engine.devices()) else "cpu"
        spec = [{"run_dir": str(self.runs_dir / s.run_id), "datasets": list(s.planned.cross_eval),
                 "step": int(s.row.get("step") or 0)} for _, s in pending]
        cmd = [sys.executable, "-m", "ptft_core.studies.driver", "cross-eval", "--spec", json.dumps(spec),
               "--device", device]
        env = {**os.environ, "PTFT_HOME": str(self.engine.home), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PTFT_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(paths.REPO_ROOT),
                                                                             os.environ.get("PYTHONPATH")]))}
        if device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        log_path = self.runs_dir / pending[0][1].run_id / CROSS_EVAL_LOG
        with open(log_path, "ab") as out:
            process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        for study_id, state in pending:
            self._evals[state.run_id] = (process, study_id)
        log.info("cross-domain evaluation of %d run(s) started (pid %d, log %s)", len(pending), process.pid, log_path)

    def _reap_evals(self) -> None:
        for run_id, (process, study_id) in list(self._evals.items()):
            code = process.poll()
            if code is None:
                continue
            del self._evals[run_id]
            self._ingest_journal(run_id)
            marker = self.runs_dir / run_id / CROSS_EVAL_FAILED
            scored = (self.engine.store.metric_names([run_id])["split"] == TRANSFER_SPLIT).any()
            if not scored and not marker.exists():
                tail = _tail(self.runs_dir / run_id / CROSS_EVAL_LOG)
                marker.write_text(f"the evaluation process exited with code {code} without scoring this run"
                                  + (f": {tail}" if tail else ""), encoding="utf-8")
            if marker.exists():
                log.warning("study %s: cross-domain evaluation of %s failed: %s", study_id, run_id,
                            marker.read_text(encoding="utf-8")[:300])
            self._finished.discard(study_id)

    def _ingest_journal(self, run_id: str) -> bool:
        """Ingest journal lines the engine has not (it only tails running runs); True if there were any."""
        store = self.engine.store
        row = store.get_run(run_id)
        if row["status"] not in TERMINAL or run_id in self.engine.active_runs():
            return False
        events, offset = read_events(self.runs_dir / run_id / JOURNAL_NAME, row["journal_offset"] or 0)
        if offset == (row["journal_offset"] or 0):
            return False
        # Only metrics and notes: a status line here would be a worker's, already ingested.
        store.ingest_events([e for e in events if e.get("type") != "status"], {run_id: offset})
        return True

    def running_evals(self) -> list[str]:
        return list(self._evals)

    # -- the background thread and waiting ------------------------------------------------------------------------
    def start(self) -> StudyDriver:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="ptft-studies", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        # The engine's store closes when the engine does (the app's engine was released): the driver ends with it.
        while not self._stop.is_set() and not self.engine.store.closed:
            try:
                self.tick()
            except Exception:  # the loop must outlive one bad tick
                log.exception("study driver tick failed")
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def progress(self, study_id: str) -> StudyProgress:
        return study_progress(self.engine.store, study_id, self.runs_dir, self._evals)

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


_DRIVERS: dict[int, StudyDriver] = {}
_DRIVERS_LOCK = threading.Lock()


def driver_for(engine, start: bool = False) -> StudyDriver:
    """The one driver of `engine` in this process (created on first use; `start=True` starts its thread)."""
    with _DRIVERS_LOCK:
        driver = _DRIVERS.get(id(engine))
        if driver is None or driver.engine is not engine:
            driver = _DRIVERS[id(engine)] = StudyDriver(engine)
    return driver.start() if start else driver


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


def load_study(store, study_id: str, runs_dir: Path | None = None) -> StudyData:
    runs_dir = runs_dir or paths.runs_dir()
    row, plan = get_plan(store, study_id)
    states = run_states(plan, study_runs(store, study_id), runs_dir)
    rows = []
    for s in states.values():
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
    wall = store.metric_series(ids, names=["loss"], splits=["train"], x="wall_time", max_points=2000)
    pretrain_ids = [s.run_id for s in states.values() if s.run_id and s.planned.config.kind == "pretrain"]
    tokens = store.metric_series(pretrain_ids, names=["loss"], x="tokens_seen", max_points=2000)
    cross = {k: v for k, s in states.items() if (v := _cross_eval_state(s, store, runs_dir, set())) is not None}
    study = {k: row.get(k) for k in ("id", "name", "template", "preset", "created_at")}
    return StudyData(study, plan, runs, metrics, wall, tokens, cross)


def study_report(store, study_id: str, runs_dir: Path | None = None):
    """The report of a study (report.Report), built from the store as it is now."""
    from ptft_core.studies.report import build_report

    return build_report(load_study(store, study_id, runs_dir))


# --- cross-domain evaluation (the subprocess) ----------------------------------------------------------------------


def cross_evaluate(run_dir: Path, datasets: list[str], step: int, device: str = "cpu") -> dict[str, dict[str, float]]:
    """Score a fine-tune's final checkpoint on other datasets' test splits; append the metrics to its journal
    (split "transfer", names "<metric>@<dataset>", at `step`)."""
    import torch

    from ptft_core.config import config_from_dict
    from ptft_core.data import label_names
    from ptft_core.journal import JournalWriter
    from ptft_core.models import load_classifier, pick_device
    from ptft_core.training.finetune import classify, tokenize_split

    torch.set_num_threads(int(os.environ.get("PTFT_THREADS") or 1))
    run_dir = Path(run_dir)
    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    config = config_from_dict(run["config"])
    trained_on = config.then_dataset or config.dataset
    labels = label_names(trained_on)
    model, tokenizer = load_classifier(str(run_dir / "checkpoints" / "final"), labels)
    torch_device = pick_device(device)
    model.to(torch_device)
    results = {}
    for dataset in datasets:
        if label_names(dataset) != labels:
            raise ConfigError(f"cross-eval: {dataset} labels {label_names(dataset)} differ from {trained_on}'s "
                              f"{labels}")
        examples = tokenize_split(tokenizer, dataset, "test", config.max_length)
        results[dataset] = classify(model, examples, tokenizer.pad_token_id, torch_device)
    journal = JournalWriter(run_dir, run["run_id"])  # written at the end: all datasets or none
    try:
        for dataset, metrics in results.items():
            for name in CROSS_EVAL_METRICS:
                journal.metric(step, f"{name}@{dataset}", metrics[name], TRANSFER_SPLIT)
        journal.event("cross_eval", datasets=list(results))
    finally:
        journal.close()
    return results


def cross_evaluate_all(spec: list[dict[str, Any]], device: str = "cpu") -> int:
    """Each run of `spec` ([{run_dir, datasets, step}]) in turn; a run that fails gets `cross_eval.failed`
    (the error) and the others go on. Returns the number of failures."""
    import traceback

    failures = 0
    for item in spec:
        run_dir = Path(item["run_dir"])
        try:
            results = cross_evaluate(run_dir, item["datasets"], int(item.get("step") or 0), device)
            log.info("%s: %s", run_dir.name, ", ".join(f"{d} {m['accuracy']:.4f}" for d, m in results.items()))
        except Exception as exc:  # noqa: BLE001 - one bad run must not stop the others
            failures += 1
            traceback.print_exc()
            (run_dir / CROSS_EVAL_FAILED).write_text(f"{type(exc).__name__}: {exc}"[:2000], encoding="utf-8")
    return failures


def _tail(path: Path, chars: int = 400) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    return " | ".join(text.splitlines()[-3:])[-chars:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ptft_core.studies.driver")
    sub = parser.add_subparsers(dest="command", required=True)
    cross = sub.add_parser("cross-eval", help="score fine-tunes' final checkpoints on other datasets' test splits")
    cross.add_argument("--spec", required=True, help='JSON: [{"run_dir": ..., "datasets": [...], "step": N}]')
    cross.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cross_evaluate_all(json.loads(args.spec), args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
