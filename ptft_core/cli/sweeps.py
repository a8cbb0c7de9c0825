"""The `sweep` sub-command of `python -m ptft_core`.

    sweep SPEC.yaml [--name TEXT] [--detach]     launch a sweep through the lab service, follow it to the end,
                                                 print the best trial
    sweep status [SWEEP_ID]                      the sweeps and their progress, or one sweep's trials and which
                                                 settings matter

The service drives the sweep (asks Optuna for trials, submits them, prunes the bad ones): it goes on with no
browser open, after this command ends (`--detach`) and across a restart of the service. With no service running,
`sweep SPEC` starts one for its lifetime (like `run` and `study`); Ctrl-C cancels the sweep (no more trials, its
queued and running trials cancelled, each saving a checkpoint). `status` asks the running service, or reads the
store and the sweep's journal when none runs. Exit codes: 0 when the sweep finished with a completed trial,
1 otherwise, 2 on bad input (a spec error names the field).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ptft_core import paths
from ptft_core.cli.runs import _engine_args, follow_launched, lab_session, read_source
from ptft_core.client import LabClient
from ptft_core.config import ConfigError
from ptft_core.sweeps.driver import SweepView, list_sweeps
from ptft_core.sweeps.effects import verdict
from ptft_core.sweeps.spec import load_spec, spec_to_dict


def add_sweep_commands(subparsers: argparse._SubParsersAction) -> None:
    sweep = subparsers.add_parser(
        "sweep", help="search a config space (Optuna samples and prunes, the lab runs the trials)",
        description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep.add_argument("target", nargs="+", metavar="SPEC.yaml | status [ID]",
                       help="a sweep spec file (configs/sweeps/ has examples), or `status [SWEEP_ID]`")
    sweep.add_argument("--name", default=None, help="the sweep's name (default: the spec's, else its fields)")
    sweep.add_argument("--detach", action="store_true",
                       help="return once the sweep is launched (the running service goes on with it)")
    _engine_args(sweep)  # --db, --cpu-slots (of a service this command starts)
    sweep.set_defaults(handler=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    head, rest = args.target[0], args.target[1:]
    if head == "status":
        if len(rest) > 1:
            raise ConfigError("usage: sweep status [SWEEP_ID]")
        return cmd_status(args, rest[0] if rest else None)
    if rest:
        raise ConfigError(f"sweep {head}: unexpected {' '.join(rest)!r}")
    return cmd_launch(args, Path(head))


def cmd_launch(args: argparse.Namespace, path: Path) -> int:

    spec = load_spec(path)  # every problem of the spec before any work
    print(f"sweep {spec.name or path.stem}: {spec.trials} trials of {spec.kind}, {spec.parallel} at once, "
          f"{spec.sampler} sampler, {spec.pruner.type} pruner, {spec.objective.metric} "
          f"{'maximized' if spec.maximize else 'minimized'}", flush=True)
    with lab_session(args) as lab:
        sweep_id = lab.launch_sweep(spec_to_dict(spec), name=args.name)
        progress = follow_launched(lab, "sweep", sweep_id, args.detach, lambda: lab.sweep_progress(sweep_id),
                                   lambda: lab.cancel_sweep(sweep_id))
        if progress is None:
            return 0
        print_best(progress)
    return 0 if progress.status == "done" and progress.best_run else 1


def print_best(progress) -> None:
    if progress.best_run is None:
        print("no trial completed")
        return
    print(f"best: trial {progress.best_trial} (run {progress.best_run}), {progress.metric} {progress.best_value:.4g}")
    for name, value in progress.best_params.items():
        print(f"  {name}: {value}")


def cmd_status(args: argparse.Namespace, sweep_id: str | None) -> int:

    with read_source(args.db) as source:
        if source is None:
            raise ConfigError(f"no run store at {args.db or paths.db_path()} yet")
        service = isinstance(source, LabClient)
        if sweep_id is None:
            df = source.sweep_table() if service else list_sweeps(source, paths.home())
            if df.empty:
                print("no sweeps yet")
                return 0
            print(df[["id", "name", "status", "progress"]].to_string(index=False))
            return 0
        try:
            if service:
                progress, trials = source.sweep_progress(sweep_id), source.sweep_trials(sweep_id)
                effects = source.sweep_effects(sweep_id)
            else:
                view = SweepView(source, paths.home(), sweep_id)
                progress, trials, effects = view.progress(), view.trials(), view.effects()
        except KeyError as exc:
            raise ConfigError(str(exc.args[0])) from None
    print(f"{progress.sweep_id} {progress.name}: {progress.line()}")
    if not trials.empty:
        shown = trials.drop(columns=["reason", "status"]).to_string(index=False)
        print(shown)
    print_best(progress)
    for view, rows in effects.groupby("view", sort=False):
        print(f"which settings matter, {view}:")
        for row in rows.to_dict("records"):
            print(f"  {verdict(row)}")
    return 0
