"""`python -m ptft_core serve` as a real process on loopback, with the stand-in trainer: tokens (401 / 403),
run ids (404, never a path), a run submitted, trained and read back through the API, its metric series as an
Arrow IPC stream, and a clean stop (SIGTERM) that takes the announcement down and leaves the store whole."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import psutil
import pyarrow as pa
import pytest

from ptft_core import paths
from ptft_core.client import ServiceUnavailable, connect, find_service, stop_service
from ptft_core.config import ConfigError
from ptft_core.journal import read_events
from ptft_core.service.tokens import TOKENS_NAME, Tokens, load_or_create
from ptft_core.store import Store
from tests.conftest import stop_lab, wait_for


def test_tokens_are_private_stable_and_compared_by_role(tmp_path):
    tokens = load_or_create(tmp_path)
    mode = stat.S_IMODE((tmp_path / TOKENS_NAME).stat().st_mode)
    assert mode == 0o600 and load_or_create(tmp_path) == tokens and tokens.editor != tokens.viewer
    assert (tokens.role_of(tokens.editor), tokens.role_of(tokens.viewer)) == ("editor", "viewer")
    assert tokens.role_of(None) is None and tokens.role_of("") is None and tokens.role_of(tokens.editor[:-1]) is None
    assert Tokens("a", "b").role_of("b") == "viewer"


WRITES = [("POST", "/api/runs", {"config": {"kind": "pretrain", "max_steps": 5}}),
          ("POST", "/api/run-groups", {"configs": []}), ("POST", "/api/runs/pt-x/cancel", None),
          ("POST", "/api/runs/pt-x/resume", None), ("POST", "/api/runs/pt-x/retry", None),
          ("DELETE", "/api/runs/pt-x", None), ("PUT", "/api/runs/pt-x/tags", {"tags": []}),
          ("PUT", "/api/runs/pt-x/notes", {"notes": ""}), ("POST", "/api/studies", {"template": "forgetting"}),
          ("POST", "/api/studies/st-x/cancel", None), ("POST", "/api/sweeps", {"spec": {}}),
          ("POST", "/api/sweeps/sw-x/cancel", None)]


def test_the_api_refuses_without_a_token_and_viewers_cannot_write(service):
    url, tokens, _ = service
    viewer = {"Authorization": f"Bearer {tokens.viewer}"}
    assert httpx.get(f"{url}/api/runs").status_code == 401
    assert httpx.get(f"{url}/api/runs", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(f"{url}/api/whoami", headers=viewer).json()["role"] == "viewer"
    runs = httpx.get(f"{url}/api/runs", params={"token": tokens.viewer})  # a demo link's form
    assert runs.status_code == 200 and pa.ipc.open_stream(runs.content).read_all().num_rows == 0
    for method, path, body in WRITES:  # every write, refused before the id is even looked up
        assert httpx.request(method, f"{url}{path}", json=body, headers=viewer).status_code == 403, path
        assert httpx.request(method, f"{url}{path}", json=body).status_code == 401, path
    assert httpx.post(f"{url}/api/query/series", json={"run_ids": []}, headers=viewer).status_code == 200
    assert httpx.get(f"{url}/api/sweeps", headers=viewer).status_code == 200  # a viewer reads sweeps
    assert httpx.get(f"{url}/api/sweeps/sw-nope/trials", headers=viewer).status_code == 404
    for bad in ("pt-nope", "..%2F..%2Fptft.duckdb", "%2E%2E"):
        assert httpx.get(f"{url}/api/runs/{bad}", headers=viewer).status_code == 404, bad
        assert httpx.get(f"{url}/api/runs/{bad}/log", headers=viewer).status_code == 404, bad
    assert httpx.post(f"{url}/api/query/series", json={"run_ids": ["../x"]}, headers=viewer).status_code == 404


def test_a_run_submitted_through_the_client_trains_and_reads_back(service, fake_lab, tmp_path):
    url, tokens, proc = service
    lab = connect(fake_lab)
    assert lab.url == url and lab.role == "editor"
    with pytest.raises(KeyError, match="no run 'pt-nope'"):  # a thing that is not there: named
        lab.get_run("pt-nope")
    with pytest.raises(ServiceUnavailable, match=rf"has no GET /api/nowhere: it runs older code .*\(`kill {proc.pid}`"):
        lab._call("GET", "/api/nowhere")  # a route this service does not have: a client newer than the service
    with pytest.raises(ConfigError, match=r"optim.lrr: unknown field; did you mean 'lr'\?"):
        lab.submit({"kind": "pretrain", "optim": {"lrr": 1e-4}})
    run_id = lab.submit({"kind": "pretrain", "name": "api", "max_steps": 12, "eval_every": 4,
                         "optim": {"lr": "1e-3"}}, tags=["api"])
    assert lab.wait([run_id], timeout=120) == {run_id: "completed"}
    row = lab.get_run(run_id)
    assert row["step"] == 12 and row["tags"] == ["api"] and row["finished_at"] > row["started_at"]
    assert list(lab.list_runs(tag="api")["id"]) == [run_id]
    series = lab.metric_series([run_id], names=["loss"], splits=["train"])
    assert list(series["x"]) == list(range(1, 13)) and set(series["name"]) == {"loss"}
    with pytest.raises(ConfigError, match="x: must be one of"):
        lab.metric_series([run_id], x="bogus")
    with pytest.raises(ValueError, match="only interrupted, cancelled, failed, pruned runs can resume"):
        lab.resume(run_id)  # 409: the engine's own reason
    with pytest.raises(KeyError):
        lab.get_run("pt-nope")
    lab.set_tags(run_id, ["api", "kept"])
    assert lab.get_run(run_id)["tags"] == ["api", "kept"]
    exported = lab.export_metrics([run_id], tmp_path / "api.csv")
    assert len(pd.read_csv(exported)) == len(lab.metric_series([run_id], max_points=10_000))
    with pytest.raises(PermissionError):
        connect(fake_lab, role="viewer").cancel(run_id)

    proc.send_signal(signal.SIGTERM)  # a clean stop: the announcement goes, the store is whole and unlocked
    assert proc.wait(timeout=30) == 0, proc.stdout.read()
    assert not (fake_lab / "service.json").exists()
    with Store(Path(fake_lab) / "ptft.duckdb", read_only=True) as store:
        assert store.get_run(run_id)["status"] == "completed" and len(store.last_metrics(run_id)) > 0
    with pytest.raises(ServiceUnavailable, match="no lab service runs"):
        lab.get_run(run_id)


def test_a_dependent_run_waits_in_the_service_and_fails_with_the_reason(service, fake_lab):
    """A run that starts from a checkpoint waits for it, and fails with the reason when its parent ends
    without it; a reference to a run that does not exist is refused at submit (422)."""
    url, tokens, proc = service
    lab = connect(fake_lab)
    parent = lab.submit({"kind": "pretrain", "name": "long", "max_steps": 2000, "eval_every": 5})
    child = lab.submit({"kind": "finetune", "base": f"run:{parent}"})
    with pytest.raises(ConfigError, match="base: run:pt-nope: there is no run 'pt-nope'"):
        lab.submit({"kind": "finetune", "base": "run:pt-nope"})
    wait_for(lambda: lab.get_run(parent)["status"] == "running", 60, "the parent to start")
    assert {q["id"]: q["waits_for"] for q in lab.queue()} == {child: f"checkpoint final of {parent}"}
    assert lab.get_run(child)["parent_run"] == parent
    lab.cancel(parent)  # it saves a step checkpoint, never `final`
    assert lab.wait([parent, child], timeout=60) == {parent: "cancelled", child: "failed"}
    assert f"run {parent} cancelled without checkpoint 'final'" in lab.get_run(child)["error"]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ptft_core", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=paths.REPO_ROOT, env=os.environ)


@pytest.mark.slow  # seven CLI processes and a detached service, one after another: 12 s
def test_the_cli_is_a_client_of_the_running_service(fake_lab, tmp_path):
    """With a service running (as `make run` leaves it), the CLI reads and writes through it: the store is the
    service's, and nothing fails on its lock."""
    started = cli("serve", "--detach", "--cpu-slots", "1")
    assert started.returncode == 0 and "started the lab service" in started.stdout, started.stderr
    try:
        assert "the lab service runs on" in cli("serve", "--detach").stdout  # one per home
        config = tmp_path / "c.json"
        config.write_text(json.dumps({"kind": "pretrain", "name": "cli", "max_steps": 10}))
        ran = cli("run", str(config))
        assert ran.returncode == 0 and "completed" in ran.stdout, ran.stdout + ran.stderr
        listing = cli("runs", "list")
        assert listing.returncode == 0 and "cli" in listing.stdout and "10/10" in listing.stdout, listing.stderr
        run_id = listing.stdout.splitlines()[1].split()[0]
        shown = cli("runs", "show", run_id)
        assert shown.returncode == 0 and "status: completed" in shown.stdout
        assert cli("runs", "delete", run_id).returncode == 0
        assert cli("runs", "show", run_id).returncode == 2
    finally:
        stop_service(fake_lab)
    assert find_service(fake_lab) is None


