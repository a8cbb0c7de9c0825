"""Warm workers: the local launcher forks each CPU run's worker from a fork server that did its imports once.

Real processes throughout (the stand-in trainer of tests/fake_trainer.py, launched by the real launcher); the
rest of the suite chooses per fixture (conftest), so these tests are where the fork server's edges are exercised.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from ptft_core.config import PretrainConfig
from ptft_core.engine import Engine
from ptft_core.engine.launcher import ForkServer, LocalSubprocessLauncher, shared_fork_server_command, worker_alive
from ptft_core.rundir import RunDir
from tests.conftest import wait_for
from tests.test_engine import db_metric_seqs, journal_metric_seqs, progress_step, worker_pid

pytestmark = pytest.mark.slow


@pytest.fixture
def lab(fake_lab, monkeypatch):
    """Each engine with a fork server of its own (not the session's shared one: these tests kill servers)."""
    monkeypatch.setenv("PTFT_WARM_WORKERS", "1")
    monkeypatch.delenv("PTFT_FORK_SERVER", raising=False)
    return fake_lab


def fake(steps: int, every: int = 5) -> PretrainConfig:
    return PretrainConfig(max_steps=steps, eval_every=every)


def claim(run_dir) -> dict | None:
    path = RunDir(run_dir).claim
    return json.loads(path.read_text()) if path.exists() else None


def ready_server(engine: Engine) -> ForkServer:
    server = engine.launcher._server
    assert server is not None, "Engine.start prepares the fork server"
    assert server.ready.wait(120), "the fork server never said it was ready"
    return server


def training_forked_run(engine: Engine, config: PretrainConfig, steps: int = 3) -> tuple[str, Path]:
    """Start the engine, submit `config` once its fork server is ready, and return once the run has trained
    `steps` steps: (run id, run folder)."""
    engine.start()
    ready_server(engine)
    run_id = engine.submit(config)
    run_dir = engine.run_dir(run_id)
    wait_for(lambda: progress_step(run_dir) >= steps, 60, "the forked run to train")
    return run_id, run_dir


def test_each_run_is_forked_from_one_server_and_logs_like_a_cold_one(lab):
    with Engine(cpu_slots=1, poll_interval=0.2) as engine:
        assert isinstance(engine.launcher, LocalSubprocessLauncher) and engine.launcher.warm
        engine.start()
        server = ready_server(engine)
        runs = [engine.submit(fake(10)) for _ in range(3)]
        assert engine.wait(runs, timeout=120) == dict.fromkeys(runs, "completed")
        dirs = [engine.run_dir(run_id) for run_id in runs]
        taken = [claim(run_dir) for run_dir in dirs]
        # One process per run, each the server's child, named in the store and the journal by its own pid.
        assert len({t["pid"] for t in taken}) == 3
        assert all(server._exits[t["pid"]] == 0 for t in taken)
        assert [worker_pid(d) for d in dirs] == [engine.store.get_run(r)["pid"] for r in runs] == \
            [t["pid"] for t in taken]
        for run_id, run_dir in zip(runs, dirs, strict=True):
            assert f"run {run_id} attempt 1: completed" in (run_dir / "worker.log").read_text()
            assert db_metric_seqs(engine.store, run_id) == sorted(journal_metric_seqs(run_dir))
        assert engine.launcher._server is server and server.proc.poll() is None  # one server for all
    # Closing the engine ends the idle server; nothing is left behind.
    assert server.proc.wait(timeout=30) == 0


def test_a_forked_worker_killed_by_a_signal_is_reported_with_that_signal(lab):
    with Engine(cpu_slots=1, poll_interval=0.2) as engine:
        run_id, run_dir = training_forked_run(engine, fake(2000, every=50))
        os.kill(claim(run_dir)["pid"], signal.SIGKILL)
        assert engine.wait([run_id], timeout=60) == {run_id: "failed"}
        assert "worker killed by signal SIGKILL" in engine.store.get_run(run_id)["error"]


def test_a_dead_server_loses_no_run_and_the_engine_starts_another(lab):
    with Engine(cpu_slots=1, poll_interval=0.2) as engine:
        run_id, run_dir = training_forked_run(engine, fake(40, every=10))
        first_server = engine.launcher._server
        first_server.proc.kill()  # its worker is in a session of its own: it trains on
        assert engine.wait([run_id], timeout=120) == {run_id: "completed"}
        assert db_metric_seqs(engine.store, run_id) == sorted(journal_metric_seqs(run_dir))
        second_server = wait_for(lambda: engine.launcher._server is not first_server and engine.launcher._server,
                                 60, "a new fork server")
        assert second_server.ready.wait(120)
        after = engine.submit(fake(5))
        assert engine.wait([after], timeout=120) == {after: "completed"}
        assert second_server._exits.get(claim(engine.run_dir(after))["pid"]) == 0


def test_a_forked_worker_is_readopted_by_the_next_engine_and_cancels_cleanly(lab):
    with Engine(cpu_slots=1, poll_interval=0.2) as engine:
        run_id, run_dir = training_forked_run(engine, fake(2000, every=50), steps=5)
        pid = claim(run_dir)["pid"]
    # The engine and its server are gone; the worker trains on, and a new engine knows it by its claim, not its
    # command line.
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
    launcher.prepare()
    server = launcher._server
    try:
        proc = psutil.Process(server.proc.pid)
        assert not worker_alive(proc.pid, tmp_path)  # no claim: not this run's worker
        RunDir(tmp_path).claim.write_text(json.dumps({"pid": proc.pid, "create_time": proc.create_time()}))
        assert worker_alive(proc.pid, tmp_path)
        RunDir(tmp_path).claim.write_text(json.dumps({"pid": proc.pid, "create_time": proc.create_time() - 5}))
        assert not worker_alive(proc.pid, tmp_path)  # a reused pid: that process started at another time
    finally:
        launcher.close()
    assert server.proc.returncode is not None


def importing_server(launcher: LocalSubprocessLauncher, gate: Path, monkeypatch) -> ForkServer:
    """The launcher's fork server, held in its imports until `gate` exists."""
    with monkeypatch.context() as during_imports:
        during_imports.setenv("PTFT_FAKE_IMPORT_GATE", str(gate))
        launcher.prepare()
    return launcher._server


def test_a_run_waits_for_the_importing_server_then_is_forked(lab, monkeypatch, tmp_path):
    gate = tmp_path / "imports-may-finish"
    launcher = LocalSubprocessLauncher(warm=True)
    server = importing_server(launcher, gate, monkeypatch)
    with Engine(cpu_slots=1, poll_interval=0.2, launcher=launcher) as engine:
        run_id = engine.submit(fake(5))
        engine.step()  # one poll, synchronously: the server cannot be ready (its imports wait on the gate)
        assert engine.store.get_run(run_id)["status"] == "queued" and not engine.active_runs()
        gate.touch()
        assert server.ready.wait(120)
        engine.start()
        assert engine.wait([run_id], timeout=120) == {run_id: "completed"}
        assert server._exits.get(claim(engine.run_dir(run_id))["pid"]) == 0  # forked, not cold


def test_past_the_import_grace_a_run_starts_cold(lab, monkeypatch, tmp_path):
    launcher = LocalSubprocessLauncher(warm=True)
    server = importing_server(launcher, tmp_path / "never", monkeypatch)
    launcher.import_grace_s = 0.0  # a server that never gets ready holds no run back
    with Engine(cpu_slots=1, poll_interval=0.2, launcher=launcher) as engine:
        engine.start()
        run_id = engine.submit(fake(5))
        assert engine.wait([run_id], timeout=120) == {run_id: "completed"}
        assert not server.ready.is_set()
        assert claim(engine.run_dir(run_id)) is None  # a cold worker: its command line names the run, no claim


def test_a_forked_worker_gets_the_environment_of_its_launch_not_of_the_servers_start(lab, monkeypatch):
    with Engine(cpu_slots=1, poll_interval=0.2) as engine:
        engine.start()
        ready_server(engine)
        monkeypatch.setenv("PTFT_FAKE_FAIL_AT", "3")  # after the server started: only the launch can carry it
        run_id = engine.submit(fake(10))
        assert engine.wait([run_id], timeout=120) == {run_id: "failed"}
        assert claim(engine.run_dir(run_id)) is not None  # forked, not cold
        assert "injected failure at step 3" in engine.store.get_run(run_id)["error"]


def test_engines_share_one_listening_server_each_told_of_its_own_workers(lab, monkeypatch, tmp_path):
    """`PTFT_FORK_SERVER`: engines connect to one server (one import), which forks each run on its launcher's
    cores (not the server's) and tells each launcher how its own workers ended; a launcher that leaves does not
    end it, and where nothing listens an engine starts its own."""
    every_core = list(range(os.cpu_count() or 1))
    socket_path = tmp_path / "fork.sock"
    server = subprocess.Popen(shared_fork_server_command(socket_path), env=os.environ, start_new_session=True)
    share = os.sched_getaffinity(0)
    try:
        psutil.Process(server.pid).cpu_affinity(every_core)
        wait_for(socket_path.exists, 60, "the shared server's socket")
        monkeypatch.setenv("PTFT_FORK_SERVER", str(socket_path))
        (tmp_path / "second-lab").mkdir()  # two engines, two labs (a lab has one engine)
        with Engine(cpu_slots=1, poll_interval=0.2) as first, \
                Engine(home=tmp_path / "second-lab", cpu_slots=1, poll_interval=0.2) as second:
            for engine in (first, second):
                engine.start()
                assert ready_server(engine).proc is None  # a connection, not a server of its own
            runs = {engine: engine.submit(fake(5)) for engine in (first, second)}
            for engine, run_id in runs.items():
                assert engine.wait([run_id], timeout=120) == {run_id: "completed"}
                pid = claim(engine.run_dir(run_id))["pid"]
                assert engine.launcher._server._exits == {pid: 0}  # its own worker's exit, and only that
        assert server.poll() is None  # both engines closed their connections; the server serves on
        os.sched_setaffinity(0, every_core[:1])  # this engine's cores (its threads', inherited): one of the server's
        try:
            with Engine(cpu_slots=1, poll_interval=0.2) as third:
                third.start()
                run_id = third.submit(fake(2000, every=50))
                taken = wait_for(lambda: claim(third.run_dir(run_id)), 60, "the forked worker's claim")
                worker = psutil.Process(taken["pid"])
                assert worker.ppid() == server.pid and worker.cpu_affinity() == every_core[:1]
                # Trained a step: its SIGTERM handler is in place, so the cancel ends it cleanly (exit 0).
                wait_for(lambda: progress_step(third.run_dir(run_id)) >= 1, 60, "the forked run's first step")
                assert third.cancel(run_id, wait=30) == "cancelled"
                assert third.launcher._server._exits == {taken["pid"]: 0}
        finally:
            os.sched_setaffinity(0, share)
        monkeypatch.setenv("PTFT_FORK_SERVER", str(tmp_path / "nobody-listens.sock"))
        with Engine(cpu_slots=1, poll_interval=0.2) as fallback:
            fallback.start()
            assert ready_server(fallback).proc is not None  # nothing listens there: a server of its own
    finally:
        server.kill()
        server.wait()
