"""`python -m ptft_core ...`: the lab without the browser.

Each room adds its own sub-commands (`data`, `run`/`runs`, `study`, `sweep`, `serve`, `predict`); this module only
routes and turns the lab's own errors (bad config, bad data, a locked store) into one clear line and exit code 2, not
a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ptft_core.cli.data import add_data_commands
from ptft_core.cli.predict import add_predict_commands
from ptft_core.cli.runs import add_run_commands
from ptft_core.cli.service import add_service_commands
from ptft_core.cli.studies import add_study_commands
from ptft_core.cli.sweeps import add_sweep_commands
from ptft_core.client import ServiceUnavailable
from ptft_core.config import ConfigError
from ptft_core.data.errors import DataError
from ptft_core.lab import Refused, UnknownId
from ptft_core.store import StoreLockedError


def build_parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(prog="python -m ptft_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_data_commands(sub)
    add_run_commands(sub)
    add_study_commands(sub)
    add_sweep_commands(sub)
    add_service_commands(sub)
    add_predict_commands(sub)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's input or the lab's state: reported in one line with exit code 2."""

    return ConfigError, DataError, StoreLockedError, ServiceUnavailable, PermissionError, Refused, UnknownId


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request to the lab service
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
