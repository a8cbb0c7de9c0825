"""`python -m ptft_core.worker RUN_DIR [--resume]`: runs one training run in this process; knows nothing of DuckDB.

What it does, in order:
1. reads `RUN_DIR/run.json` (`{run_id, config, attempt}`), validates the config;
2. opens the run's journal with `JournalWriter` (which continues the `seq` numbering on resume);
3. starts a heartbeat thread that touches `RUN_DIR/heartbeat` every second (its mtime is the heartbeat: cheap,
   and the engine reads it without parsing anything); a hung worker stops touching it and the engine kills it;
4. turns SIGTERM (and SIGINT) into a `should_stop()` flag: the training loop saves a checkpoint and returns
   "cancelled";
5. emits `status running {pid, device, attempt}`; on `--resume`, also `resume {from_step, attempt}` where
   from_step is the newest complete `checkpoints/step-<N>` (the engine marks earlier attempts' metric rows
   after that step as superseded);
6. calls the trainer and emits the final `status`: completed / cancelled (exit 0) or failed with the error
   text (exit 1; the traceback goes to stderr, which the launcher points at `RUN_DIR/worker.log`).

A fork server (`python -m ptft_core.worker --fork-server`, started ahead of need by the local launcher) does the
imports once (torch, transformers, the trainers: 5-7 s of a CPU run's start), says `{"ready": true}` on stdout,
then forks one worker per order it reads on stdin (one JSON line `{run_dir, resume, env}`, env being the whole
environment a cold worker would get), answering each with
`{"pid": N}` and, when that worker ends, `{"exited": N, "code": C}` (C as `Popen.returncode`: negative for a
signal). A forked worker leads a session of its own, points stdout and stderr at `RUN_DIR/worker.log`, writes
`RUN_DIR/worker.pid` (pid and process start time, so a later engine can tell it is this run's worker although its
command line does not name the run) and goes on as above. The server exits when its stdin closes (its engine gone);
workers it forked train on. `--fork-server --listen PATH` serves the same lines on each connection to a Unix socket
at PATH instead, for several launchers at once (`PTFT_FORK_SERVER`); an order may name the `cpus` its worker runs on
(the launcher's own), and each launcher hears only of its own workers' exits.

Torch threads follow `PTFT_THREADS` (set by the engine from cores / slots); the device follows `PTFT_DEVICE`.

The trainer is `ptft_core.training.run_<kind>` (pretrain, finetune, evaluate) by the config's kind, imported lazily.
Test seam: the environment variable `PTFT_TRAINER=module:function` replaces it with any function of the same
signature, `fn(config, run_dir, logger, *, should_stop, resume, device) -> "completed" | "cancelled"`. The
engine tests use `PTFT_TRAINER=tests.fake_trainer:run`, a real loop (journal, checkpoints, resume, should_stop)
without a model, so they test the process machinery in seconds; the real trainer is exercised by the slow
engine tests that leave `PTFT_TRAINER` unset.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import inspect
import json
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import psutil

from ptft_core.config import config_from_dict
from ptft_core.journal import JournalWriter, NullLogger
from ptft_core.rundir import RunDir

log = logging.getLogger("ptft_core.worker")

HEARTBEAT_INTERVAL = 1.0
def _close_torn_line(journal: Path) -> None:
    """A journal cut mid-line (a crash during a write) gets its newline back before new events are appended:
    the torn line is then one corrupt line that readers skip, instead of swallowing the next event."""
    try:
        with open(journal, "rb+") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
    except FileNotFoundError:
        return


def resolve_trainer(kind: str) -> Callable[..., str]:
    spec = os.environ.get("PTFT_TRAINER")
    if spec:
        module, _, name = spec.partition(":")
        return getattr(importlib.import_module(module), name or "run")
    training = importlib.import_module("ptft_core.training")
    return getattr(training, f"run_{kind}")


def _heartbeat(path: Path, stop: threading.Event) -> None:
    while True:
        try:
            os.utime(path)
        except FileNotFoundError:
            path.touch()
        except OSError:
            pass
        if stop.wait(HEARTBEAT_INTERVAL):
            return


def _set_threads(world: int) -> None:
    threads = os.environ.get("PTFT_THREADS")
    if threads and threads.isdigit() and "torch" in sys.modules:
        torch = sys.modules["torch"]
        torch.set_num_threads(max(1, int(threads) // world))  # the slot's threads, shared by its ranks


def _die_with_parent() -> None:
    """A rank ends when torchrun does, even by SIGKILL: torchrun starts each rank in a session of its own, so
    killing torchrun's process group would leave the ranks training (Linux: PR_SET_PDEATHSIG)."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # torchrun died before the call: nobody would signal us
        os._exit(1)


