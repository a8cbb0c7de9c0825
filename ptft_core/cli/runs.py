"""The `run` and `runs ...` sub-commands of `python -m ptft_core`: clients of the lab service.

Every command talks to the service that runs for `PTFT_HOME` (`make run` starts one; so does the dashboard).
When none runs, `run` and `runs resume` start one for the command's lifetime (stopped when the command ends;
the workers go on and the next service re-adopts them), so one command still does everything with nothing to
configure. `runs list|show|export` then read the store directly (a read-only open), and `runs cancel|delete`
open an engine of their own that launches nothing.

`run CONFIG... [key=value...]` and `runs resume ID` print one progress line per run (step/total, rate, ETA)
until the runs finish; exit code 0 if every run completed, 1 otherwise. `key=value` overrides (`optim.lr=1e-4
seed=3`) apply to every config named; `run --help-config KIND` lists a kind's fields, `run --config-schema KIND`
prints its JSON Schema. Ctrl-C cancels this command's runs (each saves a checkpoint: `runs resume ID`
continues it).

An engine that is not a service (a test's, an older `ptft`) holds the store's lock: the reads then fail with
StoreLockedError naming its PID, and `runs cancel ID` leaves `RUN_DIR/cancel.request`, which that engine
honours on its next poll, and also sends SIGTERM to the run's worker itself (PID from the journal, checked
against the process's command line), so the run stops even if that engine is busy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ptft_core import paths
from ptft_core.cli.service import serve_args
from ptft_core.client import connect, find_service, start_service
from ptft_core.config import (
    KINDS,
    RELIABILITY_SPLIT,
    ConfigError,
    describe_fields,
    json_schema,
    load_config,
    with_seed,
)
from ptft_core.engine import Engine
from ptft_core.engine.launcher import worker_alive
from ptft_core.journal import read_events
from ptft_core.lab import TERMINAL, UnknownId
from ptft_core.rundir import RunDir
from ptft_core.store import Store, StoreLockedError

CANCEL_WAIT = 15.0  # seconds a cancel waits for the run's final status: the engine's grace (8 s) and a margin


def add_run_commands(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser("run", help="run configs through the engine, with progress and ETA",
                                usage="%(prog)s CONFIG [CONFIG ...] [key=value ...] [options]")
    run.add_argument("items", nargs="*", metavar="CONFIG | key=value",
                     help="config files (.yaml, .yml or .json), then overrides applied to each: "
                          "optim.lr=1e-4 seed=3 corpus=[wiki,news]")
    run.add_argument("--help-config", metavar="KIND", choices=KINDS,
                     help="print every field of a config kind (type, default, bounds, help) and exit")
    run.add_argument("--config-schema", metavar="KIND", choices=KINDS,
                     help="print the JSON Schema of a config kind and exit")
    run.add_argument("--seeds", type=_seeds, default=None, help="comma-separated seeds: one run per seed")
    run.add_argument("--priority", type=int, default=0, help="queue priority (higher first)")
    run.add_argument("--tag", action="append", default=[], help="tag the runs (repeatable)")
    run.add_argument("--detach", action="store_true",
                     help="return once the runs have started; their workers go on (the next engine adopts them)")
    _engine_args(run)
    run.set_defaults(handler=cmd_run)

    runs = subparsers.add_parser("runs", help="list, show, cancel, resume, export or delete runs")
    sub = runs.add_subparsers(dest="runs_command", required=True)

    ls = sub.add_parser("list", help="the runs in the store, newest first")
    ls.add_argument("--status")
    ls.add_argument("--kind", choices=KINDS)
    ls.add_argument("--tag")
    ls.add_argument("--db", type=Path, default=None)
    ls.set_defaults(handler=cmd_list)

    show = sub.add_parser("show", help="a run's row, config and latest metrics")
    show.add_argument("run_id")
    show.add_argument("--db", type=Path, default=None)
    show.set_defaults(handler=cmd_show)

    cancel = sub.add_parser("cancel", help="cancel a queued or running run")
    cancel.add_argument("run_id")
    _engine_args(cancel)
    cancel.set_defaults(handler=cmd_cancel)

    resume = sub.add_parser("resume", help="resume a run from its newest checkpoint, and wait for it")
    resume.add_argument("run_id")
    _engine_args(resume)
    resume.set_defaults(handler=cmd_resume)

    export = sub.add_parser("export", help="export runs' metrics to .csv or .parquet (+ .runs.json)")
    export.add_argument("run_ids", nargs="+")
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--db", type=Path, default=None)
    export.set_defaults(handler=cmd_export)

    model = sub.add_parser("export-model", help="a fine-tune's final checkpoint as a Hugging Face model folder "
                                                "with its model card (loadable by transformers' pipeline)")
    model.add_argument("run_id")
    model.add_argument("--out", type=Path, required=True, help="a new (or empty) folder")
    model.add_argument("--db", type=Path, default=None)
    model.set_defaults(handler=cmd_export_model)

    delete = sub.add_parser("delete", help="delete a run that is not running (row, metrics, folder)")
    delete.add_argument("run_id")
    _engine_args(delete)
    delete.set_defaults(handler=cmd_delete)


def _engine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, default=None, help="the run store (default: PTFT_HOME/ptft.duckdb)")
    parser.add_argument("--cpu-slots", type=int, default=None, help="concurrent CPU runs (default: cores / 2)")


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds: expected comma-separated integers, got {text!r}") from None


def _engine(args: argparse.Namespace, **kwargs: Any):

    return Engine(cpu_slots=args.cpu_slots, db_path=args.db, **kwargs)


@contextlib.contextmanager
def lab_session(args: argparse.Namespace) -> Iterator[Any]:
    """The client of the lab service; when none runs, one started for this command and stopped at its end."""

    started = None
    if find_service() is None:  # a service of this command's own: it ends with the command, however it ends
        _, started = start_service(args=[*serve_args(args), "--owner-pid", str(os.getpid())])
    lab = connect()
    try:
        yield lab
    finally:
        lab.close()
        if started is not None:  # stopped cleanly: it closes the store; the workers go on
            started.terminate()
            started.wait(timeout=60)


def follow_launched(lab, what: str, launched_id: str, detach: bool, progress, cancel, left=lambda p: "",
                    interval: float = 2.0):
    """After a study or sweep is launched: with `detach`, say how to find it and return None; else print its
    progress line (`progress()`, one whose `line()` changed) until it is `finished`, and return the last one.
    Ctrl-C calls `cancel()` (it returns the run ids it stopped), waits briefly for them, and re-raises."""
    print(f"{what} {launched_id} launched", flush=True)
    if detach:
        print(f"detached: the lab service drives it; `{what} status {launched_id}` shows where it stands")
        return None
    try:
        shown = None
        while True:
            found = progress()
            if found.line() != shown:
                shown = found.line()
                print(f"[{launched_id}] {shown}" + ("" if found.finished else left(found)), flush=True)
            if found.finished:
                return found
            time.sleep(interval)
    except KeyboardInterrupt:
        print(f"\ncancelling the {what} (its running runs each save a checkpoint)...", file=sys.stderr)
        ids = cancel()
        with contextlib.suppress(TimeoutError):
            lab.wait(ids, timeout=CANCEL_WAIT)
        raise


def running_lab():
    """The client of the running service, or None."""

    return connect() if find_service() is not None else None


@contextlib.contextmanager
def read_source(db: Path | None) -> Iterator[Any]:
    """What the read-only commands query: the running service, else the store itself (read-only), else None."""
    lab = running_lab()
    if lab is not None:
        with lab:
            yield lab
        return
    path = db or paths.db_path()
    if not path.exists():
        yield None
        return
    try:
        store = Store(path, read_only=True)
    except RuntimeError as exc:  # an older schema: migrate once with a read-write open
        if isinstance(exc, StoreLockedError):
            raise
        Store(path).close()
        store = Store(path, read_only=True)
    with store:
        yield store


# -- run / resume: follow the runs until they finish -----------------------------------------------------------
def split_run_items(items: list[str]) -> tuple[list[Path], list[str]]:
    """(config files, key=value overrides): an item with '=' that is not an existing file is an override."""
    files, overrides = [], []
    for item in items:
        (overrides if "=" in item and not Path(item).is_file() else files).append(item)
    if not files:
        raise ConfigError("run: name at least one config file (overrides such as optim.lr=1e-4 follow it)")
    return [Path(f) for f in files], overrides


def cmd_run(args: argparse.Namespace) -> int:
    if args.help_config or args.config_schema:
        print(describe_fields(args.help_config) if args.help_config
              else json.dumps(json_schema(args.config_schema), indent=2))
        return 0
    files, overrides = split_run_items(args.items)
    configs = [load_config(p, overrides) for p in files]  # every ConfigError before any work
    if args.seeds:
        configs = [with_seed(c, s) for c in configs for s in args.seeds]
    with lab_session(args) as lab:
        ids = []
        try:
            ids = [lab.submit(c, priority=args.priority, tags=args.tag) for c in configs]
            for run_id, config in zip(ids, configs, strict=True):
                print(f"queued {run_id} ({config.kind}{', ' + config.name if config.name else ''})", flush=True)
            if args.detach:
                while any(lab.get_run(r)["status"] == "queued" for r in ids):
                    time.sleep(0.5)
                print("detached: the workers go on; the lab service (or the next one) ingests their results")
                return 0
            return follow(lab, ids)
        except KeyboardInterrupt:
            _cancel_all(lab, ids)
            raise


def cmd_resume(args: argparse.Namespace) -> int:
    with lab_session(args) as lab:
        try:
            lab.resume(args.run_id)
            print(f"resuming {args.run_id} (attempt {lab.get_run(args.run_id)['attempt']})", flush=True)
            return follow(lab, [args.run_id])
        except KeyboardInterrupt:
            _cancel_all(lab, [args.run_id])
            raise
        except (KeyError, ValueError) as exc:
            print(f"error: {exc.args[0]}", file=sys.stderr)
            return 2


def _cancel_all(lab, ids: list[str]) -> None:
    print("\ncancelling (each run saves a checkpoint; `runs resume ID` continues it)...", file=sys.stderr)
    for run_id in ids:
        lab.cancel(run_id)
    with contextlib.suppress(TimeoutError):
        lab.wait(ids, timeout=CANCEL_WAIT)


def follow(lab, run_ids: list[str], interval: float = 2.0, out=print) -> int:
    """Print progress lines until every run is final; 0 if all completed, else 1."""
    first: dict[str, tuple[float, int]] = {}
    shown: dict[str, Any] = {}
    done: dict[str, str] = {}
    while len(done) < len(run_ids):
        for run_id in run_ids:
            if run_id in done:
                continue
            row = lab.get_run(run_id)
            status, step, total = row["status"], row["step"] or 0, row["total_steps"]
            if status in TERMINAL:
                done[run_id] = status
                took = ""
                if row["started_at"] and row["finished_at"]:
                    took = f" in {_clock((row['finished_at'] - row['started_at']).total_seconds())}"
                out(f"{row['name']} [{run_id}] {status}{took}" + (f": {row['error']}" if row["error"] else ""),
                    flush=True)
                continue
            if status != "running" or shown.get(run_id) == (status, step):
                continue
            shown[run_id] = (status, step)
            clock = time.monotonic()
            first.setdefault(run_id, (clock, step))
            t0, s0 = first[run_id]
            line = f"{row['name']} [{run_id}] step {step}"
            if total:
                line += f"/{total} ({100 * step / total:.0f}%)"
            if row.get("train_steps_per_s"):  # the run's own pace: training alone, and what its schedule has left
                line += f" train {row['train_steps_per_s']:.2f} steps/s"
                if row.get("eta_s") is not None:
                    line += f" ETA {_clock(row['eta_s'])}"
            elif step > s0 and clock > t0:  # a run that reports no pace: wall time, evaluations included
                rate = (step - s0) / (clock - t0)
                line += f" {rate:.2f} steps/s (wall)"
                if total:
                    line += f" ETA {_clock((total - step) / rate)}"
            out(line, flush=True)
        if len(done) < len(run_ids):
            time.sleep(interval)
    return 0 if all(s == "completed" for s in done.values()) else 1


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# -- cancel ---------------------------------------------------------------------------------------------------
def cmd_cancel(args: argparse.Namespace) -> int:
    lab = running_lab()
    try:
        if lab is not None:
            with lab:
                lab.cancel(args.run_id)
                status = lab.wait([args.run_id], timeout=CANCEL_WAIT)[args.run_id]
        else:
            try:
                engine = _engine(args, launch_queued=False)
            except StoreLockedError as locked:
                return _cancel_without_store(args.run_id, locked)
            with engine:
                status = engine.cancel(args.run_id, wait=CANCEL_WAIT)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    print(f"{args.run_id}: {status}")
    return 0


def _cancel_without_store(run_id: str, locked: StoreLockedError) -> int:
    run_dir = paths.run_dir(run_id)
    if not RunDir(run_dir).run_file.is_file():
        print(f"error: no run {run_id!r} under {paths.runs_dir()}", file=sys.stderr)
        return 2
    RunDir(run_dir).cancel_request.touch()
    pid = worker_pid(run_dir)
    signalled = False
    if worker_alive(pid, run_dir):
        try:
            os.killpg(pid, signal.SIGTERM)
            signalled = True
        except OSError:
            pass
    holder = f"process {locked.pid}" if locked.pid else "another process"
    what = f"sent SIGTERM to its worker (pid {pid}); " if signalled else ""
    print(f"{run_id}: cancel requested: {what}the engine in {holder}, which owns the store, records it")
    return 0


def worker_pid(run_dir: Path) -> int | None:
    """The PID in the journal's latest `status running` event."""
    events, _ = read_events(RunDir(run_dir).journal)
    for event in reversed(events):
        if event.get("type") == "status" and event.get("status") == "running" and event.get("pid"):
            return int(event["pid"])
    return None


