"""`python -m ptft_core serve` as a real process on loopback, with the stand-in trainer: tokens (401 / 403),
run ids (404, never a path), a run submitted, trained and read back through the API, its metric series as an
Arrow IPC stream, and a clean stop (SIGTERM) that takes the announcement down and leaves the store whole."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from ptft_core import paths
from ptft_core.service.tokens import TOKENS_NAME, Tokens, load_or_create
from ptft_core.store import Store


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def service(fake_lab):
    """A running service on a free loopback port: (base URL, tokens, process)."""
    proc = subprocess.Popen([sys.executable, "-m", "ptft_core", "serve", "--port", "0", "--cpu-slots", "1"],
                            cwd=paths.REPO_ROOT, env=os.environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    announced = fake_lab / "service.json"
    try:
        info = wait_for(lambda: proc.poll() is None and announced.exists() and json.loads(announced.read_text()),
                        60, "service.json")
        assert info["pid"] == proc.pid
        yield info["url"], load_or_create(fake_lab), proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def test_tokens_are_private_stable_and_compared_by_role(tmp_path):
    tokens = load_or_create(tmp_path)
    mode = stat.S_IMODE((tmp_path / TOKENS_NAME).stat().st_mode)
    assert mode == 0o600 and load_or_create(tmp_path) == tokens and tokens.editor != tokens.viewer
    assert (tokens.role_of(tokens.editor), tokens.role_of(tokens.viewer)) == ("editor", "viewer")
    assert tokens.role_of(None) is None and tokens.role_of("") is None and tokens.role_of(tokens.editor[:-1]) is None
    assert Tokens("a", "b").role_of("b") == "viewer"


def test_the_api_refuses_without_a_token_and_viewers_cannot_write(service):
    url, tokens, _ = service
    viewer = {"Authorization": f"Bearer {tokens.viewer}"}
    assert httpx.get(f"{url}/api/runs").status_code == 401
    assert httpx.get(f"{url}/api/runs", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(f"{url}/api/whoami", headers=viewer).json() == {"role": "viewer"}
    assert httpx.get(f"{url}/api/runs", params={"token": tokens.viewer}).json() == []  # a demo link's form
    body = {"config": {"kind": "pretrain", "max_steps": 5}}
    assert httpx.post(f"{url}/api/runs", json=body, headers=viewer).status_code == 403
    assert httpx.post(f"{url}/api/runs/pt-x/cancel", headers=viewer).status_code == 403
    for bad in ("pt-nope", "..%2F..%2Fptft.duckdb", "%2E%2E"):
        assert httpx.get(f"{url}/api/runs/{bad}", headers=viewer).status_code == 404, bad


def test_a_run_submitted_through_the_api_trains_and_reads_back(service, fake_lab):
    url, tokens, proc = service
    editor = {"Authorization": f"Bearer {tokens.editor}"}
    bad = httpx.post(f"{url}/api/runs", json={"config": {"kind": "pretrain", "optim": {"lrr": 1e-4}}},
                     headers=editor)
    assert bad.status_code == 422 and bad.json()["detail"] == "optim.lrr: unknown field; did you mean 'lr'?"
    done = httpx.post(f"{url}/api/runs", json={"config": {"kind": "pretrain", "name": "api", "max_steps": 12,
                                                          "eval_every": 4, "optim": {"lr": "1e-3"}},
                                               "tags": ["api"]}, headers=editor)
    assert done.status_code == 201, done.text
    run_id = done.json()["id"]
    row = wait_for(lambda: (r := httpx.get(f"{url}/api/runs/{run_id}", headers=editor).json())["status"]
                   in ("completed", "failed") and r, 120, "the run to finish")
    assert row["status"] == "completed" and row["step"] == 12 and row["tags"] == ["api"]
    assert [r["id"] for r in httpx.get(f"{url}/api/runs", params={"tag": "api"}, headers=editor).json()] == [run_id]
    reply = httpx.get(f"{url}/api/runs/{run_id}/metrics", params={"split": "train", "name": "loss"}, headers=editor)
    assert reply.headers["content-type"] == "application/vnd.apache.arrow.stream"
    series = pa.ipc.open_stream(reply.content).read_all().to_pandas()
    assert list(series["x"]) == list(range(1, 13)) and set(series["name"]) == {"loss"}
    assert httpx.get(f"{url}/api/runs/{run_id}/metrics", params={"x": "bogus"}, headers=editor).status_code == 422

    proc.send_signal(signal.SIGTERM)  # a clean stop: the announcement goes, the store is whole and unlocked
    assert proc.wait(timeout=30) == 0, proc.stdout.read()
    assert not (fake_lab / "service.json").exists()
    with Store(Path(fake_lab) / "ptft.duckdb", read_only=True) as store:
        assert store.get_run(run_id)["status"] == "completed" and len(store.last_metrics(run_id)) > 0