def _tell(message: dict, fd: int) -> None:
    """One line to a launcher (`fd`: stdout, or its connection to a shared server), in one write: a signal handler
    writes too, so no buffered stream is shared with it."""
    with contextlib.suppress(OSError):  # the launcher is gone: nobody to tell
        os.write(fd, (json.dumps(message) + "\n").encode())


# Where each live forked worker's exit code goes (pid -> the fd of the launcher that ordered it); a worker whose
# launcher left has none.
_owners: dict[int, int] = {}


def _reap(_signum: int, _frame: object) -> None:
    """SIGCHLD: collect every ended worker and tell its launcher the exit code (a fork server's children are not
    the launcher's, so it cannot wait for them itself)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        owner = _owners.pop(pid, None)
        if owner is not None:
            _tell({"exited": pid, "code": os.waitstatus_to_exitcode(status)}, owner)


def fork_server(listen: str | None = None) -> int:
    """Import what a run needs once, then fork one worker per order line, until the orders end.

    Orders come on stdin (one launcher, the default: the server ends when stdin closes), or, with `listen`, on the
    connections of a Unix socket at that path, bound before the imports so that launchers may connect at once:
    one server shared by every launcher of a machine's session (`PTFT_FORK_SERVER`, the test suite's: one import
    instead of one per engine). Each connection gets `ready`, then a `pid` per order and its workers' `exited`
    lines; a shared server ends with its parent.

    The imports run in a thread of their own at the lowest CPU priority (Linux niceness is per thread; raising
    one's own needs no privilege): the server imports beside runs that are starting or training, and must not slow
    them. The main thread, which forks the workers, keeps its priority, and so do they. Forking is safe here: no
    torch operation has run in this process (no thread pool to inherit), and the import thread has ended."""
    listener = _listen_on(listen) if listen else None

    def import_quietly() -> None:
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        resolve_trainer("finetune")  # torch, transformers and every trainer (or the test seam's module)

    importer = threading.Thread(target=import_quietly, name="fork-server-imports")
    importer.start()
    importer.join()
    # The imports' objects move to a generation no collection visits: a worker's collections then neither walk
    # them nor write their headers (which would copy every page of them out of the memory it shares with us).
    gc.freeze()
    signal.signal(signal.SIGCHLD, _reap)
    if listener is None:
        stdout = sys.__stdout__.fileno()
        _tell({"ready": True}, stdout)
        # Linux delivers a process's SIGCHLD to its main thread when that thread does not block it (this one waits
        # in the read below): the read is interrupted, the handler runs, and the read goes on (PEP 475).
        for line in iter(sys.stdin.readline, ""):
            if line.strip():
                _fork(json.loads(line), stdout, ())
        return 0
    _serve(listener)
    return 0


def _listen_on(path: str) -> socket.socket:
    _die_with_parent()  # a shared server lives as long as whoever started it (a test session), not longer
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a socket file left by a server that was killed
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)  # launchers that connect during the imports wait in the backlog for `ready`
    return listener


def _serve(listener: socket.socket) -> None:
    """Accept launchers and fork for each of their orders, forever (SIGCHLD interrupts the wait: PEP 475)."""
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    pending: dict[socket.socket, bytes] = {}  # each connection's unfinished order line
    while True:
        for key, _ in selector.select():
            if key.fileobj is listener:
                conn, _ = listener.accept()
                selector.register(conn, selectors.EVENT_READ)
                pending[conn] = b""
                _tell({"ready": True}, conn.fileno())
                continue
            conn = key.fileobj
            try:
                data = conn.recv(65536)
            except OSError:
                data = b""
            if not data:  # the launcher left; its workers train on, and nobody is told how they end
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})  # _reap changes _owners too
                for pid in [pid for pid, fd in _owners.items() if fd == conn.fileno()]:
                    del _owners[pid]
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
                selector.unregister(conn)
                del pending[conn]
                conn.close()
                continue
            *lines, pending[conn] = (pending[conn] + data).split(b"\n")
            for line in filter(bytes.strip, lines):
                _fork(json.loads(line), conn.fileno(), [listener.fileno(), *(c.fileno() for c in pending)])


def _fork(order: dict, owner: int, server_fds: list[int] | tuple) -> None:
    """Fork the order's worker and tell its launcher the pid. SIGCHLD waits until the pid is known as the
    launcher's (a worker that fails at once must not exit before it has an owner)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    try:
        pid = os.fork()
        if pid == 0:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
            for fd in server_fds:  # the worker holds none of the server's sockets
                os.close(fd)
            os._exit(_forked_worker(order))  # never returns to the server's loop
        _owners[pid] = owner
        _tell({"pid": pid}, owner)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})


