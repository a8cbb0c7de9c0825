"""`python -m ptft_core run ...` and `runs list|show|cancel|resume|export|delete`, with the test trainer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ptft_core import paths
from ptft_core.cli import main
from ptft_core.engine import Engine
from ptft_core.journal import read_events
from ptft_core.store import Store


@pytest.fixture
def lab(fake_lab, monkeypatch) -> Path:
    monkeypatch.setenv("PTFT_FAKE_STEP_S", "0.02")
    return fake_lab


def config_file(tmp_path: Path, name: str = "fake", **fields) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"kind": "pretrain", "name": name, "max_steps": 20, "eval_every": 5, **fields}))
    return path


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ptft_core", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=paths.REPO_ROOT, env=os.environ)


@pytest.mark.slow
def test_run_with_seeds_then_list_show_export(lab, tmp_path, capsys):
    assert main(["run", str(config_file(tmp_path)), "--seeds", "0,1", "--cpu-slots", "2", "--tag", "cli"]) == 0
    out = capsys.readouterr().out
    assert out.count("queued ") == 2 and out.count("completed in") == 2
    with Store(paths.db_path(), read_only=True) as store:
        runs = store.list_runs()
    assert sorted(runs["name"]) == ["fake-s0", "fake-s1"] and set(runs["status"]) == {"completed"}
    assert all(tags == ["cli"] for tags in runs["tags"])
    run_id = runs["id"][0]

    assert main(["runs", "list", "--tag", "cli"]) == 0
    listing = capsys.readouterr().out
    assert run_id in listing and "20/20" in listing
    assert main(["runs", "list", "--status", "failed"]) == 0
    assert "no runs" in capsys.readouterr().out

    assert main(["runs", "show", run_id]) == 0
    shown = capsys.readouterr().out
    assert "status: completed" in shown and '"max_steps": 20' in shown and "loss" in shown
    assert main(["runs", "show", "nope"]) == 2

    out_file = tmp_path / "export.csv"
    assert main(["runs", "export", *runs["id"], "--out", str(out_file)]) == 0
    exported = pd.read_csv(out_file)
    assert set(exported["run_id"]) == set(runs["id"])
    assert (tmp_path / "export.runs.json").exists()


def test_progress_lines_show_training_steps_per_s_and_the_runs_own_eta(tmp_path):
    """`ptft run` follows a run with what the run reports of itself: training steps/s (evaluations apart) and the
    time its own schedule has left."""
    from ptft_core.cli.runs import follow

    with Store(tmp_path / "lab.duckdb") as store:
        store.insert_run({"id": "paced", "name": "paced", "kind": "finetune", "config": {"kind": "finetune"}})
        store.ingest_events([
            {"type": "status", "run_id": "paced", "seq": 1, "status": "running"},
            {"type": "progress", "run_id": "paced", "seq": 2, "step": 10, "total_steps": 27,
             "train_steps_per_s": 2.5, "eta_s": 75.0},
        ])
        lines = []

        def out(line, flush=False):  # the run ends once its progress line is out
            lines.append(line)
            if len(lines) == 1:
                store.ingest_events([{"type": "status", "run_id": "paced", "seq": 3, "status": "completed"}])

        assert follow(store, ["paced"], interval=0.01, out=out) == 0
        assert lines[0] == "paced [paced] step 10/27 (37%) train 2.50 steps/s ETA 1:15"


def test_run_applies_key_value_overrides_to_the_queued_config(lab, tmp_path, capsys):
    assert main(["run", str(config_file(tmp_path)), "max_steps=8", "optim.lr=2e-3", "tags=[cli, override]",
                 "--cpu-slots", "1"]) == 0
    with Store(paths.db_path(), read_only=True) as store:
        run = store.list_runs().iloc[0]
    config = json.loads(run["config"])
    assert (config["max_steps"], config["optim"]["lr"], config["tags"]) == (8, 2e-3, ["cli", "override"])
    assert run["status"] == "completed" and "completed" in capsys.readouterr().out


def test_bad_config_exits_2_before_any_work(lab, tmp_path, capsys):
    good = config_file(tmp_path)
    bad = config_file(tmp_path, "bad", max_steps=0)
    assert main(["run", str(good), str(bad)]) == 2
    assert "max_steps" in capsys.readouterr().err
    assert not paths.db_path().exists() and not (lab / "runs").exists()


@pytest.mark.slow
def test_failed_run_exits_1_and_resume_completes_it(lab, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PTFT_FAKE_FAIL_AT", "12")
    assert main(["run", str(config_file(tmp_path)), "--cpu-slots", "1"]) == 1
    assert "injected failure at step 12" in capsys.readouterr().out
    with Store(paths.db_path(), read_only=True) as store:
        run_id = store.list_runs()["id"][0]
    monkeypatch.delenv("PTFT_FAKE_FAIL_AT")
    assert main(["runs", "resume", run_id, "--cpu-slots", "1"]) == 0  # from the step-10 checkpoint
    assert "completed" in capsys.readouterr().out
    with Store(paths.db_path(), read_only=True) as store:
        row = store.get_run(run_id)
        assert (row["status"], row["attempt"], row["resume_step"]) == ("completed", 2, 10)
    assert main(["runs", "resume", run_id]) == 2  # completed: nothing to resume


@pytest.mark.slow
def test_cancel_and_list_from_another_process_while_an_engine_owns_the_store(lab, tmp_path, monkeypatch):
    monkeypatch.setenv("PTFT_FAKE_STEP_S", "0.05")
    with Engine(cpu_slots=1, poll_interval=0.2) as engine:
        running = engine.submit(json.loads(config_file(tmp_path, max_steps=400).read_text()))
        queued = engine.submit(json.loads(config_file(tmp_path, max_steps=400).read_text()))
        engine.start()
        journal = engine.run_dir(running) / "events.jsonl"
        deadline = time.monotonic() + 60
        while not any(e["type"] == "progress" and e["step"] >= 5 for e in read_events(journal)[0]):
            assert time.monotonic() < deadline
            time.sleep(0.1)

        listing = cli("runs", "list")
        assert listing.returncode == 2 and f"process {os.getpid()}" in listing.stderr

        result = cli("runs", "cancel", queued)  # queued: only the owning engine can record it
        assert result.returncode == 0 and "cancel requested" in result.stdout
        assert engine.wait([queued], timeout=5) == {queued: "cancelled"}
        result = cli("runs", "cancel", running)
        assert result.returncode == 0 and "sent SIGTERM" in result.stdout, result.stdout + result.stderr
        assert engine.wait([running], timeout=10) == {running: "cancelled"}
        assert engine.store.get_run(queued)["started_at"] is None  # never launched


@pytest.mark.slow
def test_cancel_and_delete_without_a_running_engine(lab, tmp_path, capsys):
    with Engine(cpu_slots=1) as engine:
        run_id = engine.submit(json.loads(config_file(tmp_path).read_text()))
    assert main(["runs", "cancel", run_id]) == 0
    assert f"{run_id}: cancelled" in capsys.readouterr().out
    assert main(["runs", "delete", run_id]) == 0
    assert not (lab / "runs" / run_id).exists()
    assert main(["runs", "delete", run_id]) == 2
