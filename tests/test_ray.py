"""The Ray launcher against a real local Ray cluster (a head started by this module, 4 CPUs and one fake GPU
resource; not local mode), with the stand-in trainer in real worker processes held by detached actors: queue
and run, cancel with a checkpoint, resume, `kill -9` of the engine then re-adoption by the next one, two runs on
one GPU one after the other (Ray's own queue), and a run whose actor process is killed ends interrupted. And one
real pair of runs, an image pretraining and its fine-tune, through the same actors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from ptft_core import paths
from ptft_core.config import ImageFinetuneConfig, ImagePretrainConfig, PretrainConfig
from ptft_core.engine import Engine
from ptft_core.engine.ray_launcher import NAMESPACE, RAY_ADDRESS_ENV, RayLauncher
from ptft_core.journal import read_events
from ptft_core.rundir import RunDir
from tests.conftest import wait_for

ray = pytest.importorskip("ray", reason="the Ray extra is not installed (pip install -r requirements-ray.txt)")
pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}  # no token a later cluster would want


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """A Ray head of our own (`ray start --block` in its own session, stopped with its process group)."""
    port = free_port()
    env = {**os.environ, **RAY_ENV}
    head = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
                             f"--port={port}", "--num-cpus=4", "--num-gpus=1", "--include-dashboard=false",
                             "--disable-usage-stats"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    os.environ.update(RAY_ENV)
    try:
        deadline = time.monotonic() + 120
        while True:  # the head is up when a driver can connect
            try:
                ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
                break
            except (ConnectionError, RuntimeError):
                if time.monotonic() > deadline or head.poll() is not None:
                    raise
                time.sleep(0.5)
        yield address
    finally:
        ray.shutdown()
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:  # `ray start --block` waits 30 s for a straggler: this cluster is ours
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=60)


@pytest.fixture
def lab(fake_lab, cluster, monkeypatch) -> Path:
    monkeypatch.setenv(RAY_ADDRESS_ENV, cluster)
    return fake_lab


@pytest.fixture
def real_lab(home, cluster, monkeypatch) -> Path:
    """A lab with the built-in data whose engine launches the real trainers on the cluster, CPU only."""
    monkeypatch.setenv(RAY_ADDRESS_ENV, cluster)
    monkeypatch.setenv("PTFT_GPUS", "none")
    monkeypatch.delenv("PTFT_TRAINER", raising=False)
    return home


def fake(steps: int = 20, every: int = 5, **kw) -> PretrainConfig:
    return PretrainConfig(max_steps=steps, eval_every=every, **kw)


def events(engine: Engine, run_id: str, kind: str) -> list[dict]:
    found, _ = read_events(engine.run_dir(run_id) / "events.jsonl")
    return [e for e in found if e["type"] == kind]


def progress_step(engine: Engine, run_id: str) -> int:
    return max((e["step"] for e in events(engine, run_id, "progress")), default=-1)


def actors_gone(*names: str) -> bool:
    """None of these run actors (`<run_id>#<attempt>`) is registered any more: each was killed when its worker
    ended, so no detached actor is left holding the cluster's resources."""
    for name in names:
        try:
            ray.get_actor(name, namespace=NAMESPACE)
            return False
        except ValueError:
            continue
    return True


def test_runs_queue_train_cancel_with_a_checkpoint_and_resume_on_ray(lab, monkeypatch):
    with Engine(cpu_slots=2) as engine:
        assert isinstance(engine.launcher, RayLauncher)
        assert [d["device"] for d in engine.devices()] == ["cuda:0", "cpu"]  # the cluster's resources
        done = engine.submit(fake(device="cpu"))
        engine.start()
        assert engine.wait([done], timeout=120) == {done: "completed"}
        row = engine.store.get_run(done)
        assert row["step"] == 20 and row["pid"] and len(engine.store.last_metrics(done)) > 0

        monkeypatch.setenv("PTFT_FAKE_STEP_S", "0.2")  # the next worker's environment comes from the engine's
        slow = engine.submit(fake(steps=200, device="cpu"))
        wait_for(lambda: progress_step(engine, slow) >= 3, 120, "three steps")
        engine.cancel(slow)
        assert engine.wait([slow], timeout=10) == {slow: "cancelled"}  # within 10 s, on the worker's own word
        step = RunDir(engine.run_dir(slow)).latest_step()
        assert step is not None and step >= 3
        monkeypatch.setenv("PTFT_FAKE_STEP_S", "0.01")
        engine.resume(slow)
        assert engine.wait([slow], timeout=120) == {slow: "completed"}
        train = engine.store.query("SELECT step FROM metrics WHERE run_id = ? AND split = 'train' AND name = 'loss'"
                                   " AND NOT superseded ORDER BY step", [slow])["step"].tolist()
        assert train == list(range(1, 201))  # the second attempt went on from the checkpoint, no gap, no repeat
    wait_for(lambda: actors_gone(f"{done}#1", f"{slow}#1", f"{slow}#2"), 30, "every run's actor to be gone")


