"""The lab service's process: one long-lived process owns the engine (queue, device pool, launcher, recovery,
ingestion) and the run store, and serves the lab contract over HTTP (`api.create_app` over a `LocalLab`) on
uvicorn. `python -m ptft_core serve` runs it (`ptft_core.cli.service`).

The socket is bound before anything is announced; then `PTFT_HOME/service.json` (url, pid, started) tells
clients on this machine where the service is, and the tokens in `PTFT_HOME/service-tokens.json` (0600) let
them in. The service also drives the studies and the sweeps (`StudyDriver`, `SweepDriver`, a thread each): they
move on with no browser open and pick up where the store (and a sweep's Optuna journal) stands after a restart.
Ctrl-C or SIGTERM stop it; the workers go on and the next engine re-adopts them. It also stops when its home is
deleted, and, started with an owner (a CLI command's own service), when its owner ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from ptft_core import paths
from ptft_core.engine import Engine
from ptft_core.service.api import create_app
from ptft_core.service.local import LocalLab
from ptft_core.service.tokens import TOKENS_NAME, load_or_create
from ptft_core.studies.driver import driver_for
from ptft_core.sweeps.driver import sweep_driver_for


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


def serve(host: str, port: int, db: Path | None = None, cpu_slots: int | None = None,
          owner_pid: int | None = None) -> int:
    """Run the service in this process until SIGTERM (or Ctrl-C, or its owner's end, or its home's)."""
    import uvicorn


    # A stop requested while starting up still runs the cleanup below (uvicorn installs its own handlers later,
    # and hands the signal back to this one when it has shut down).
    signal.signal(signal.SIGTERM, _stop_requested)
    engine = Engine(cpu_slots=cpu_slots, db_path=db)  # takes the store's lock, or fails naming its owner
    exposed = paths.exposure_warning(engine.home)
    if exposed:
        print(exposed, file=sys.stderr, flush=True)
    service_file = paths.service_file(engine.home)
    driver = driver_for(engine)
    sweeps = sweep_driver_for(engine)
    lifeline = threading.Event()
    lab = None
    try:
        tokens = load_or_create(engine.home)
        sock = socket.create_server((host, port))
        # Answers go out at once: with Nagle's algorithm a response written in two parts (headers, body) waited
        # for the client's delayed ACK, about 40 ms per request on loopback. Accepted sockets inherit it.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        port = sock.getsockname()[1]
        url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        tmp = service_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": url, "pid": os.getpid(), "started": datetime.now(UTC).isoformat()}))
        tmp.replace(service_file)  # announced whole, once the socket accepts connections
        engine.start()
        driver.start()
        sweeps.start()
        watch_lifeline(engine.home, owner_pid, lifeline)
        print(f"ptft service on {url} (tokens: {engine.home / TOKENS_NAME})", flush=True)
        lab = LocalLab(engine, driver, sweeps)
        app = create_app(lab, tokens)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        server.run(sockets=[sock])
    finally:
        if lab is not None:
            lab.close()
        lifeline.set()
        service_file.unlink(missing_ok=True)
        sweeps.stop()
        driver.stop()
        engine.close()
    return 0
