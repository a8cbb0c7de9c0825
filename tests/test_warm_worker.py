"""Warm workers: the local launcher hands a CPU run to a standby worker that did its imports ahead.

Real processes throughout (the stand-in trainer of tests/fake_trainer.py, launched by the real launcher); the
rest of the suite runs with warm workers off (conftest), so these tests are where the warm path is exercised.
"""

from __future__ import annotations

import json

import psutil
import pytest

from ptft_core.config import PretrainConfig
from ptft_core.engine import Engine
from ptft_core.engine.launcher import LocalSubprocessLauncher, worker_alive
from ptft_core.rundir import RunDir
from tests.conftest import wait_for
from tests.test_engine import db_metric_seqs, journal_metric_seqs, progress_step, worker_pid

pytestmark = pytest.mark.slow


@pytest.fixture
def lab(fake_lab, monkeypatch):
    monkeypatch.setenv("PTFT_WARM_WORKERS", "1")
    return fake_lab


def fake(steps: int, every: int = 5) -> PretrainConfig:
    return PretrainConfig(max_steps=steps, eval_every=every)


def claim(run_dir) -> dict | None:
    path = RunDir(run_dir).claim
    return json.loads(path.read_text()) if path.exists() else None


def test_each_run_goes_to_a_standby_and_logs_like_a_cold_one(lab):
    with Engine(cpu_slots=1, poll_interval=0.2) as engine:
        assert isinstance(engine.launcher, LocalSubprocessLauncher) and engine.launcher.warm
        first = engine.submit(fake(10))
        engine.start()
        assert engine.wait([first], timeout=120) == {first: "completed"}
        second = engine.submit(fake(10))
        assert engine.wait([second], timeout=120) == {second: "completed"}
        first_dir, second_dir = engine.run_dir(first), engine.run_dir(second)
        # Each run went to a standby (the first to the one `start` prepared), one process per run.
        taken = [claim(first_dir), claim(second_dir)]
        assert all(taken) and taken[0]["pid"] != taken[1]["pid"]
        assert taken[1]["pid"] == worker_pid(second_dir) == engine.store.get_run(second)["pid"]
        assert f"run {second} attempt 1: completed" in (second_dir / "worker.log").read_text()
        assert db_metric_seqs(engine.store, second) == sorted(journal_metric_seqs(second_dir))
        standby = engine.launcher._standby
        assert standby is not None and standby.poll() is None  # the next run's, waiting
    # Closing the engine ends the idle standby; nothing is left behind.
    assert standby.wait(timeout=30) == 0


def test_a_warm_worker_is_readopted_by_the_next_engine_and_cancels_cleanly(lab):
    with Engine(cpu_slots=1, poll_interval=0.2) as engine:
        warmup = engine.submit(fake(2, every=1))
        engine.start()
        engine.wait([warmup], timeout=120)
        run_id = engine.submit(fake(2000, every=50))
        run_dir = engine.run_dir(run_id)
        wait_for(lambda: progress_step(run_dir) >= 5, 60, "the warm run to train")
        pid = claim(run_dir)["pid"]
    # The engine is gone; the worker trains on, and a new engine knows it by its claim, not its command line.
    assert worker_alive(pid, run_dir)
    assert str(run_dir) not in " ".join(psutil.Process(pid).cmdline())
    with Engine(cpu_slots=1, poll_interval=0.2) as engine:
        engine.start()
        assert engine.store.get_run(run_id)["status"] == "running"
        at = progress_step(run_dir)
        wait_for(lambda: progress_step(run_dir) > at, 60, "the adopted run to go on")
        assert engine.cancel(run_id, wait=30) == "cancelled"
        assert list(run_dir.glob("checkpoints/step-*/training_state.pt")), "cancel must leave a checkpoint"
        assert db_metric_seqs(engine.store, run_id) == sorted(journal_metric_seqs(run_dir))


def test_a_claim_names_its_worker_by_pid_and_start_time(lab, tmp_path):
    launcher = LocalSubprocessLauncher(warm=True)
    standby = launcher._spawn_standby()
    launcher._standby = standby
    try:
        proc = psutil.Process(standby.pid)
        assert not worker_alive(standby.pid, tmp_path)  # no claim: not this run's worker
        RunDir(tmp_path).claim.write_text(json.dumps({"pid": proc.pid, "create_time": proc.create_time()}))
        assert worker_alive(standby.pid, tmp_path)
        RunDir(tmp_path).claim.write_text(json.dumps({"pid": proc.pid, "create_time": proc.create_time() - 5}))
        assert not worker_alive(standby.pid, tmp_path)  # a reused pid: that process started at another time
    finally:
        launcher.close()
    assert standby.returncode is not None