def test_two_runs_on_one_gpu_run_one_after_the_other(lab):
    """Two GPU slots on a one-GPU cluster: the engine launches both, Ray starts the second actor only once the
    first has given its GPU back."""
    with Engine(cpu_slots=1, gpu_slots_per_device=2) as engine:
        first, second = (engine.submit(fake(steps=30, device="cuda", seed=i)) for i in range(2))
        engine.start()
        assert engine.wait([first, second], timeout=180) == {first: "completed", second: "completed"}

    def span(run_id: str) -> tuple[float, float]:
        statuses = events(engine, run_id, "status")
        return statuses[0]["wall_time"], statuses[-1]["wall_time"]

    (a0, a1), (b0, b1) = sorted([span(first), span(second)])
    assert b0 >= a1, f"the second run started at {b0:.2f} before the first ended at {a1:.2f}"
    devices = {e["device"] for r in (first, second) for e in events(engine, r, "status") if e.get("device")}
    assert devices == {"cuda"}


def test_kill_9_of_the_engine_then_the_next_one_re_adopts_the_run(lab):
    script = textwrap.dedent("""
        import sys, time
        from ptft_core.config import ImageFinetuneConfig, ImagePretrainConfig, PretrainConfig
        from ptft_core.engine import Engine
        engine = Engine(cpu_slots=1)
        run_id = engine.submit(PretrainConfig(max_steps=150, eval_every=10, device="cpu"))
        engine.start()
        print(run_id, flush=True)
        time.sleep(600)
    """)
    env = {**os.environ, "PTFT_FAKE_STEP_S": "0.05", "PYTHONPATH": paths.child_pythonpath(dict(os.environ))}
    first = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True,
                             cwd=paths.REPO_ROOT)
    try:
        run_id = first.stdout.readline().strip()
        run_dir = lab / "runs" / run_id
        wait_for(lambda: any(e["type"] == "progress" and e["step"] >= 10
                             for e in read_events(run_dir / "events.jsonl")[0]), 120, "ten steps")
    finally:
        first.kill()
        first.wait()
    with Engine(cpu_slots=1) as engine:
        assert engine.active_runs() == [run_id]  # re-adopted: its actor outlived the engine
        assert engine.store.get_run(run_id)["status"] == "running"
        engine.start()
        assert engine.wait([run_id], timeout=120) == {run_id: "completed"}
        journal = {e["seq"] for e in read_events(run_dir / "events.jsonl")[0] if e["type"] == "metric"}
        stored = engine.store.query("SELECT seq FROM metrics WHERE run_id = ?", [run_id])["seq"].tolist()
        assert sorted(stored) == sorted(journal)  # every line once, nothing lost across the kill
    wait_for(lambda: actors_gone(f"{run_id}#1"), 30, "the run's actor to be gone")


def test_a_run_whose_actor_is_killed_ends_interrupted_and_leaves_no_worker(lab, monkeypatch):
    monkeypatch.setenv("PTFT_FAKE_STEP_S", "0.2")
    with Engine(cpu_slots=1) as engine:
        run_id = engine.submit(fake(steps=500, device="cpu"))
        engine.start()
        wait_for(lambda: progress_step(engine, run_id) >= 2, 120, "two steps")
        worker = psutil.Process(next(e["pid"] for e in events(engine, run_id, "status")))
        actor = worker.parent()
        assert "ray" in " ".join(actor.cmdline()).lower(), actor.cmdline()
        os.kill(actor.pid, signal.SIGKILL)
        # Ray's cleanup of the dead actor signals its worker, which saves a checkpoint and stops: interrupted (no
        # one cancelled it), not left running, and resumable.
        status = engine.wait([run_id], timeout=60)[run_id]
        row = engine.store.get_run(run_id)
        assert status == "interrupted" and row["finished_at"] is not None, row
        assert "signal the lab did not send" in row["error"]
        wait_for(lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, 30,
                 "the worker to end with its actor")
        assert json.loads((engine.run_dir(run_id) / "run.json").read_text())["attempt"] == 1


def test_an_image_fine_tune_trains_on_ray_after_its_pretraining_like_any_run(real_lab):
    with Engine(cpu_slots=2) as engine:
        assert isinstance(engine.launcher, RayLauncher)
        parent = engine.submit(ImagePretrainConfig(dataset="digits", image_size=8, batch_size=32, max_steps=4,
                                                   eval_count=1, device="cpu"))
        child = engine.submit(ImageFinetuneConfig(base=f"run:{parent}", dataset="digits", batch_size=32, max_steps=4,
                                                  eval_count=1, device="cpu"), parent=parent)
        engine.start()
        ended = engine.wait([parent, child], timeout=300)
        assert ended == {parent: "completed", child: "completed"}, engine.store.get_run(child).get("error")
        rows = engine.store.metric_rows([child])
        assert {"validation", "test", "forgetting", "reference"} <= set(rows["split"])
        assert RunDir(engine.run_dir(child)).has_checkpoint("final")
    wait_for(lambda: actors_gone(f"{parent}#1", f"{child}#1"), 30, "both runs' actors to be gone")
