"""How a run's worker process is started, watched and stopped: the `Launcher` protocol and the local one.

The engine talks to workers only through this protocol, so a cluster launcher (submit a job, poll it, cancel
it) can replace `LocalSubprocessLauncher` without touching the engine or the UI. A handle is whatever the
launcher needs to find its worker again; it must carry `.pid` (None where there is no local process).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ptft_core import paths
from ptft_core.rundir import RunDir

# `poll` returns this when the worker is gone but its exit code cannot be known (a re-adopted worker, which is
# not this process's child). Negative codes are signals, as with `subprocess.Popen.returncode`.
EXIT_UNKNOWN = -1000


@runtime_checkable
class Launcher(Protocol):
    def launch(self, run_dir: Path, device_env: dict[str, str], resume: bool) -> Any:
        """Start `python -m ptft_core.worker RUN_DIR [--resume]` with `device_env` added to its environment."""

    def poll(self, handle: Any) -> int | None:
        """The exit code once the worker has exited (EXIT_UNKNOWN if it cannot be known), else None."""

    def terminate(self, handle: Any) -> None:
        """Ask the worker to stop (SIGTERM): it saves a checkpoint and reports "cancelled"."""

    def kill(self, handle: Any) -> None:
        """Stop the worker now (SIGKILL)."""

    def adopt(self, run_dir: Path, pid: int | None) -> Any | None:
        """A handle on a worker started by an earlier engine, if it is still alive; else None."""


@dataclass
class AdoptedWorker:
    """A worker this process did not start (an earlier engine did): watched by PID and command line."""

    pid: int
    run_dir: str


def worker_command(run_dir: Path, resume: bool) -> list[str]:
    """`python -m ptft_core.worker RUN_DIR [--resume]`, under `torchrun --standalone` for a run of several ranks
    (its config's `ranks`): one process per rank on this node."""
    run = RunDir(run_dir).read_run()
    ranks = int(run["config"].get("ranks") or 1)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
              "-m"] if ranks > 1 else [sys.executable, "-m"]
    return [*launch, "ptft_core.worker", str(run_dir), *(["--resume"] if resume else [])]


def shared_fork_server_command(socket_path: str | Path) -> list[str]:
    """A fork server for several launchers, listening at `socket_path` (what `PTFT_FORK_SERVER` names)."""
    return [sys.executable, "-m", "ptft_core.worker", "--fork-server", "--listen", str(socket_path)]


def _warm_fits(run_dir: Path, device_env: dict[str, str]) -> bool:
    run = RunDir(run_dir).read_run()
    return device_env.get("PTFT_DEVICE") == "cpu" and int(run["config"].get("ranks") or 1) == 1


def worker_alive(pid: int | None, run_dir: str | Path) -> bool:
    """Whether `pid` is a live (not zombie) ptft worker for `run_dir`: a PID alone may have been reused."""
    if not pid:
        return False
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return "ptft_core.worker" in cmdline and (str(run_dir) in cmdline or _claimed(proc, run_dir))


def _claimed(proc, run_dir: str | Path) -> bool:
    """A forked worker's command line does not name its run; the claim it wrote in the run folder does (its pid and
    start time: a reused pid has another start time)."""
    try:
        claim = json.loads(RunDir(run_dir).claim.read_text(encoding="utf-8"))
        return claim["pid"] == proc.pid and abs(claim["create_time"] - proc.create_time()) < 0.01
    except (OSError, ValueError, KeyError, TypeError):
        return False


FORK_REPLY_TIMEOUT_S = 30.0  # a ready server forks in milliseconds; one that does not answer is stuck: go cold
# How long after a fork server's start a launch may wait for its imports (5-7 s on 2 cores, more beside training):
# past that, a server that is still not ready must not hold runs back, and they start cold.
IMPORT_GRACE_S = 30.0


@dataclass
class ForkedWorker:
    """A worker forked by the fork server: not this process's child, so its exit code comes from the server."""

    pid: int
    run_dir: str
    server: ForkServer

    def poll(self) -> int | None:
        code = self.server.exit_code(self.pid)
        if code is None and self.server.gone.is_set() and not worker_alive(self.pid, self.run_dir):
            return EXIT_UNKNOWN  # the server ended before it: nobody left who knows how it exited
        return code

    def wait(self, timeout: float | None = None) -> int:
        """Until the worker has exited (its code); TimeoutError after `timeout` s."""
        if not self.server.wait_exit(self.pid, timeout) and self.poll() is None:
            raise TimeoutError(f"worker {self.pid} still running after {timeout} s")
        return self.poll()  # type: ignore[return-value]


