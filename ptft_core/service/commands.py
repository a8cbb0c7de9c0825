"""`python -m ptft_core serve`: one long-lived process owns the engine (queue, device pool, launcher,
recovery, ingestion) and the run store, and serves the HTTP API (api.py) on uvicorn.

The socket is bound before anything is announced; then `PTFT_HOME/service.json` (url, pid, started) tells
clients on this machine where the service is, and the tokens in `PTFT_HOME/service-tokens.json` (0600) let
them in. The service also drives the studies and the sweeps (`StudyDriver`, `SweepDriver`, a thread each): they
move on with no browser open and pick up where the store (and a sweep's Optuna journal) stands after a restart.
Ctrl-C or SIGTERM stop it; the workers go on and the next engine re-adopts them. `serve --detach` makes sure one
runs (starts it in the background if none does) and returns: what `make run` does before the dashboard.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from ptft_core import paths

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


def _stop_requested(signum: int, frame: object) -> None:
    raise SystemExit(0)


LIFELINE_S = 1.0  # how often the service looks for its owner and its home


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def watch_lifeline(home: Path, owner_pid: int | None, stop: threading.Event) -> threading.Thread:
    """A thread that stops this service (SIGTERM to itself: the clean way out) when its home is gone (deleted
    under it: nothing it does could be kept) or when the process that started it for itself has ended, however
    it ended: a kill -9 of a CLI command leaves no service behind."""
    def watch() -> None:
        while not stop.wait(LIFELINE_S):
            gone = (f"its home {home} is gone" if not home.is_dir() else
                    f"its owner (pid {owner_pid}) has ended" if owner_pid and not _alive(owner_pid) else None)
            if gone:
                print(f"ptft service stopping: {gone}", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    thread = threading.Thread(target=watch, name="ptft-lifeline", daemon=True)
    thread.start()
    return thread


def cmd_serve(args: argparse.Namespace) -> int:
    if args.detach:
        return _ensure_service(args)
    import uvicorn

    from ptft_core.engine import Engine
    from ptft_core.service.api import create_app
    from ptft_core.service.local import LocalLab
    from ptft_core.service.tokens import TOKENS_NAME, load_or_create
    from ptft_core.studies.driver import driver_for
    from ptft_core.sweeps.driver import sweep_driver_for

    # A stop requested while starting up still runs the cleanup below (uvicorn installs its own handlers later,
    # and hands the signal back to this one when it has shut down).
    signal.signal(signal.SIGTERM, _stop_requested)
    engine = Engine(cpu_slots=args.cpu_slots, db_path=args.db)  # takes the store's lock, or fails naming its owner
    exposed = paths.exposure_warning(engine.home)
    if exposed:
        print(exposed, file=sys.stderr, flush=True)
    service_file = paths.service_file(engine.home)
    driver = driver_for(engine)
    sweeps = sweep_driver_for(engine)
    lifeline = threading.Event()
    try:
        tokens = load_or_create(engine.home)
        sock = socket.create_server((args.host, args.port))
        # Answers go out at once: with Nagle's algorithm a response written in two parts (headers, body) waited
        # for the client's delayed ACK, about 40 ms per request on loopback. Accepted sockets inherit it.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        port = sock.getsockname()[1]
        url = f"http://{args.host if ':' not in args.host else f'[{args.host}]'}:{port}"
        tmp = service_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": url, "pid": os.getpid(), "started": datetime.now(UTC).isoformat()}))
        tmp.replace(service_file)  # announced whole, once the socket accepts connections
        engine.start()
        driver.start()
        sweeps.start()
        watch_lifeline(engine.home, args.owner_pid, lifeline)
        print(f"ptft service on {url} (tokens: {engine.home / TOKENS_NAME})", flush=True)
        app = create_app(LocalLab(engine, driver, sweeps), tokens)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        server.run(sockets=[sock])
    finally:
        lifeline.set()
        service_file.unlink(missing_ok=True)
        sweeps.stop()
        driver.stop()
        engine.close()
    return 0


LOOPBACK = ("localhost", "127.0.0.1", "::1")


def cmd_demo(args: argparse.Namespace) -> int:
    """Replace this process with a read-only Streamlit dashboard: a viewer client of the running service."""
    from ptft_core.client import TOKEN_ENV, ServiceUnavailable, find_service, read_token
    from ptft_core.ui import DEMO_TOKEN_ENV, READ_ONLY_ENV

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
    from ptft_core.client import find_service, start_service

    info = find_service()
    if info is None:
        info, _ = start_service(args=serve_args(args))
        print(f"started the lab service on {info['url']} (pid {info['pid']}; log: {paths.service_log()})")
    else:
        print(f"the lab service runs on {info['url']} (pid {info['pid']})")
    return 0
