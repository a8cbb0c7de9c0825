"""`Engine`: the queue, the device pool, the workers and the only writer of the run store.

One loop iteration (`step()`, run every `poll_interval` by the background thread that `start()` starts, or
called directly by tests and by `wait()` when no thread runs):
1. cancel requests left by other processes (`RUN_DIR/cancel.request`) are honoured;
2. every running worker is polled (exit code, or None);
3. each running run's journal is read from its byte offset and all new events of all runs are ingested in one
   transaction, together with the new offsets (so rows and offsets never disagree after a crash);
4. runs whose worker exited are finished: the journal's final status wins; without one the exit code decides
   (a signal or a non-zero code: failed, with the worker.log tail; a cancel we sent: cancelled; a prune we
   sent: pruned, with the pruner's reason);
5. a worker whose heartbeat file is older than `heartbeat_timeout` is killed and failed ("no heartbeat");
   a cancelled worker still alive after `cancel_grace` seconds gets SIGKILL;
6. queued runs are launched into free slots (priority, then FIFO; see scheduler.py), except those whose config
   starts from another run's checkpoint (`run:<id>[/step-<N>]`) that does not exist yet: they wait, and fail with
   the reason once that run has ended without it.

Recovery when an engine opens a store: runs still marked running have their journals ingested from the stored
offset; a run whose journal ends with a final status takes it (a worker that completed while no engine was
watching is completed); a worker still alive (PID alive and its command line names the run folder) is
re-adopted and watched by PID; any other becomes `interrupted`. Nothing stays "running" forever.

The engine never imports torch: the Streamlit server hosts it.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptft_core import paths
from ptft_core.config import (
    CHECKPOINT_FIELD,
    IMAGE_KINDS,
    ConfigError,
    RunConfig,
    check_run_labels,
    config_from_dict,
    config_to_dict,
)
from ptft_core.engine import scheduler
from ptft_core.engine.devices import DevicePool, Gpu, cpu_cores
from ptft_core.engine.launcher import EXIT_UNKNOWN, Launcher, LocalSubprocessLauncher
from ptft_core.engine.ray_launcher import RayLauncher, launcher_from_env
from ptft_core.ids import new_run_id
from ptft_core.journal import read_events
from ptft_core.lab import RESUMABLE, TERMINAL
from ptft_core.rundir import RunDir
from ptft_core.specs import check_names
from ptft_core.store import Store
from ptft_core.store.store import from_epoch, now

log = logging.getLogger(__name__)

@dataclass
class Active:
    """Bookkeeping of one running worker."""

    run_id: str
    run_dir: Path
    handle: Any
    device: str
    offset: int
    launched_at: float
    adopted: bool = False
    last_status: str | None = None
    error: str | None = None
    stop_reason: str | None = None  # "cancel", "prune" or "no heartbeat" once we asked it to stop
    kill_at: float | None = None  # SIGKILL deadline after a cancel
    heartbeat_saved: float = 0.0
    first_step: int = 1  # the step whose progress event says the run has started training (its resume step + 1)
    trained: bool = False  # this attempt has logged a training step: its start-up is over
    history: dict[str, Any] = field(default_factory=dict)


class Engine:
    """Runs queued runs in worker processes and owns the run store (`home/ptft.duckdb` unless `db_path`).

    Opening an engine takes the store's lock (a second engine on the same file, in any process, raises
    `StoreLockedError` at once) and recovers runs left running by an earlier engine.
    """

    def __init__(self, home: str | Path | None = None, cpu_slots: int | None = None,
                 gpu_slots_per_device: int = 1, poll_interval: float = 0.5, launcher: Launcher | None = None,
                 *, db_path: str | Path | None = None, heartbeat_timeout: float = 60.0, cancel_grace: float = 8.0,
                 launch_queued: bool = True, gpus: list[Gpu] | None = None):
        self.home = Path(home).resolve() if home is not None else paths.home()
        self.runs_dir = self.home / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.poll_interval = poll_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.cancel_grace = cancel_grace
        self.launch_queued = launch_queued
        self.launcher: Launcher = launcher or launcher_from_env() or LocalSubprocessLauncher()
        self.store = Store(db_path if db_path is not None else self.home / "ptft.duckdb")
        try:
            cores = gpus_per_node = None
            if isinstance(self.launcher, RayLauncher):  # the device pool is the cluster's
                gpus = self.launcher.cluster_gpus() if gpus is None else gpus
                cores = self.launcher.cluster_cpus()
                gpus_per_node = self.launcher.largest_node_gpus()
            self.pool = DevicePool(cpu_slots, gpu_slots_per_device, gpus, cores, gpus_per_node)
        except Exception:
            self.store.close()
            raise
        self._active: dict[str, Active] = {}
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._queued_rows: tuple[int, list[dict[str, Any]]] = (-1, [])  # (store revision, its queued runs)
        # Launch/exit times of every worker this engine watched: what the concurrency tests check.
        self.history: list[dict[str, Any]] = []
        self.max_concurrent = 0
        self._recover()

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> Engine:
        prepare = getattr(self.launcher, "prepare", None)  # the fork server, importing for the first run already
        if prepare is not None:
            prepare()
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="ptft-engine", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # the loop must outlive one bad poll (a disk error, a malformed row)
                log.exception("engine poll failed")
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, cancel_running: bool = False, timeout: float = 30.0) -> None:
        """Stop the loop. Workers keep running unless `cancel_running` (the next engine re-adopts them)."""
        if cancel_running:
            for run_id in list(self._active):
                self.cancel(run_id)
            deadline = time.monotonic() + timeout
            while self._active and time.monotonic() < deadline:
                if not self.running:
                    self.step()
                time.sleep(min(0.1, self.poll_interval))
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
        with self._lock:
            self._ingest()  # what the workers wrote since the last poll

    def close(self, cancel_running: bool = False) -> None:
        self.stop(cancel_running=cancel_running)
        close_launcher = getattr(self.launcher, "close", None)  # the local one's fork server
        if close_launcher is not None:
            close_launcher()
        self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- public API ------------------------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def submit(self, config: RunConfig | dict, priority: int = 0, parent: str | None = None,
               study: str | None = None, tags: Iterable[str] = (), name: str | None = None) -> str:
        """Queue a run; returns its id. The config is validated first (ConfigError names the field); a config
        that starts from a run's checkpoint (`run:<id>[/step-<N>]`) needs that run to exist, waits in the queue
        until the checkpoint does, and fails with the reason if the run ends without it. `parent` defaults to
        that run."""
        # Re-validated even when already a config object: dataclasses can be mutated after construction.
        config = config_from_dict(config if isinstance(config, dict) else config_to_dict(config))
        if config.device == "cuda" and not self.pool.has_gpu:
            raise ConfigError("device: 'cuda' requested but this machine has no CUDA device (use auto or cpu)")
        ranks = getattr(config, "ranks", 1)
        if ranks > self.pool.gpus_per_node and self.pool.kind_for(config.device) == "cuda":
            raise ConfigError(f"ranks: {ranks} ranks take a GPU each on one node, and the largest node here has "
                              f"{self.pool.gpus_per_node}; use at most that, or device: cpu for ranks on the CPU")
        if (ranks > cpu_cores() and self.pool.kind_for(config.device) == "cpu"
                and isinstance(self.launcher, LocalSubprocessLauncher)):
            raise ConfigError(f"ranks: {ranks} processes on this machine's {cpu_cores()} CPU cores would each get "
                              "less than a core and train slower than one process; use at most the core count")
        data = config_to_dict(config)
        check_names(data)
        check_run_labels(priority=priority, tags=tags, name=name)
        if study is not None and not self._groups_exist(study):
            raise ConfigError(f"study: there is no study or sweep {study[:80]!r} in this lab")
        with self._lock:
            dependency = scheduler.depends_on(data)
            if dependency is not None:
                known = self.store.statuses([dependency[0]])
                if not known:
                    raise ConfigError(self._missing_dependency(data, *dependency, known))
                self._check_modality(data, dependency[0])
                parent = parent or dependency[0]
            run_id = new_run_id(config.kind)
            while self.store.has_run(run_id):
                run_id = new_run_id(config.kind)
            run_dir = self.run_dir(run_id)
            run_dir.mkdir(parents=True)
            try:
                _write_json(RunDir(run_dir).config_file, data)
                _write_json(RunDir(run_dir).run_file, {"run_id": run_id, "config": data, "attempt": 1})
                self.store.insert_run({
                    "id": run_id, "name": name or config.name or run_id, "kind": config.kind, "parent_run": parent,
                    "study": study, "config": data, "status": "queued", "priority": int(priority),
                    "tags": sorted({*tags, *config.tags}), "total_steps": getattr(config, "max_steps", 0) or None,
                    "step": 0,
                })
            except BaseException:  # no folder without its row: a failed insert leaves nothing behind
                shutil.rmtree(run_dir, ignore_errors=True)
                raise
        self._wake.set()
        return run_id

    def _groups_exist(self, group: str) -> bool:
        """Whether `group`, a run's `study` column, names a study or a sweep of this lab (both group runs)."""
        for lookup in (self.store.get_study, self.store.get_sweep):
            try:
                lookup(group)
                return True
            except KeyError:
                pass
        return False

    def cancel(self, run_id: str, wait: float | None = None) -> str:
        """Cancel a queued run at once, or ask a running one to stop (SIGTERM, SIGKILL after `cancel_grace`).

        Returns the run's status (still "running" while a worker winds down, unless `wait` seconds are given
        to wait for the final one)."""
        return self._halt(run_id, "cancel", None, wait)

    def prune(self, run_id: str, reason: str, wait: float | None = None) -> str:
        """Stop a run that a sweep's pruner judged not worth finishing: the same path as `cancel` (the worker
        saves a checkpoint and exits), but the run ends `pruned` with `reason` (the step and value that decided
        it) in its error field. Its metrics and checkpoints stay; it can resume like a cancelled run."""
        return self._halt(run_id, "prune", reason, wait)

    def _halt(self, run_id: str, how: str, reason: str | None, wait: float | None) -> str:
        with self._lock:
            row = self.store.get_run(run_id)
            active = self._active.get(run_id)
            if how == "prune" and (row["status"] == "queued" or (active is not None and active.stop_reason is None)):
                _write_json(RunDir(self.run_dir(run_id)).prune_request, {"reason": reason})
            if active is not None:
                if active.stop_reason is None:
                    active.stop_reason = how
                    active.kill_at = time.monotonic() + self.cancel_grace
                    self.launcher.terminate(active.handle)
            elif row["status"] == "queued":
                final = "pruned" if how == "prune" else "cancelled"
                self.store.update_run(run_id, status=final, finished_at=now(), error=reason)
            elif row["status"] == "running":  # a worker we do not watch: recovery failed to adopt it
                self.store.update_run(run_id, status="interrupted", finished_at=now())
        if wait:
            return self.wait([run_id], timeout=wait)[run_id]
        return self.store.get_run(run_id)["status"]

    def resume(self, run_id: str, priority: int | None = None) -> str:
        """Requeue an interrupted, cancelled or failed run from its newest checkpoint (attempt + 1).

        Metric rows of earlier attempts logged after that checkpoint's step are marked superseded, so the
        series continues from the checkpoint without duplicates."""
        with self._lock:
            row = self.store.get_run(run_id)
            if run_id in self._active or row["status"] not in RESUMABLE:
                raise ValueError(f"run {run_id} is {row['status']}; only {', '.join(RESUMABLE)} runs can resume")
            run_dir = self.run_dir(run_id)
            step = RunDir(run_dir).latest_step()
            if step is None:
                raise ValueError(f"run {run_id} has no checkpoint to resume from (use retry for a fresh run)")
            # Everything the earlier attempt logged is in the store before its rows are superseded.
            events, offset = read_events(RunDir(run_dir).journal, row["journal_offset"] or 0)
            self.store.ingest_events(self._in_own_words(events), {run_id: offset})
            RunDir(run_dir).prune_request.unlink(missing_ok=True)  # a new attempt: a later stop is a cancel again
            attempt = int(row["attempt"] or 1) + 1
            self.store.mark_superseded(run_id, after_step=step, before_attempt=attempt)
            run = RunDir(run_dir).read_run()
            run["attempt"] = attempt
            _write_json(RunDir(run_dir).run_file, run)
            fields: dict[str, Any] = {"status": "queued", "attempt": attempt, "resume_step": step,
                                      "queued_at": now(), "finished_at": None, "error": None, "step": step}
            if priority is not None:
                fields["priority"] = int(priority)
            self.store.update_run(run_id, **fields)
        self._wake.set()
        return run_id

    def retry(self, run_id: str) -> str:
        """A new run with the same config, priority, parent, study, tags and name."""
        row = self.store.get_run(run_id)
        return self.submit(row["config"], priority=row["priority"] or 0, parent=row["parent_run"],
                           study=row["study"], tags=row["tags"], name=row["name"])

    def delete(self, run_id: str) -> None:
        """Remove a run that is not running: its row, metrics, artifacts and folder."""
        with self._lock:
            row = self.store.get_run(run_id)
            if run_id in self._active or row["status"] == "running":
                raise ValueError(f"run {run_id} is running; cancel it first")
            self.store.delete_run(run_id)
            shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    def wait(self, run_ids: Sequence[str], timeout: float | None = None) -> dict[str, str]:
        """Block until every run is in a final state; returns run_id -> status. Drives `step()` itself when
        the loop thread is not running. TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not self.running:
                self.step()
            with self._lock:  # not between a step's end of a worker and its final status: read both at once
                statuses = {rid: self.store.get_run(rid)["status"] for rid in run_ids}
                busy = any(r in self._active for r in run_ids)
            if all(s in TERMINAL for s in statuses.values()) and not busy:
                return statuses
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"runs not finished after {timeout} s: {statuses}")
            time.sleep(min(self.poll_interval, 0.1) if not self.running else self.poll_interval / 2)

    def devices(self) -> list[dict[str, Any]]:
        with self._lock:
            return self.pool.describe()

    def queue(self) -> list[dict[str, Any]]:
        """Queued runs in launch order, with the slot kind each waits for."""
        rows = scheduler.queue_order(self.store.runs_with_status("queued"))
        waiting = self._waiting(rows)
        return [{"id": r["id"], "name": r["name"], "kind": r["kind"], "priority": r["priority"],
                 "attempt": r["attempt"], "queued_at": r["queued_at"], "needs": scheduler.slot_kind(r, self.pool),
                 "waits_for": (f"checkpoint {waiting[r['id']][1]} of {waiting[r['id']][0]}"
                               if r["id"] in waiting else None)}
                for r in rows]

    def active_runs(self) -> list[str]:
        with self._lock:
            return list(self._active)

    # -- the loop --------------------------------------------------------------------------------------------
    def step(self) -> None:
        """One loop iteration, synchronously (see the module docstring)."""
        with self._lock:
            self._cancel_requests()
            exited = {}
            for run_id, active in self._active.items():
                code = self.launcher.poll(active.handle)
                if code is not None:
                    exited[run_id] = code
            self._ingest()
            for run_id, code in exited.items():
                self._finish(self._active.pop(run_id), code)
            self._watch()
            queued = self._startable(self._queued())
            if self.launch_queued:
                self._launch_ready(queued)
            self._prepare_warm_workers()

    def _prepare_warm_workers(self) -> None:
        """Let the launcher restart its fork server (should it have died) once no run is starting: a server's
        imports (5-7 s of one core) beside a run's own start-up (tokenising, the step-0 evaluation) slowed it by as
        much as they saved on a 2-core machine (`bench.startup_bench`); beside a run that trains they cost it next
        to nothing. A live server makes this a no-op."""
        prepare = getattr(self.launcher, "prepare", None)
        if prepare is not None and all(active.trained for active in self._active.values()):
            prepare()

    def _queued(self) -> list[dict[str, Any]]:
        """The queued runs (copies), read from the store again only after a write to it: this engine is its only
        writer, and whatever makes a queued run startable (a submit, a run's end, a parent's checkpoint) is a
        write. An idle loop then reads nothing: two queries every poll were most of an idle service's CPU."""
        revision = self.store.revision  # taken before the read: a write during it makes the next poll read again
        if self._queued_rows[0] != revision:
            self._queued_rows = (revision, self.store.runs_with_status("queued"))
        return [dict(row) for row in self._queued_rows[1]]

    def _ingest(self) -> None:
        events: list[dict[str, Any]] = []
        offsets: dict[str, int] = {}
        for run_id, active in self._active.items():
            new, offset = read_events(RunDir(active.run_dir).journal, active.offset)
            if offset != active.offset:
                events.extend(new)
                offsets[run_id] = offset
        if not offsets:
            return
        self.store.ingest_events(self._in_own_words(events), offsets)
        for run_id, offset in offsets.items():
            self._active[run_id].offset = offset
        for event in events:
            active = self._active.get(event.get("run_id"))
            if active is None:
                continue
            if event.get("type") == "status":
                active.last_status = event.get("status")
                active.error = event.get("error")
            elif event.get("type") == "progress" and (event.get("step") or 0) >= active.first_step:
                active.trained = True

    def _prune_reason(self, run_id: str) -> str | None:
        """The reason of a prune requested for this run's current attempt, or None."""
        try:
            data = json.loads(RunDir(self.run_dir(run_id)).prune_request.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return str(data.get("reason") or "pruned")

    def _in_own_words(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Journal events with a pruned worker's "cancelled" (all it knows: it was asked to stop) made `pruned`,
        with the pruner's reason, before they reach the store."""
        for i, event in enumerate(events):
            if event.get("type") == "status" and event.get("status") == "cancelled":
                reason = self._prune_reason(str(event.get("run_id")))
                if reason is not None:
                    events[i] = {**event, "status": "pruned", "error": reason}
        return events

    def _finish(self, active: Active, code: int) -> None:
        self.pool.release(active.run_id)
        active.history["exited"] = time.time()
        active.history["exit_code"] = code
        if active.last_status == "cancelled" and active.stop_reason is None:
            # Stopped by a SIGTERM nobody sent through the lab (a cancel from another process is a request file,
            # honoured before exits are read): Ray's cleanup of a dead actor, a kill by hand. Not a cancel.
            status = "interrupted"
            error = "the worker was stopped by a signal the lab did not send (its actor or node died, or a kill " \
                    "from outside); it saved a checkpoint first, so it can resume"
        elif active.last_status in ("completed", "cancelled", "failed", "pruned"):
            status, error = active.last_status, active.error  # the worker's own word (already ingested)
        elif (active.stop_reason in ("prune", None)) and (reason := self._prune_reason(active.run_id)) is not None:
            status, error = "pruned", reason  # gone before its last word (SIGKILL after the grace)
        elif active.stop_reason == "cancel":
            status, error = "cancelled", None
        elif active.stop_reason == "no heartbeat":
            status = "failed"
            error = f"no heartbeat for {self.heartbeat_timeout:.0f} s: the worker hung and was killed"
        elif code == EXIT_UNKNOWN:
            status, error = "interrupted", "the worker stopped without reporting a final status"
        else:
            status = "failed"
            if code < 0:
                try:
                    name = signal.Signals(-code).name
                except ValueError:
                    name = str(-code)
                error = f"worker killed by signal {name}"
            else:
                error = f"worker exited with code {code} without reporting a final status"
            tail = _log_tail(RunDir(active.run_dir).log)
            if tail:
                error += f"; worker.log ends: {tail}"
        fields: dict[str, Any] = {"status": status, "error": error}
        row = self.store.get_run(active.run_id)
        if row["status"] != status or row["finished_at"] is None:
            fields["finished_at"] = now()
        self.store.update_run(active.run_id, **fields)
        log.info("run %s %s%s", active.run_id, status, f": {error}" if error else "")

    def _watch(self) -> None:
        clock = time.time()
        for active in self._active.values():
            if active.kill_at is not None and time.monotonic() > active.kill_at:
                log.warning("run %s ignored SIGTERM for %.0f s: SIGKILL", active.run_id, self.cancel_grace)
                self.launcher.kill(active.handle)
                active.kill_at = None
                continue
            try:
                beat = RunDir(active.run_dir).heartbeat.stat().st_mtime
            except FileNotFoundError:
                beat = 0.0
            beat = max(beat, active.launched_at)  # a stale file from an earlier attempt does not count
            if active.stop_reason is None and clock - beat > self.heartbeat_timeout:
                log.warning("run %s: no heartbeat for %.0f s, killing it", active.run_id, clock - beat)
                active.stop_reason = "no heartbeat"
                self.launcher.kill(active.handle)
            elif beat - active.heartbeat_saved >= 5.0:
                self.store.update_run(active.run_id, heartbeat=from_epoch(beat))
                active.heartbeat_saved = beat

    def _waiting(self, queued: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
        """Queued runs whose starting checkpoint is not on disk yet: run id -> (parent id, checkpoint name). A
        resumed run is never waiting: it starts from its own checkpoint."""
        waiting = {}
        for run in queued:
            dependency = scheduler.depends_on(run["config"])
            if (dependency is not None and run["resume_step"] is None
                    and not RunDir(self.run_dir(dependency[0])).has_checkpoint(dependency[1])):
                waiting[run["id"]] = dependency
        return waiting

    def _check_modality(self, config: dict[str, Any], parent: str) -> None:
        """Refuse a run that would start from the other modality's model (a text fine-tune of an image run)."""
        parent_kind = self.store.get_run(parent)["kind"]
        if (parent_kind in IMAGE_KINDS) != (config["kind"] in IMAGE_KINDS):
            field = CHECKPOINT_FIELD[config["kind"]]
            wanted = "an image run" if config["kind"] in IMAGE_KINDS else "a text run"
            raise ConfigError(f"{field}: {config[field]}: run {parent} is {parent_kind}; {config['kind']} starts from "
                              f"{wanted}")

    def _missing_dependency(self, config: dict[str, Any], parent: str, checkpoint: str,
                            statuses: dict[str, str]) -> str | None:
        """Why the checkpoint `config` starts from will never exist, or None while it still may (it exists, or
        its run is queued or running). Read after the status: a run's checkpoints are on disk before its final
        status is, so a terminal status and no checkpoint means none is coming."""
        field = CHECKPOINT_FIELD[config["kind"]]
        status = statuses.get(parent)
        if status is None:
            return f"{field}: {config[field]}: there is no run {parent!r} in this lab"
        if status not in TERMINAL or RunDir(self.run_dir(parent)).has_checkpoint(checkpoint):
            return None
        saved = RunDir(self.run_dir(parent)).saved_checkpoints()
        return (f"{field}: {config[field]}: run {parent} {status} without checkpoint {checkpoint!r} (it has "
                f"{', '.join(saved) or 'none'})")

    def _startable(self, queued: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The queued runs that may start; a waiting run whose parent ended without its checkpoint fails."""
        waiting = self._waiting(queued)
        if not waiting:
            return queued
        statuses = self.store.statuses({parent for parent, _ in waiting.values()})
        for run in queued:
            if run["id"] not in waiting:
                continue
            problem = self._missing_dependency(run["config"], *waiting[run["id"]], statuses)
            if problem:
                log.info("run %s failed before it started: %s", run["id"], problem)
                self.store.update_run(run["id"], status="failed", finished_at=now(),
                                      error=f"its starting checkpoint will never exist: {problem}")
        return [run for run in queued if run["id"] not in waiting]

    def _launch_ready(self, queued: list[dict[str, Any]]) -> None:
        if not queued:
            return
        defers = getattr(self.launcher, "defers", None)  # the local launcher's fork server, still importing
        for run, slots in scheduler.pick(queued, self.pool):
            run_id = run["id"]
            run_dir = self.run_dir(run_id)
            if defers is not None and defers(run_dir, slots.env):
                self.pool.release(run_id)  # queued until a later poll, when its worker can be forked
                continue
            resume = run["resume_step"] is not None
            launched = time.time()
            try:
                handle = self.launcher.launch(run_dir, slots.env, resume)
            except Exception as exc:
                self.pool.release(run_id)
                log.exception("could not launch run %s", run_id)
                self.store.update_run(run_id, status="failed", error=f"launch failed: {exc}", finished_at=now())
                continue
            offset = run["journal_offset"] or 0
            journal = RunDir(run_dir).journal
            if journal.exists():  # a resumed run: start tailing where the store stopped reading
                offset = min(offset, journal.stat().st_size)
            active = Active(run_id, run_dir, handle, slots.name, offset, launched,
                            first_step=(run["resume_step"] or 0) + 1)
            active.history = {"run_id": run_id, "device": slots.name, "launched": launched, "exited": None,
                              "attempt": run["attempt"]}
            self.history.append(active.history)
            self._active[run_id] = active
            self.max_concurrent = max(self.max_concurrent, len(self._active))
            self.store.update_run(run_id, status="running", device=slots.name, pid=getattr(handle, "pid", None),
                                  started_at=run["started_at"] or now(), heartbeat=now())
            log.info("run %s launched on %s%s", run_id, slots.name, " (resume)" if resume else "")

    def _cancel_requests(self) -> None:
        """`runs cancel` from another process leaves RUN_DIR/cancel.request when this engine owns the store."""
        candidates = list(self._active) + [r["id"] for r in self._queued()]
        for run_id in candidates:
            request = RunDir(self.run_dir(run_id)).cancel_request
            if request.exists():
                request.unlink(missing_ok=True)
                log.info("run %s: cancel requested by another process", run_id)
                self.cancel(run_id)

    # -- recovery --------------------------------------------------------------------------------------------
    def _recover(self) -> None:
        for row in self.store.runs_with_status("running"):
            run_id = row["id"]
            run_dir = self.run_dir(run_id)
            events, offset = read_events(RunDir(run_dir).journal, row["journal_offset"] or 0)
            self.store.ingest_events(self._in_own_words(events), {run_id: offset})
            row = self.store.get_run(run_id)
            if row["status"] in TERMINAL:
                log.info("run %s finished while no engine watched: %s", run_id, row["status"])
                continue
            handle = self.launcher.adopt(run_dir, row["pid"])
            if handle is not None:
                slots = self.pool.occupy(row["device"], run_id)
                active = Active(run_id, run_dir, handle, slots.name, offset, time.time(), adopted=True,
                                trained=True)
                active.history = {"run_id": run_id, "device": slots.name, "launched": None, "exited": None,
                                  "attempt": row["attempt"], "adopted": True}
                self.history.append(active.history)
                self._active[run_id] = active
                log.info("run %s: re-adopted its live worker (pid %s)", run_id, row["pid"])
            elif (reason := self._prune_reason(run_id)) is not None:  # pruned, then gone before its last word
                self.store.update_run(run_id, status="pruned", finished_at=now(), error=reason)
                log.info("run %s: pruned (its worker is gone)", run_id)
            else:
                self.store.update_run(run_id, status="interrupted", finished_at=now(),
                                      error="the worker stopped while no engine was watching it")
                log.info("run %s: interrupted (its worker is gone)", run_id)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


def _log_tail(path: Path, chars: int = 300) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 4096))
            text = f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-3:])[-chars:]
