"""The worker process on its own: journal, heartbeat, SIGTERM -> cancelled with a checkpoint, resume, failure.

These run `python -m ptft_core.worker` for real, with the test trainer (`PTFT_TRAINER=tests.fake_trainer:run`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ptft_core import paths
from ptft_core.config import PretrainConfig, config_to_dict
from ptft_core.journal import read_events

pytestmark = pytest.mark.slow



def make_run_dir(tmp_path: Path, max_steps: int = 20, eval_every: int = 5, attempt: int = 1) -> Path:
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True, exist_ok=True)
    config = config_to_dict(PretrainConfig(max_steps=max_steps, eval_every=eval_every))
    (run_dir / "run.json").write_text(json.dumps({"run_id": "r1", "config": config, "attempt": attempt}))
    return run_dir


def worker(run_dir: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "PTFT_TRAINER": "tests.fake_trainer:run", "PTFT_THREADS": "1",
                "PTFT_DEVICE": "cpu", "PYTHONPATH": paths.child_pythonpath(os.environ), **(env or {})}
    log = open(run_dir / "worker.log", "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen([sys.executable, "-m", "ptft_core.worker", str(run_dir), *args], env=full_env,
                            stdout=log, stderr=subprocess.STDOUT, cwd=run_dir)


def events(run_dir: Path, type_: str | None = None) -> list[dict]:
    evs, _ = read_events(run_dir / "events.jsonl")
    return [e for e in evs if type_ is None or e["type"] == type_]


def test_worker_runs_to_completion(tmp_path):
    run_dir = make_run_dir(tmp_path)
    proc = worker(run_dir)
    assert proc.wait(timeout=60) == 0
    statuses = events(run_dir, "status")
    assert [s["status"] for s in statuses] == ["running", "completed"]
    assert statuses[0]["pid"] == proc.pid and statuses[0]["attempt"] == 1 and statuses[0]["device"] == "cpu"
    seqs = [e["seq"] for e in events(run_dir)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert max(e["step"] for e in events(run_dir, "metric")) == 20
    env = events(run_dir, "worker_env")[0]
    assert env["threads"] == "1" and not env["imported_duckdb"] and not env["imported_store"]
    assert (run_dir / "heartbeat").exists()


def test_heartbeat_is_touched_every_second(tmp_path):
    run_dir = make_run_dir(tmp_path, max_steps=80)
    proc = worker(run_dir)
    try:
        deadline = time.time() + 30
        while not (run_dir / "heartbeat").exists() and time.time() < deadline:
            time.sleep(0.1)
        first = (run_dir / "heartbeat").stat().st_mtime
        time.sleep(2.2)
        assert (run_dir / "heartbeat").stat().st_mtime > first
    finally:
        proc.kill()
        proc.wait()


def test_sigterm_cancels_with_a_checkpoint_and_resume_continues(tmp_path):
    run_dir = make_run_dir(tmp_path, max_steps=80, eval_every=50)
    proc = worker(run_dir)
    deadline = time.time() + 30
    while not any(e["step"] >= 12 for e in events(run_dir, "progress")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert events(run_dir, "status")[-1]["status"] == "cancelled"
    stopped_at = max(e["step"] for e in events(run_dir, "metric"))
    checkpoint = run_dir / "checkpoints" / f"step-{stopped_at}"
    assert (checkpoint / "training_state.pt").is_file()  # saved on the way out, at the last finished step
    last_seq = events(run_dir)[-1]["seq"]

    (run_dir / "run.json").write_text(json.dumps({**json.loads((run_dir / "run.json").read_text()), "attempt": 2}))
    proc = worker(run_dir, "--resume")
    assert proc.wait(timeout=60) == 0
    after = [e for e in events(run_dir) if e["seq"] > last_seq]
    assert after[0]["seq"] == last_seq + 1  # the journal's numbering continues
    resume = next(e for e in after if e["type"] == "resume" and "from_step" in e)
    assert resume == {**resume, "from_step": stopped_at, "attempt": 2}
    steps = [e["step"] for e in after if e["type"] == "metric" and e["split"] == "train" and e["name"] == "loss"]
    assert steps == list(range(stopped_at + 1, 81))
    assert events(run_dir, "status")[-1]["status"] == "completed"


def test_failure_is_reported_with_its_error_and_traceback(tmp_path):
    run_dir = make_run_dir(tmp_path)
    proc = worker(run_dir, env={"PTFT_FAKE_FAIL_AT": "3"})
    assert proc.wait(timeout=60) == 1
    final = events(run_dir, "status")[-1]
    assert final["status"] == "failed" and "injected failure at step 3" in final["error"]
    log = (run_dir / "worker.log").read_text()
    assert "Traceback" in log and "RuntimeError: injected failure" in log


def test_resume_without_a_checkpoint_fails_clearly(tmp_path):
    run_dir = make_run_dir(tmp_path)
    proc = worker(run_dir, "--resume")
    assert proc.wait(timeout=60) == 1
    assert "no complete checkpoint" in events(run_dir, "status")[-1]["error"]


def test_bad_config_fails_as_a_status(tmp_path):
    run_dir = make_run_dir(tmp_path)
    run = json.loads((run_dir / "run.json").read_text())
    run["config"]["max_steps"] = -1
    (run_dir / "run.json").write_text(json.dumps(run))
    proc = worker(run_dir)
    assert proc.wait(timeout=60) == 1
    assert "max_steps" in events(run_dir, "status")[-1]["error"]


def test_a_torn_last_line_does_not_swallow_the_next_event(tmp_path):
    run_dir = make_run_dir(tmp_path)
    (run_dir / "events.jsonl").write_text('{"type":"metric","run_id":"r1","seq":1,"step":1,"split":"train","na')
    proc = worker(run_dir)
    assert proc.wait(timeout=60) == 0
    evs = events(run_dir)
    assert evs[0]["type"] == "status" and evs[0]["status"] == "running"  # intact, right after the torn line
    assert evs[-1]["status"] == "completed"