class ForkServer:
    """`python -m ptft_core.worker --fork-server`: imports once, then forks a worker per run in milliseconds.

    Our own server (`env`: started here, orders on its stdin, answers on its stdout), or a connection to a shared
    one already listening at the Unix socket `shared` (`--fork-server --listen PATH`, see `LocalSubprocessLauncher`).
    Either way the same JSON lines (worker.py): orders go out; a thread here reads the answers (`ready`, one `pid`
    per order, in order, and `exited` with each of our workers' exit codes). Connecting raises OSError when nothing
    listens there."""

    def __init__(self, env: dict[str, str] | None = None, shared: str | None = None):
        self.proc: subprocess.Popen | None = None
        self._socket: socket.socket | None = None
        if shared:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self._socket.connect(shared)
            except OSError:
                self._socket.close()
                raise
            answers, self._orders = self._socket.makefile("rb"), self._socket.makefile("wb")
        else:
            log_path = paths.fork_server_log()
            with open(log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "ptft_core.worker", "--fork-server"], cwd=log_path.parent, env=env,
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, start_new_session=True,
                    close_fds=True,
                )
            answers, self._orders = self.proc.stdout, self.proc.stdin
        self.started = time.monotonic()
        self.ready = threading.Event()
        self.gone = threading.Event()
        self._pids: queue.Queue[int | None] = queue.Queue()
        self._exits: dict[int, int] = {}
        self._changed = threading.Condition()
        self._order_lock = threading.Lock()  # one order in flight: the pid answers come in order
        threading.Thread(target=self._listen, args=(answers,), name="fork-server-listener", daemon=True).start()

    def _listen(self, answers) -> None:
        for line in answers:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "pid" in message:
                self._pids.put(int(message["pid"]))
            elif "exited" in message:
                with self._changed:
                    self._exits[int(message["exited"])] = int(message["code"])
                    self._changed.notify_all()
            elif message.get("ready"):
                self.ready.set()
        self.gone.set()
        self._pids.put(None)  # an order waiting for its answer learns that none will come
        with self._changed:
            self._changed.notify_all()

    def alive(self) -> bool:
        return not self.gone.is_set() and (self.proc is None or self.proc.poll() is None)

    def usable(self) -> bool:
        return self.ready.is_set() and self.alive()

    def fork(self, run_dir: Path, env: dict[str, str], resume: bool) -> ForkedWorker | None:
        """A worker for this run with `env` as its whole environment, or None when the server cannot give one (it
        died or hangs: then it is stopped, and the caller starts a cold worker)."""
        order = {"run_dir": str(run_dir.resolve()), "resume": resume, "env": env}
        if hasattr(os, "sched_getaffinity"):  # a shared server was started on other cores than ours, maybe
            order["cpus"] = sorted(os.sched_getaffinity(0))
        with self._order_lock:
            try:
                self._orders.write((json.dumps(order) + "\n").encode())
                self._orders.flush()
                pid = self._pids.get(timeout=FORK_REPLY_TIMEOUT_S)
            except (BrokenPipeError, OSError, ValueError, queue.Empty):
                pid = None
        if pid is None:
            self.close()
            return None
        return ForkedWorker(pid, str(run_dir), self)

    def exit_code(self, pid: int) -> int | None:
        with self._changed:
            return self._exits.get(pid)

    def wait_exit(self, pid: int, timeout: float | None) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: pid in self._exits or self.gone.is_set(), timeout)

    def close(self) -> None:
        """End our server (it exits when its stdin closes; one still importing is killed, as it holds nothing), or
        our connection to a shared one; the workers it forked train on."""
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError, ValueError):
                self._orders.close()
            self._socket.close()
            return
        if not self.ready.is_set():
            self.proc.kill()
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class LocalSubprocessLauncher:
    """Workers as local child processes in their own session.

    `start_new_session=True`: Ctrl-C in a terminal or killing the engine's process group does not reach the
    workers (the next engine re-adopts them), and signals go to the worker's whole group, its data-loader
    processes included. stdout and stderr go to `RUN_DIR/worker.log`, a file: a pipe nobody reads would fill
    up and block the worker, and a file survives the engine.

    Warm workers (`warm`, default on; `PTFT_WARM_WORKERS=0` turns them off): a fork server imports once, and each
    CPU launch of one rank forks its worker from it, already imported (milliseconds instead of 5-7 s). `prepare`
    starts the server (the engine calls it at its start, and again once no run is in its start-up, should the
    server have died). While it imports, the engine holds such runs back (`defers`), for at most
    `import_grace_s` after its start; a launch itself never waits, and one made anyway starts cold. GPU runs and
    runs of several ranks start cold: their CUDA device list must be set before anything touches CUDA.
    """

    def __init__(self, warm: bool | None = None):
        self.warm = os.environ.get("PTFT_WARM_WORKERS", "1") != "0" if warm is None else warm
        self.import_grace_s = IMPORT_GRACE_S
        self._server: ForkServer | None = None
        self._lock = threading.Lock()

    def defers(self, run_dir: Path, device_env: dict[str, str]) -> bool:
        """Whether this run's launch should wait for the fork server, which is still importing: its worker will be
        forked in a few seconds, where a cold worker started now would import too, on the same cores. Never longer
        than `import_grace_s` after the server started."""
        server = self._server
        return (self.warm and server is not None and not server.ready.is_set() and server.alive()
                and time.monotonic() - server.started < self.import_grace_s and _warm_fits(Path(run_dir), device_env))

    def prepare(self) -> None:
        """Start the fork server now (when warm workers are on and none runs), so that the first run is warm too;
        with `PTFT_FORK_SERVER` set, connect to that shared one instead (our own when nothing listens there)."""
        with self._lock:
            if self.warm and (self._server is None or not self._server.alive()):
                self._server = None
                shared = os.environ.get("PTFT_FORK_SERVER")
                if shared:
                    with contextlib.suppress(OSError):
                        self._server = ForkServer(shared=shared)
                if self._server is None:
                    self._server = ForkServer(self._env({"CUDA_VISIBLE_DEVICES": "", "PTFT_DEVICE": "cpu"}))

    def launch(self, run_dir: Path, device_env: dict[str, str], resume: bool) -> subprocess.Popen | ForkedWorker:
        run_dir = Path(run_dir)
        server = self._server
        if self.warm and server is not None and server.usable() and _warm_fits(run_dir, device_env):
            worker = server.fork(run_dir, self._env(device_env), resume)
            if worker is not None:
                return worker
        with open(RunDir(run_dir).log, "ab") as log:
            return subprocess.Popen(
                worker_command(run_dir, resume), cwd=run_dir, env=self._env(device_env), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
            )

    @staticmethod
    def _env(device_env: dict[str, str]) -> dict[str, str]:
        env = dict(os.environ)
        env.update(device_env)
        env["PYTHONPATH"] = paths.child_pythonpath(env)
        return env

    def close(self) -> None:
        """Stop the fork server (it holds no run); the workers it forked go on."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.close()

    def poll(self, handle: subprocess.Popen | ForkedWorker | AdoptedWorker) -> int | None:
        if isinstance(handle, AdoptedWorker):
            return None if worker_alive(handle.pid, handle.run_dir) else EXIT_UNKNOWN
        return handle.poll()

    def _signal(self, handle: subprocess.Popen | ForkedWorker | AdoptedWorker, sig: int) -> None:
        pid = handle.pid
        if isinstance(handle, AdoptedWorker):
            if not worker_alive(pid, handle.run_dir):
                return
        elif handle.poll() is not None:
            return
        try:
            os.killpg(pid, sig)  # the worker leads its own session and group
        except ProcessLookupError:
            if isinstance(handle, ForkedWorker):  # forked a moment ago: not yet the leader of its own group
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            return
        except PermissionError:
            os.kill(pid, sig)

    def terminate(self, handle: subprocess.Popen | ForkedWorker | AdoptedWorker) -> None:
        self._signal(handle, signal.SIGTERM)

    def kill(self, handle: subprocess.Popen | ForkedWorker | AdoptedWorker) -> None:
        self._signal(handle, signal.SIGKILL)

    def adopt(self, run_dir: Path, pid: int | None) -> AdoptedWorker | None:
        return AdoptedWorker(int(pid), str(run_dir)) if pid and worker_alive(pid, run_dir) else None
