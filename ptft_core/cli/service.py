"""`python -m ptft_core serve` runs the lab service in this process (`ptft_core.service.main`); `serve --detach`
makes sure one runs (starts it in the background if none does) and returns: what `make run` does before the
dashboard. `demo` serves a read-only dashboard of the running lab."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ptft_core import paths
from ptft_core.client import (
    DEMO_TOKEN_ENV,
    READ_ONLY_ENV,
    TOKEN_ENV,
    ServiceUnavailable,
    find_service,
    read_token,
    start_service,
)

log = logging.getLogger(__name__)


def add_service_commands(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="run the lab service: the engine and the store behind an HTTP API")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.add_argument("--port", type=int, default=8765, help="port (0: any free one; service.json says which)")
    serve.add_argument("--db", type=Path, default=None, help="the run store (default: PTFT_HOME/ptft.duckdb)")
    serve.add_argument("--cpu-slots", type=int, default=None, help="concurrent CPU runs (default: cores / 2)")
    serve.add_argument("--detach", action="store_true",
                       help="start the service in the background unless one runs for this home, then return")
    serve.add_argument("--owner-pid", type=int, default=None,
                       help="stop when this process ends (a CLI command that started a service for itself)")
    serve.set_defaults(handler=cmd_serve)

    demo = subparsers.add_parser("demo", help="a read-only dashboard of the running lab, for stakeholders")
    demo.add_argument("--host", default="localhost",
                      help="address to serve (default: this machine only; 0.0.0.0: visitors need the viewer link)")
    demo.add_argument("--port", type=int, default=8502, help="port (default 8502; the lab's dashboard is on 8501)")
    demo.set_defaults(handler=cmd_demo)


def cmd_serve(args: argparse.Namespace) -> int:
    if args.detach:
        return _ensure_service(args)
    from ptft_core.service.main import serve  # FastAPI and uvicorn: only in the process that serves

    return serve(args.host, args.port, db=args.db, cpu_slots=args.cpu_slots, owner_pid=args.owner_pid)


LOOPBACK = ("localhost", "127.0.0.1", "::1")


def cmd_demo(args: argparse.Namespace) -> int:
    """Replace this process with a read-only Streamlit dashboard: a viewer client of the running service."""

    if find_service() is None:
        raise ServiceUnavailable(f"no lab service runs for {paths.home()}: start it first (`make run`, or "
                                 "`ptft serve --detach`); the demo shows that lab, read-only")
    viewer = read_token(role="viewer")
    env = {k: v for k, v in os.environ.items() if k not in (TOKEN_ENV, DEMO_TOKEN_ENV)}
    env[READ_ONLY_ENV] = "1"
    link = f"http://{args.host}:{args.port}/"
    if args.host in LOOPBACK:
        env[TOKEN_ENV] = viewer  # only this machine can reach it: the server itself carries the viewer token
    else:
        env[DEMO_TOKEN_ENV] = "1"  # beyond loopback every visitor brings the token (the link, or a prompt)
        link += f"?token={viewer}"
    print(f"read-only demo of {paths.home()} on {link}", flush=True)
    os.chdir(paths.REPO_ROOT)  # .streamlit/config.toml: no Deploy button, no file watcher
    argv = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(args.port),
            "--server.address", args.host, "--server.headless", "true"]
    os.execve(sys.executable, argv, env)
    return 0  # not reached: execve replaces this process


def serve_args(args: argparse.Namespace) -> list[str]:
    """The `serve` options a command's own `--db` and `--cpu-slots` ask of a service it starts."""
    return [*(["--db", str(args.db)] if args.db else []),
            *(["--cpu-slots", str(args.cpu_slots)] if args.cpu_slots else [])]


def _ensure_service(args: argparse.Namespace) -> int:

    info = find_service()
    if info is None:
        info, _ = start_service(args=serve_args(args))
        print(f"started the lab service on {info['url']} (pid {info['pid']}; log: {paths.service_log()})")
    else:
        print(f"the lab service runs on {info['url']} (pid {info['pid']})")
    return 0