def _forked_worker(order: dict) -> int:
    """The child's side of a fork: a session of its own, the run's log as stdout and stderr, its claim, its run."""
    handed_at = time.time()
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if order.get("cpus") and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, order["cpus"])  # the launcher's cores, as a worker it started would have
        os.setsid()  # signals to its group reach it and its data loaders, never the server
        os.environ.clear()  # the launcher's environment at the launch, as a cold worker gets it
        os.environ.update(order["env"])
        run_dir = Path(order["run_dir"]).resolve()
        quiet = os.open(os.devnull, os.O_RDONLY)
        log_fd = os.open(RunDir(run_dir).log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(quiet, 0)  # the server's orders are not this worker's to read
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(quiet)
        os.close(log_fd)
        os.chdir(run_dir)
        claim = {"pid": os.getpid(), "create_time": psutil.Process().create_time()}
        RunDir(run_dir).claim.write_text(json.dumps(claim), encoding="utf-8")
        return main([str(run_dir), *(["--resume"] if order.get("resume") else [])], started=handed_at)
    except BaseException:  # noqa: BLE001 - a forked child must leave through os._exit, never the server's loop
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def main(argv: list[str] | None = None, started: float | None = None) -> int:
    """`started`: when this process took the run (a fork server's fork); by default the process start."""
    parser = argparse.ArgumentParser(prog="python -m ptft_core.worker")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    run_dir = args.run_dir.resolve()
    folder = RunDir(run_dir)
    run = folder.read_run()
    run_id, attempt = run["run_id"], int(run.get("attempt", 1))
    # Under torchrun (a run with ranks > 1): rank 0 alone journals and beats; the others train and stay quiet.
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        _die_with_parent()
    if rank == 0:
        _close_torn_line(folder.journal)
    journal = JournalWriter(run_dir, run_id) if rank == 0 else NullLogger()

    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping at the next step (a checkpoint is saved first)", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    beat_stop = threading.Event()
    if rank == 0:
        beat_path = folder.heartbeat
        beat_path.touch()
        threading.Thread(target=_heartbeat, args=(beat_path, beat_stop), name="heartbeat", daemon=True).start()

    device = os.environ.get("PTFT_DEVICE") or None
    journal.event("status", status="running", pid=os.getpid(), device=device or "auto", attempt=attempt,
                  resume=args.resume)
    status, code = "failed", 1
    from_step = 0
    try:
        config = config_from_dict(run["config"])
        if args.resume:
            from_step = folder.latest_step()
            if from_step is None:
                raise RuntimeError(f"--resume: no complete checkpoint under {folder.checkpoints}")
            journal.event("resume", from_step=from_step, attempt=attempt)
        trainer = resolve_trainer(config.kind)
        _set_threads(world)
        # Process start (or a fork server's fork) to here: the interpreter, torch and transformers imports
        # (a study pays it per run, unless a fork server did them ahead).
        started = psutil.Process().create_time() if started is None else started
        journal.metric(from_step, "startup_s", round(time.time() - started, 3), "time", 0.0)
        kwargs = {"should_stop": stop.is_set, "resume": args.resume}
        if "device" in inspect.signature(trainer).parameters:
            kwargs["device"] = device
        result = trainer(config, run_dir, journal, **kwargs)
        if result not in ("completed", "cancelled"):
            raise RuntimeError(f"the trainer returned {result!r}, not 'completed' or 'cancelled'")
        status, code = result, 0
        journal.event("status", status=status)
    except BaseException as exc:  # noqa: BLE001 - every failure must end as a reported status
        traceback.print_exc()
        error = f"{type(exc).__name__}: {exc}".strip()
        journal.event("status", status="failed", error=error[:2000])
    finally:
        beat_stop.set()
        journal.close()
        log.info("run %s attempt %d%s: %s", run_id, attempt, f" rank {rank}" if world > 1 else "", status)
    if world > 1:
        _leave_process_group(code)
    return code


def _leave_process_group(code: int) -> None:
    """A rank leaves its process group and exits without the interpreter's teardown: on CPU about a third of
    2-rank runs aborted there ("terminate called without an active exception") after a clean run."""
    if "torch.distributed" in sys.modules:
        from ptft_core.training import distributed  # torch: only in the worker that trains

        distributed.stop(distributed.from_env())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--fork-server"]:
        sys.exit(fork_server(sys.argv[3] if sys.argv[2:3] == ["--listen"] else None))
    sys.exit(main())
