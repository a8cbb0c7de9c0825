"""`python -m ptft_core serve`: one long-lived process owns the engine (queue, device pool, launcher,
recovery, ingestion) and the run store, and serves the HTTP API (api.py) on uvicorn.

The socket is bound before anything is announced; then `PTFT_HOME/service.json` (url, pid, started) tells
clients on this machine where the service is, and the tokens in `PTFT_HOME/service-tokens.json` (0600) let
them in. Ctrl-C or SIGTERM stop it; the workers go on and the next engine re-adopts them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
from datetime import UTC, datetime
from pathlib import Path

SERVICE_NAME = "service.json"
log = logging.getLogger(__name__)


def add_service_commands(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="run the lab service: the engine and the store behind an HTTP API")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.add_argument("--port", type=int, default=8765, help="port (0: any free one; service.json says which)")
    serve.add_argument("--db", type=Path, default=None, help="the run store (default: PTFT_HOME/ptft.duckdb)")
    serve.add_argument("--cpu-slots", type=int, default=None, help="concurrent CPU runs (default: cores / 2)")
    serve.set_defaults(handler=cmd_serve)


def _stop_requested(signum: int, frame: object) -> None:
    raise SystemExit(0)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ptft_core.engine import Engine
    from ptft_core.service.api import create_app
    from ptft_core.service.tokens import TOKENS_NAME, load_or_create

    engine = Engine(cpu_slots=args.cpu_slots, db_path=args.db)  # takes the store's lock, or fails naming its owner
    service_file = engine.home / SERVICE_NAME
    try:
        tokens = load_or_create(engine.home)
        sock = socket.create_server((args.host, args.port))
        port = sock.getsockname()[1]
        url = f"http://{args.host if ':' not in args.host else f'[{args.host}]'}:{port}"
        tmp = service_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": url, "pid": os.getpid(), "started": datetime.now(UTC).isoformat()}))
        tmp.replace(service_file)  # announced whole, once the socket accepts connections
        engine.start()
        print(f"ptft service on {url} (tokens: {engine.home / TOKENS_NAME})", flush=True)
        server = uvicorn.Server(uvicorn.Config(create_app(engine, tokens), log_level="warning"))
        # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again for the handler that was
        # there before: this one, so the cleanup below runs and a requested stop exits 0.
        signal.signal(signal.SIGTERM, _stop_requested)
        server.run(sockets=[sock])
    finally:
        service_file.unlink(missing_ok=True)
        engine.close()
    return 0
