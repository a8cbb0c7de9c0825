"""Runs on a Ray cluster: the `Launcher` protocol with one detached actor per run attempt.

Selected by `PTFT_RAY_ADDRESS` (`auto`: the cluster this machine belongs to, `ray://host:10001` for a client
connection, or a head's `host:6379`); without it the engine launches local subprocesses as before, and Ray is
never imported (it is an optional extra: `pip install -r requirements-ray.txt`).

One run attempt = one actor, `ptft/<run_id>#<attempt>` (detached: it outlives the engine that created it, so a
restarted engine finds it by name and re-adopts the run). The actor asks Ray for the run's CPUs and, on GPU
slots, one GPU per rank (Ray queues it until they are free on one node and sets `CUDA_VISIBLE_DEVICES` for it), starts
`python -m ptft_core.worker RUN_DIR` as its child and keeps its `Popen`, so the exit code stays known after a
re-adoption. The child is *not* put in a session of its own: when the actor dies (killed, or its node lost),
Ray's cleanup of the actor's process group ends the worker too instead of orphaning it.

What the engine sees: `poll` never blocks (it sends one `poll()` call to the actor and reads the answer on a
later loop iteration); an actor that died answers with an error, and once the worker's heartbeat has stopped
(its last journal lines written) the run's exit code becomes EXIT_UNKNOWN: `interrupted`, with the reason. The worker's
environment is passed explicitly (an actor inherits the raylet's, not the engine's). Artefacts are files under
`PTFT_HOME`, which must be the same shared path on every node (docs/scale-out.md); the worker fsyncs its journal
about once a second there (`PTFT_JOURNAL_FSYNC_S`), so another node's engine reads whole lines soon.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptft_core import paths
from ptft_core.engine.devices import Gpu
from ptft_core.engine.launcher import EXIT_UNKNOWN, worker_command
from ptft_core.journal import JOURNAL_FSYNC_ENV
from ptft_core.rundir import RunDir
from ptft_core.worker import HEARTBEAT_INTERVAL

log = logging.getLogger(__name__)

RAY_ADDRESS_ENV = "PTFT_RAY_ADDRESS"
NAMESPACE = "ptft"
JOURNAL_FSYNC_S = "1"  # seconds between journal fsyncs in a Ray run's worker
WORKER_GONE_S = 3 * HEARTBEAT_INTERVAL  # a heartbeat this old: the worker of a dead actor has ended


def actor_name(run_dir: Path) -> str:
    """`<run_id>#<attempt>`: a resumed run gets a new actor, and a stale one of an earlier attempt is not it."""
    run = RunDir(run_dir).read_run()
    return f"{run['run_id']}#{int(run.get('attempt', 1))}"


class WorkerActor:
    """Holds one worker process on whichever node Ray placed it (registered with `ray.remote` on first use)."""

    def __init__(self, cmd: list[str], cwd: str, env: dict[str, str]):
        if "CUDA_VISIBLE_DEVICES" in os.environ:  # Ray's choice of GPU for this actor, not the engine's
            env = {**env, "CUDA_VISIBLE_DEVICES": os.environ["CUDA_VISIBLE_DEVICES"]}
        with open(RunDir(cwd).log, "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, close_fds=True)

    def poll(self) -> tuple[int, int | None]:
        """(the worker's pid, its exit code or None while it runs)."""
        return self.proc.pid, self.proc.poll()

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)


@dataclass
class RayWorker:
    """The engine's handle on a run's actor."""

    name: str
    actor: Any
    pid: int | None
    run_dir: Path
    pending: Any = None  # the ObjectRef of a poll() in flight
    lost: bool = False  # the actor died; its worker may still be winding down


class RayLauncher:
    def __init__(self, address: str):
        import ray

        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
        self._actor_class = ray.remote(max_restarts=0, max_task_retries=0)(WorkerActor)

    # -- the cluster as a device pool ---------------------------------------------------------------------------
    def cluster_cpus(self) -> int:
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def cluster_gpus(self) -> list[Gpu]:
        return [Gpu(i, "Ray cluster GPU") for i in range(int(self.ray.cluster_resources().get("GPU", 0)))]

    def largest_node_gpus(self) -> int:
        """The most GPUs on one live node: what a run of several ranks (one actor, one node) can hold."""
        return max((int(node.get("Resources", {}).get("GPU", 0)) for node in self.ray.nodes() if node.get("Alive")),
                   default=0)

    # -- the Launcher protocol ------------------------------------------------------------------------------------
    def launch(self, run_dir: Path, device_env: dict[str, str], resume: bool) -> RayWorker:
        run_dir = Path(run_dir)
        env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
        env.update({k: v for k, v in device_env.items() if k != "CUDA_VISIBLE_DEVICES"})
        env["PYTHONPATH"] = paths.child_pythonpath(env)
        env[JOURNAL_FSYNC_ENV] = JOURNAL_FSYNC_S
        name = actor_name(run_dir)
        # On a GPU slot: as many GPUs as the pool gave the run (one per rank), on one node since one actor.
        gpus = len(device_env["CUDA_VISIBLE_DEVICES"].split(",")) if device_env.get("PTFT_DEVICE") == "cuda" else 0
        actor = self._actor_class.options(
            name=name, namespace=NAMESPACE, lifetime="detached", num_cpus=int(device_env.get("PTFT_THREADS", 1)),
            num_gpus=gpus,
        ).remote(worker_command(run_dir, resume), str(run_dir), env)
        # The actor starts once Ray has the resources; until then the run shows as running with no pid.
        return RayWorker(name, actor, None, run_dir)

    def poll(self, handle: RayWorker) -> int | None:
        if handle.lost:
            return EXIT_UNKNOWN if worker_quiet(handle.run_dir) else None
        if handle.pending is None:
            handle.pending = handle.actor.poll.remote()
        ready, _ = self.ray.wait([handle.pending], timeout=0)
        if not ready:
            return None
        ref, handle.pending = handle.pending, None
        try:
            handle.pid, code = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:  # the actor died (killed, node lost): its worker with it
            log.warning("actor %s is gone: %s", handle.name, str(exc).splitlines()[0][:200])
            handle.lost = True
            return self.poll(handle)
        if code is not None:
            self.ray.kill(handle.actor)  # a detached actor stays until killed: free its resources
        return code

    def terminate(self, handle: RayWorker) -> None:
        handle.actor.signal.remote(signal.SIGTERM)

    def kill(self, handle: RayWorker) -> None:
        handle.actor.signal.remote(signal.SIGKILL)
        self.ray.kill(handle.actor)  # and the actor, whose process group takes anything the worker left

    def adopt(self, run_dir: Path, pid: int | None) -> RayWorker | None:
        name = actor_name(run_dir)
        try:
            actor = self.ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:  # no such actor: it ended, or died with its node
            return None
        return RayWorker(name, actor, pid, Path(run_dir))  # the journal's pid; the actor's first answer confirms it


def worker_quiet(run_dir: Path) -> bool:
    """Whether a run's worker has stopped touching its heartbeat: gone, its last journal lines written. Ray's
    cleanup of a dead actor signals the worker, which may still save a checkpoint and report before it ends;
    reading its exit before then would drop those lines."""
    try:
        beat = RunDir(run_dir).heartbeat.stat().st_mtime
    except FileNotFoundError:
        return True
    return time.time() - beat > WORKER_GONE_S


def launcher_from_env() -> RayLauncher | None:
    """The Ray launcher when `PTFT_RAY_ADDRESS` is set, else None (local subprocesses)."""
    address = os.environ.get(RAY_ADDRESS_ENV, "").strip()
    return RayLauncher(address) if address else None
