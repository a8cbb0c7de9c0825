"""The `study` sub-command of `python -m ptft_core`.

    study --list                                   the templates: question, runs and estimated time per preset
    study NAME --preset quick|full [--tiny-for-tests] [--name TEXT] [--out report.html]
                                                   launch a study in this process (an engine of its own, like
                                                   `run`), follow it to the end, print its conclusions
    study status [STUDY_ID]                        the studies in the store and their progress
    study report STUDY_ID --out report.html        write a study's report as one self-contained HTML file

`study NAME` holds the run store while it runs (like `run`); Ctrl-C cancels the study's queued and running
runs. `status` and `report` open the store read-only (they fail, naming the holder, while an engine owns it;
use the dashboard's Studies page then). Exit codes: 0 when every run completed, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from ptft_core import paths
from ptft_core.config import ConfigError


def add_study_commands(subparsers: argparse._SubParsersAction) -> None:
    study = subparsers.add_parser(
        "study", help="launch a study (a group of runs answering one question) or export its report",
        description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    study.add_argument("target", nargs="*", metavar="NAME | status [ID] | report ID",
                       help="a template name, `status [STUDY_ID]` or `report STUDY_ID`")
    study.add_argument("--list", action="store_true", help="list the templates with their estimated times")
    study.add_argument("--preset", choices=["quick", "full"], default="quick")
    study.add_argument("--tiny-for-tests", action="store_true",
                       help="CI form: a tiny model, a few steps per run, one seed (tests the machinery only)")
    study.add_argument("--name", default=None, help="the study's name (default: template and preset)")
    study.add_argument("--out", type=Path, default=None, help="write the report here (.html)")
    study.add_argument("--db", type=Path, default=None, help="the run store (default: PTFT_HOME/ptft.duckdb)")
    study.add_argument("--cpu-slots", type=int, default=None, help="concurrent CPU runs (default: cores / 2)")
    study.set_defaults(handler=cmd_study)


def cmd_study(args: argparse.Namespace) -> int:
    from ptft_core.studies.templates import TEMPLATES

    if args.list:
        return cmd_list(args)
    if not args.target:
        raise ConfigError("study: name a template (see `study --list`), or `status`, or `report STUDY_ID`")
    head, rest = args.target[0], args.target[1:]
    if head == "report":
        if len(rest) != 1 or args.out is None:
            raise ConfigError("usage: study report STUDY_ID --out report.html")
        return cmd_report(args, rest[0])
    if head == "status":
        return cmd_status(args, rest[0] if rest else None)
    if head not in TEMPLATES:
        raise ConfigError(f"study: {head!r} is not a template ({', '.join(TEMPLATES)}), `status` or `report`")
    if rest:
        raise ConfigError(f"study {head}: unexpected {' '.join(rest)!r}")
    return cmd_launch(args, head)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_line(name: str, preset: str, slots: int = 1, tiny: bool = False) -> str:
    from ptft_core.studies.costs import GPU_SPEEDUP, estimate_seconds
    from ptft_core.studies.templates import build_runs

    runs = build_runs(name, preset, tiny)
    cpu = estimate_seconds(runs, slots=slots)
    gpu = estimate_seconds(runs, slots=1, device="cuda")
    return (f"{len(runs)} runs, about {_duration(cpu)} on this CPU ({slots} slot{'s' if slots > 1 else ''}), "
            f"roughly {_duration(gpu)} on one GPU (~{GPU_SPEEDUP:.0f}x)")


def cmd_list(args: argparse.Namespace) -> int:
    from ptft_core.studies.templates import STUDY_PRESETS, list_templates

    slots = _slots(args)
    for t in list_templates():
        print(f"{t.name}: {t.title}")
        print(f"  {t.question}")
        for preset in STUDY_PRESETS:
            print(f"  --preset {preset}: {estimate_line(t.name, preset, slots)}")
        print()
    return 0


def _slots(args: argparse.Namespace) -> int:
    if args.cpu_slots:
        return args.cpu_slots
    from ptft_core.engine.devices import cpu_cores

    return max(1, cpu_cores() // 2)


def cmd_launch(args: argparse.Namespace, name: str) -> int:
    from ptft_core.engine import Engine
    from ptft_core.studies.driver import driver_for, study_report
    from ptft_core.studies.report import report_html

    print(f"study {name} --preset {args.preset}{' (tiny, for tests)' if args.tiny_for_tests else ''}: "
          f"{estimate_line(name, args.preset, _slots(args), args.tiny_for_tests)}", flush=True)
    engine = Engine(cpu_slots=args.cpu_slots, db_path=args.db)
    driver = driver_for(engine)
    study_id = None
    try:
        study_id = driver.launch(name, args.preset, tiny=args.tiny_for_tests, name=args.name)
        print(f"study {study_id} launched", flush=True)
        engine.start()
        shown: dict[str, str] = {}

        def show(progress: dict[str, Any]) -> None:
            for sid, p in progress.items():
                line = f"[{sid}] {p.line()}" + (f"; about {_duration(p.remaining_s)} left" if not p.finished else "")
                if shown.get(sid) != p.line():
                    shown[sid] = p.line()
                    print(line, flush=True)

        driver.wait(study_id, interval=2.0, on_progress=show)
        report = study_report(engine.store, study_id, engine.runs_dir)
        print_report(report)
        if args.out:
            _write(args.out, report_html(report))
        return 0 if report.status == "complete" else 1
    except KeyboardInterrupt:
        if study_id is not None:
            print("\ncancelling the study's runs (each saves a checkpoint)...", file=sys.stderr)
            ids = [r for r in engine.store.list_runs(study=study_id, status=["queued", "running"])["id"]]
            for run_id in ids:
                engine.cancel(run_id)
            with contextlib.suppress(TimeoutError):
                engine.wait(ids, timeout=engine.cancel_grace + 5)
        raise
    finally:
        driver.stop()
        engine.close()


def print_report(report) -> None:
    c = report.conclusions
    print(f"\n{report.title}\n{report.status_line}\n\n{c['headline']}")
    for finding in c["findings"]:
        if finding != c["headline"]:
            print(f"  - {finding}")
    if c["caveats"]:
        print("caveats:")
        for caveat in c["caveats"]:
            print(f"  - {caveat}")
    if not report.failed.empty:
        print("runs that did not finish:")
        print(report.failed.to_string(index=False))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path} ({len(text) / 1e6:.1f} MB, self-contained)")


def _read_store(db: Path | None):
    from ptft_core.store import Store

    path = db or paths.db_path()
    if not path.exists():
        raise ConfigError(f"no run store at {path} yet")
    return Store(path, read_only=True)


def cmd_report(args: argparse.Namespace, study_id: str) -> int:
    from ptft_core.studies.driver import study_report
    from ptft_core.studies.report import report_html

    with _read_store(args.db) as store:
        try:
            report = study_report(store, study_id)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0])) from None
    print_report(report)
    _write(args.out, report_html(report))
    return 0


def cmd_status(args: argparse.Namespace, study_id: str | None) -> int:
    from ptft_core.studies.driver import list_studies, study_progress

    with _read_store(args.db) as store:
        if study_id is None:
            df = list_studies(store)
            if df.empty:
                print("no studies yet")
                return 0
            df["remaining"] = [_duration(s) if not f else "" for s, f in zip(df["remaining_s"], df["finished"],
                                                                              strict=True)]
            print(df[["id", "name", "progress", "remaining"]].to_string(index=False))
            return 0
        try:
            p = study_progress(store, study_id)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0])) from None
    print(f"{p.study_id} {p.name}: {p.line()}" + ("" if p.finished else f"; about {_duration(p.remaining_s)} left"))
    for f in p.failed:
        print(f"  {f['status']}: {f['key']} {f['run_id'] or ''} {f['error'] or ''}")
    return 0