# -- read-only commands ---------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    with read_source(args.db) as source:
        if source is None:
            print("no runs yet")
            return 0
        df = source.list_runs(status=args.status, kind=args.kind, tag=args.tag)
    if df.empty:
        print("no runs")
        return 0
    rows = []
    for r in df.to_dict("records"):
        total = r["total_steps"]
        step = "" if r["step"] is None or r["step"] != r["step"] else int(r["step"])
        rows.append({
            "id": r["id"], "name": r["name"], "kind": r["kind"], "status": r["status"],
            "step": f"{step}/{int(total)}" if total == total and total is not None else str(step),
            "device": r["device"] or "", "created": str(r["created_at"])[:19], "tags": ",".join(r["tags"]),
        })
    import pandas as pd

    print(pd.DataFrame(rows).to_string(index=False))
    return 0


def known_run(source: Any, run_id: str) -> dict[str, Any]:
    """The row of `run_id` from a `read_source`; UnknownId (one line, exit 2) when there is none."""
    if source is None:
        raise UnknownId(f"no run {run_id!r} (no store yet)")
    try:
        return source.get_run(run_id)
    except KeyError as exc:
        raise UnknownId(exc.args[0]) from None


def cmd_show(args: argparse.Namespace) -> int:
    with read_source(args.db) as source:
        row = known_run(source, args.run_id)
        last = source.last_metrics(args.run_id)
        artifacts = source.artifacts(args.run_id)
    config = row.pop("config")
    for key, value in row.items():
        print(f"{key:>15}: {value if value is not None else ''}")
    print("\nconfig:")
    print(json.dumps(config, indent=2, sort_keys=True))
    if not last.empty:
        print("\nlatest metrics:")
        print(last.to_string(index=False))
    if not artifacts.empty:
        print("\nartifacts:")
        print(artifacts[["step", "kind", "path"]].to_string(index=False))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with read_source(args.db) as source:
        if source is None:
            print("error: no store yet", file=sys.stderr)
            return 2
        try:
            path = source.export_metrics(args.run_ids, args.out)
        except (KeyError, ValueError) as exc:
            print(f"error: {exc.args[0]}", file=sys.stderr)
            return 2
    print(f"wrote {path} and {path.with_name(path.stem + '.runs.json')}")
    return 0


def cmd_export_model(args: argparse.Namespace) -> int:
    import pandas as pd

    from ptft_core.export import export_model  # transformers: only where a model is exported

    with read_source(args.db) as source:
        run = known_run(source, args.run_id)
        last = source.last_metrics(args.run_id)
        bins = source.metric_series([args.run_id], splits=[RELIABILITY_SPLIT]).rename(columns={"x": "step"})
    metrics = pd.concat([last[last["split"] != RELIABILITY_SPLIT], bins[["split", "name", "step", "value"]]])
    out = export_model(run, metrics, args.out)
    print(f"wrote {out} (model card: {out / 'README.md'})")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    lab = running_lab()
    try:
        with lab if lab is not None else _engine(args, launch_queued=False) as owner:
            owner.delete(args.run_id)
    except (KeyError, ValueError) as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    print(f"deleted {args.run_id}")
    return 0
