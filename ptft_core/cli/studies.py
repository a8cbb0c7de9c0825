"""The `study` sub-command of `python -m ptft_core`.

    study --list                                   the templates: question, runs and estimated time per preset
    study NAME --preset quick|full [--tiny-for-tests] [--name TEXT] [--out report.html]
                                                   launch a study through the lab service, follow it to the
                                                   end, print its conclusions
    study status [STUDY_ID]                        the studies and their progress
    study report STUDY_ID --out report.html        write a study's report as one self-contained HTML file

The service drives the study (its dependent runs and evaluations): it goes on with no browser open, after
this command ends (`--detach`) and across a restart of the service. With no service running, `study NAME`
starts one for its lifetime (like `run`); Ctrl-C cancels the study's queued and running runs. `status` and
`report` ask the running service, or read the store when none runs. Exit codes: 0 when every run completed,
1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ptft_core import paths
from ptft_core.cli.runs import follow_launched, lab_session, read_source
from ptft_core.client import LabClient
from ptft_core.config import ConfigError
from ptft_core.engine.devices import cpu_cores
from ptft_core.studies.costs import GPU_SPEEDUP, estimate_seconds
from ptft_core.studies.driver import list_studies, study_progress, study_report
from ptft_core.studies.templates import STUDY_PRESETS, build_runs, list_templates, load_studies


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
    study.add_argument("--detach", action="store_true",
                       help="return once the study is launched (the running service goes on with it)")
    study.add_argument("--db", type=Path, default=None, help="the run store (default: PTFT_HOME/ptft.duckdb)")
    study.add_argument("--cpu-slots", type=int, default=None, help="concurrent CPU runs (default: cores / 2)")
    study.set_defaults(handler=cmd_study)


def cmd_study(args: argparse.Namespace) -> int:

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
    if head not in load_studies():
        raise ConfigError(f"study: {head!r} is not a template ({', '.join(load_studies())}), `status` or `report`")
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

    runs = build_runs(name, preset, tiny)
    cpu = estimate_seconds(runs, slots=slots)
    gpu = estimate_seconds(runs, slots=1, device="cuda")
    return (f"{len(runs)} runs, about {_duration(cpu)} on this CPU ({slots} slot{'s' if slots > 1 else ''}), "
            f"roughly {_duration(gpu)} on one GPU (~{GPU_SPEEDUP:.0f}x)")


def cmd_list(args: argparse.Namespace) -> int:

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

    return max(1, cpu_cores() // 2)


def cmd_launch(args: argparse.Namespace, name: str) -> int:
    from ptft_core.studies.report import report_html  # plotly: only where a report is drawn

    print(f"study {name} --preset {args.preset}{' (tiny, for tests)' if args.tiny_for_tests else ''}: "
          f"{estimate_line(name, args.preset, _slots(args), args.tiny_for_tests)}", flush=True)
    with lab_session(args) as lab:
        study_id = lab.launch_study(name, args.preset, tiny=args.tiny_for_tests, name=args.name)
        progress = follow_launched(lab, "study", study_id, args.detach, lambda: lab.study_progress(study_id),
                                   lambda: lab.cancel_study(study_id),
                                   left=lambda p: f"; about {_duration(p.remaining_s)} left")
        if progress is None:
            return 0
        report = study_report(lab, study_id)
    print_report(report)
    if args.out:
        _write(args.out, report_html(report))
    return 0 if report.status == "complete" else 1


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


def cmd_report(args: argparse.Namespace, study_id: str) -> int:
    from ptft_core.studies.report import report_html  # plotly: only where a report is drawn

    with read_source(args.db) as source:
        if source is None:
            raise ConfigError(f"no run store at {args.db or paths.db_path()} yet")
        try:
            report = study_report(source, study_id)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0])) from None
    print_report(report)
    _write(args.out, report_html(report))
    return 0


def cmd_status(args: argparse.Namespace, study_id: str | None) -> int:

    with read_source(args.db) as source:
        if source is None:
            raise ConfigError(f"no run store at {args.db or paths.db_path()} yet")
        service = isinstance(source, LabClient)  # the service knows the evaluations it runs; a store does not
        if study_id is None:
            df = source.study_table() if service else list_studies(source)
            if df.empty:
                print("no studies yet")
                return 0
            df["remaining"] = [_duration(s) if not f else "" for s, f in zip(df["remaining_s"], df["finished"],
                                                                              strict=True)]
            print(df[["id", "name", "progress", "remaining"]].to_string(index=False))
            return 0
        try:
            p = source.study_progress(study_id) if service else study_progress(source, study_id)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0])) from None
    print(f"{p.study_id} {p.name}: {p.line()}" + ("" if p.finished else f"; about {_duration(p.remaining_s)} left"))
    for f in p.failed:
        print(f"  {f['status']}: {f['key']} {f['run_id'] or ''} {f['error'] or ''}")
    return 0