def journal_seqs(run_dir: Path) -> list[int]:
    events, _ = read_events(run_dir / "events.jsonl")
    return [e["seq"] for e in events if e.get("type") == "metric"]


@pytest.mark.slow
def test_studies_finish_across_a_kill_9_of_the_service_with_every_metric_once(home, monkeypatch):
    """Two studies launched from the CLI (one with runs that start from another's checkpoints, one with
    cross-domain evaluations), no browser anywhere; the service is killed with SIGKILL while the first runs
    train, then served again: both studies finish, every metric line of every journal is in the store exactly
    once, and no run is left running."""
    monkeypatch.setenv("PTFT_GPUS", "none")
    monkeypatch.delenv("PTFT_TRAINER", raising=False)
    assert cli("serve", "--detach", "--cpu-slots", "2").returncode == 0
    try:
        ids = []
        for name in ("how_much_pretraining", "domain_shift"):
            launched = cli("study", name, "--tiny-for-tests", "--detach")
            assert launched.returncode == 0, launched.stdout + launched.stderr
            ids.append(re.search(r"study (st-\S+) launched", launched.stdout).group(1))
        lab = connect(home)

        def training_and_none_done():
            runs = lab.list_runs()
            running = runs[runs["status"] == "running"]
            return (not (runs["status"] == "completed").any()
                    and any(journal_seqs(home / "runs" / r) for r in running["id"]))

        wait_for(training_and_none_done, 300, "a study run training, none finished")
        victim = find_service(home)["pid"]
        os.kill(victim, signal.SIGKILL)
        psutil.Process(victim).wait(timeout=30)
        assert find_service(home) is None  # its announcement is stale: the pid is gone
        assert cli("serve", "--detach", "--cpu-slots", "2").returncode == 0

        lab = connect(home)  # the same client would find it too; a fresh one shows discovery works after a crash
        def finished():
            progress = [lab.study_progress(i) for i in ids]
            return progress if all(p.finished for p in progress) else None

        progress = wait_for(finished, 600, "both studies to finish")
        for p in progress:
            assert p.completed == p.total and not p.failed, p.line()
            assert all(v == "done" for v in p.cross_eval.values()), p.cross_eval
        assert progress[1].cross_eval, "domain_shift's cross-domain evaluations ran"
        runs = lab.list_runs()
        assert not runs["status"].isin(["running", "queued"]).any()
        for run_id in runs["id"]:
            stored = list(lab.metric_rows([run_id])["seq"])
            journal = journal_seqs(home / "runs" / run_id)
            assert sorted(stored) == sorted(set(journal)) == sorted(journal), run_id  # every line, exactly once
    finally:
        stop_lab(home)

