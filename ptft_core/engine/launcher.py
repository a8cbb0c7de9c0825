"""How a run's worker process is started, watched and stopped: the `Launcher` protocol and the local one.

The engine talks to workers only through this protocol, so a cluster launcher (submit a job, poll it, cancel
it) can replace `LocalSubprocessLauncher` without touching the engine or the UI. A handle is whatever the
launcher needs to find its worker again; it must carry `.pid` (None where there is no local process).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
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
    """A warm worker's command line does not name its run; the claim it wrote in the run folder does (its pid and
    start time: a reused pid has another start time)."""
    try:
        claim = json.loads(RunDir(run_dir).claim.read_text(encoding="utf-8"))
        return claim["pid"] == proc.pid and abs(claim["create_time"] - proc.create_time()) < 0.01
    except (OSError, ValueError, KeyError, TypeError):
        return False


class LocalSubprocessLauncher:
    """Workers as local child processes in their own session.

    `start_new_session=True`: Ctrl-C in a terminal or killing the engine's process group does not reach the
    workers (the next engine re-adopts them), and signals go to the worker's whole group, its data-loader
    processes included. stdout and stderr go to `RUN_DIR/worker.log`, a file: a pipe nobody reads would fill
    up and block the worker, and a file survives the engine.

    Warm workers (`warm`, default on; `PTFT_WARM_WORKERS=0` turns them off): each CPU launch of one rank hands
    its run to a standby worker that has done its imports already (`python -m ptft_core.worker --standby`). The
    next standby starts at the next `prepare`, which the engine calls at its start and once no run is in its
    start-up (each has logged a training step): it then imports while runs train (imports are single-threaded,
    at the lowest priority), not while one tokenises and evaluates its step 0. A run's time to its first step
    loses the 5-7 s of imports. GPU runs and runs of several ranks start cold: their CUDA device list must be set
    before anything touches CUDA.
    """

    def __init__(self, warm: bool | None = None):
        self.warm = os.environ.get("PTFT_WARM_WORKERS", "1") != "0" if warm is None else warm
        self._standby: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Start a standby now (when warm workers are on and none waits), so that the first run is warm too."""
        with self._lock:
            if self.warm and (self._standby is None or self._standby.poll() is not None):
                self._standby = self._spawn_standby()

    def launch(self, run_dir: Path, device_env: dict[str, str], resume: bool) -> subprocess.Popen:
        run_dir = Path(run_dir)
        if self.warm and _warm_fits(run_dir, device_env):
            with self._lock:  # the next standby comes from `prepare`, once this run has started training
                standby, self._standby = self._standby, None
            if standby is not None and self._hand_over(standby, run_dir, device_env, resume):
                return standby
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

    def _spawn_standby(self) -> subprocess.Popen:
        folder = paths.home() / "runs"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "standby-worker.log", "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "ptft_core.worker", "--standby"], cwd=folder,
                env=self._env({"CUDA_VISIBLE_DEVICES": "", "PTFT_DEVICE": "cpu"}), stdin=subprocess.PIPE,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
            )

    @staticmethod
    def _hand_over(standby: subprocess.Popen, run_dir: Path, device_env: dict[str, str], resume: bool) -> bool:
        """Give the standby its run; False when it died meanwhile (the caller starts a cold worker instead)."""
        order = {"run_dir": str(run_dir.resolve()), "resume": resume, "env": device_env}
        try:
            if standby.poll() is not None:
                return False
            standby.stdin.write((json.dumps(order) + "\n").encode())
            standby.stdin.close()  # one run per standby; it never reads again
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def close(self) -> None:
        """Stop the standby (an idle process that holds no run); workers with runs go on."""
        with self._lock:
            standby, self._standby = self._standby, None
        if standby is not None:
            with contextlib.suppress(OSError):
                standby.stdin.close()  # it exits on end of input
            try:
                standby.wait(timeout=10)
            except subprocess.TimeoutExpired:
                standby.kill()

    def poll(self, handle: subprocess.Popen | AdoptedWorker) -> int | None:
        if isinstance(handle, AdoptedWorker):
            return None if worker_alive(handle.pid, handle.run_dir) else EXIT_UNKNOWN
        return handle.poll()

    def _signal(self, handle: subprocess.Popen | AdoptedWorker, sig: int) -> None:
        pid = handle.pid
        if isinstance(handle, AdoptedWorker):
            if not worker_alive(pid, handle.run_dir):
                return
        elif handle.poll() is not None:
            return
        try:
            os.killpg(pid, sig)  # the worker leads its own session and group
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)

    def terminate(self, handle: subprocess.Popen | AdoptedWorker) -> None:
        self._signal(handle, signal.SIGTERM)

    def kill(self, handle: subprocess.Popen | AdoptedWorker) -> None:
        self._signal(handle, signal.SIGKILL)

    def adopt(self, run_dir: Path, pid: int | None) -> AdoptedWorker | None:
        return AdoptedWorker(int(pid), str(run_dir)) if pid and worker_alive(pid, run_dir) else None
