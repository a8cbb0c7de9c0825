"""Hostile requests against a real service (`python -m ptft_core serve` on loopback): each refused with the right
status and a one-line reason, none answered 500, nothing queued, and a service that stays within 50 MB of its
idle memory after a 200 MB body sent without a token."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from urllib.parse import urlparse

import httpx
import psutil
import pytest

from ptft_core import paths
from ptft_core.config import MAX_NOTES
from ptft_core.lab import MAX_GROUP, MAX_RUN_IDS, MAX_UPLOAD_BYTES
from ptft_core.service.door import MAX_BODY
from tests.conftest import wait_for

MB = 2**20


def raw_request(url: str, head: str, body_bytes: int, chunk: int = MB) -> tuple[str, int]:
    """Send `head` announcing a body, read the answer before sending any of it, then try to send `body_bytes`:
    (the status line and headers, the bytes the service let through before it closed the connection)."""
    where = urlparse(url)
    with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
        sock.sendall(head.encode())
        answer = ""
        while "\r\n\r\n" not in answer or len(answer.partition("\r\n\r\n")[2]) < _length(answer):
            answer += sock.recv(65536).decode("latin-1")
        sent = 0
        try:
            while sent < body_bytes:
                sock.sendall(b"x" * min(chunk, body_bytes - sent))
                sent += chunk
        except OSError:  # reset or broken pipe: the service closed the connection, as it should
            pass
    return answer, sent


def _length(answer: str) -> int:
    head = answer.partition("\r\n\r\n")[0].lower()
    return next((int(line.split(":")[1]) for line in head.splitlines() if line.startswith("content-length:")), 0)


def rss(proc) -> int:
    return psutil.Process(proc.pid).memory_info().rss


def test_a_huge_body_without_a_token_is_refused_before_it_is_read(service):
    url, tokens, proc = service
    host = urlparse(url).netloc
    httpx.get(f"{url}/api/runs", headers={"Authorization": f"Bearer {tokens.viewer}"})  # warm: a real idle
    idle = rss(proc)
    answer, sent = raw_request(url, f"POST /api/runs HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                                    f"Content-Length: {200 * MB}\r\n\r\n", 200 * MB)
    assert answer.startswith("HTTP/1.1 401") and "connection: close" in answer.lower(), answer[:200]
    assert sent < 200 * MB  # the connection closed under the sender
    viewer = f"Authorization: Bearer {tokens.viewer}\r\n"
    answer, _ = raw_request(url, f"POST /api/runs HTTP/1.1\r\nHost: {host}\r\n{viewer}Content-Length: {50 * MB}"
                                 "\r\n\r\n", 50 * MB)
    assert answer.startswith("HTTP/1.1 403"), answer[:200]
    editor = f"Authorization: Bearer {tokens.editor}\r\n"
    answer, _ = raw_request(url, f"POST /api/runs HTTP/1.1\r\nHost: {host}\r\n{editor}Content-Length: {50 * MB}"
                                 "\r\n\r\n", 50 * MB)
    assert answer.startswith("HTTP/1.1 413") and f"at most {MAX_BODY:,}" in answer, answer[:300]
    upload = f"PUT /api/datasets/big?filename=big.csv HTTP/1.1\r\nHost: {host}\r\n"
    answer, _ = raw_request(url, f"{upload}{editor}Content-Length: {MAX_UPLOAD_BYTES + 1}\r\n\r\n", 50 * MB)
    assert answer.startswith("HTTP/1.1 413") and f"at most {MAX_UPLOAD_BYTES:,}" in answer, answer[:300]
    answer, _ = raw_request(url, f"{upload}{viewer}Content-Length: {MB}\r\n\r\n", MB)
    assert answer.startswith("HTTP/1.1 403"), answer[:200]
    assert rss(proc) - idle < 50 * MB, (idle, rss(proc))

    # A body without a length (chunked), from an editor: cut off once it passes the limit.
    def chunks():
        for _ in range(8):
            yield b"x" * MB
    reply = httpx.post(f"{url}/api/runs", content=chunks(), headers={"Authorization": f"Bearer {tokens.editor}"})
    assert reply.status_code == 413 and "more than" in reply.json()["detail"]
    assert rss(proc) - idle < 50 * MB


def test_a_malformed_body_without_a_token_is_401_not_parsed(service):
    url, _, _ = service
    assert httpx.post(f"{url}/api/runs", content=b"{not json").status_code == 401
    assert httpx.get(f"{url}/openapi.json").status_code == 401  # the API's map is behind the token too
    assert httpx.get(f"{url}/api/nowhere").status_code == 401


def test_tokens_in_the_url_only_read_and_viewers_do_not_learn_the_home(service):
    url, tokens, _ = service
    assert httpx.get(f"{url}/api/runs", params={"token": tokens.viewer}).status_code == 200  # a demo link
    assert httpx.post(f"{url}/api/runs", params={"token": tokens.editor},
                      json={"config": {"kind": "pretrain"}}).status_code == 401
    viewer = {"Authorization": f"Bearer {tokens.viewer}"}
    assert httpx.get(f"{url}/api/whoami", headers=viewer).json() == {"role": "viewer"}
    editor = {"Authorization": f"Bearer {tokens.editor}"}
    assert httpx.get(f"{url}/api/whoami", headers=editor).json()["home"] == str(paths.home())
    assert httpx.get(f"{url}/openapi.json", headers=viewer).status_code == 200


ABSURD = [
    ({"kind": "finetune", "epochs": 10**9}, "epochs: must be <= 1000"),
    ({"kind": "finetune", "batch_size": 10**7}, "batch_size: must be <= 1024"),
    ({"kind": "finetune", "eval_count": 10**12}, "eval_count: must be <= 1000"),
    ({"kind": "finetune", "probe_size": 10**9}, "probe_size: must be <= 10000"),
    ({"kind": "pretrain", "max_steps": 10**15, "eval_every": 1}, "max_steps: must be <= 1e+06"),
    ({"kind": "pretrain", "max_steps": 100_000, "eval_every": 1}, "eval_every: 100,000 evaluations"),
    ({"kind": "pretrain", "max_steps": 10**6, "checkpoint_steps": list(range(1, 50_001))},
     "checkpoint_steps: must have at most 100 items"),
    ({"kind": "finetune", "dataset": "../../../../etc"}, "dataset: no dataset '../../../../etc' in this lab"),
    ({"kind": "finetune", "dataset": "/etc"}, "dataset: no dataset '/etc'"),
    ({"kind": "finetune", "dataset": "hf:../../x"}, "dataset: 'hf:../../x' is not hf:<hub id>"),
    ({"kind": "finetune", "then_dataset": "nope"}, "then_dataset: no dataset 'nope'"),
    ({"kind": "pretrain", "corpus": ["wiki", "../x"]}, "corpus: no dataset '../x'"),
    ({"kind": "finetune", "base": "/etc"}, "base: '/etc' holds no model"),
    ({"kind": "finetune", "base": "../../../../etc/passwd"}, "base: '../../../../etc/passwd' is no folder"),
    ({"kind": "finetune", "base": "org/../../x"}, "base: 'org/../../x' is none of"),
    ({"kind": "finetune", "base": "run:../../x"}, "base: 'run:../../x' is not run:<run id>"),
    ({"kind": "finetune", "base": "run:ft-nope"}, "base: run:ft-nope: there is no run 'ft-nope'"),
    ({"kind": "evaluate", "model": "run:ft-1", "datasets": ["movies"] * 21}, "datasets: must have at most 20"),
    ({"kind": "finetune", "name": "n" * 5000}, "name: must have at most 200 characters"),
    ({"kind": "finetune", "tags": [f"t{i}" for i in range(10_000)]}, "tags: must have at most 50 items"),
]


def test_absurd_configs_and_names_are_refused_at_submit(service):
    """Every case against one service (a start costs more than all the requests); every miss is reported."""
    url, tokens, _ = service
    editor = {"Authorization": f"Bearer {tokens.editor}"}
    misses = []
    for config, reason in ABSURD:
        reply = httpx.post(f"{url}/api/runs", json={"config": config}, headers=editor)
        detail = reply.json().get("detail", "") if reply.status_code == 422 else reply.text
        if reply.status_code != 422 or not detail.startswith(reason) or "\n" in detail or len(detail) >= 500:
            misses.append((str(config)[:80], reply.status_code, detail[:200]))
    for text in ("Infinity", "-Infinity", "NaN"):
        body = '{"config": {"kind": "finetune", "optim": {"lr": ' + text + '}}}'
        reply = httpx.post(f"{url}/api/runs", content=body, headers={**editor, "Content-Type": "application/json"})
        if reply.status_code != 422 or "optim.lr: must be a finite number" not in reply.json()["detail"]:
            misses.append((text, reply.status_code, reply.text[:200]))
    assert misses == []
    assert httpx.get(f"{url}/api/queue", headers=editor).json() == []  # none of them was queued


def test_labels_ids_and_counts_out_of_bounds_are_refused_and_nothing_is_left_behind(service, fake_lab):
    url, tokens, proc = service
    editor = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens.editor}"}, timeout=60)
    viewer = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens.viewer}"}, timeout=60)
    ok = {"kind": "pretrain", "max_steps": 3}

    def refused(reply, status, reason):
        assert reply.status_code == status, (reply.status_code, reply.text[:300])
        detail = reply.json()["detail"]
        assert reason in detail and "\n" not in detail and len(detail) < 600, detail[:300]

    refused(editor.post("/api/runs", json={"config": ok, "priority": 10**30}), 422, "priority")
    refused(editor.post("/api/runs", json={"config": ok, "priority": 5000}), 422, "priority: must be a whole number")
    refused(editor.post("/api/runs", json={"config": ok, "study": "../../x<script>"}), 422, "is not a study id")
    refused(editor.post("/api/runs", json={"config": ok, "study": "st-nope"}), 422, "no study or sweep 'st-nope'")
    refused(editor.post("/api/runs", json={"config": ok, "parent": "../etc"}), 404, "no run '../etc'")
    refused(editor.post("/api/runs", json={"config": ok, "name": "n" * 100_000}), 422, "name: must have at most 200")
    refused(editor.post("/api/runs", json={"config": ok, "tags": ["t"] * 10_000}), 422, "tags: at most 50")
    refused(editor.post("/api/run-groups", json={"configs": [ok] * (MAX_GROUP + 1)}), 422, "at most 50 in one group")
    refused(editor.post("/api/runs", json={"config": "x" * 1_000_000}), 422, "... (1,000,002 characters)")
    refused(editor.post("/api/runs", json={"config": {"kind": "finetune", "dataset": "x" * 100_000}}), 422,
            "dataset: must have at most 200 characters")
    refused(editor.post("/api/studies", json={"template": "nope"}), 422, "nope")
    refused(editor.post("/api/studies", json={"template": "forgetting", "name": "n" * 1000}), 422, "name")
    space = {"optim.lr": {"low": 1e-5, "high": 1e-3}}
    refused(editor.post("/api/sweeps", json={"spec": {"base": ok, "space": space, "n_trials": 10**9}}), 422,
            "n_trials: must be <= 1000")
    refused(editor.post("/api/sweeps", json={"spec": {"base": ok, "space": {f"f{i}": [1, 2] for i in range(5000)}}}),
            422, "space: must have at most 20 items")
    refused(editor.post("/api/sweeps", json={"spec": {"base": {**ok, "max_steps": 10**9}, "space": space}}), 422,
            "max_steps: must be <= 1e+06")
    assert editor.post("/api/runs", content=b"x" * (3 * MB)).status_code == 413  # a note, a name: past the door

    # Reads, from a viewer: counts and sizes bounded, ids deduplicated, looked up before anything is read.
    run_id = editor.post("/api/runs", json={"config": ok, "tags": ["real"]}).json()["id"]
    diff = viewer.post("/api/query/config-diff", json={"run_ids": [run_id] * 3000})
    assert diff.status_code == 200  # 3,000 copies of one id: one run
    many = [f"pt-{i}" for i in range(MAX_RUN_IDS + 1)]
    refused(viewer.post("/api/query/metric-names", json={"run_ids": many}), 422, "run_ids: at most 1,000 runs")
    refused(viewer.post("/api/query/series", json={"run_ids": [run_id], "names": ["x"] * 100_000}), 422,
            "names: at most 200")
    refused(viewer.post("/api/query/series", json={"run_ids": [run_id], "max_points": 10**30}), 422, "max_points")
    refused(viewer.post("/api/query/series", json={"run_ids": [run_id], "max_points": 10**9}), 422, "max_points")
    refused(viewer.get(f"/api/runs/{run_id}/log", params={"max_bytes": 10**30}), 422, "max_bytes")
    refused(viewer.get(f"/api/runs/{run_id}/log", params={"max_bytes": 10**9}), 422, "max_bytes")
    refused(viewer.get("/api/runs/..%2F..%2Fptft.duckdb"), 404, "Not Found")  # no route has a '/' in an id
    refused(viewer.get("/api/runs/x..y/log"), 404, "no run 'x..y'")
    refused(viewer.get("/api/studies/%3Cscript%3E"), 404, "no study '<script>'")
    refused(viewer.get("/api/sweeps/" + "s" * 5000), 404, "no sweep 'sss")
    refused(editor.put(f"/api/runs/{run_id}/notes", json={"notes": "n" * (MAX_NOTES + 1)}), 422,
            "notes: must have at most 20,000")
    refused(editor.put(f"/api/runs/{run_id}/tags", json={"tags": ["t"] * 51}), 422, "tags: at most 50")

    # Nothing queued but the one real run, no run folder without its row, no 500 in the service's log.
    runs = json.loads(json.dumps(list(httpx.get(f"{url}/api/queue", headers=viewer.headers).json())))
    assert [r["id"] for r in runs] in ([run_id], [])  # it may have started already
    assert sorted(p.name for p in (fake_lab / "runs").iterdir()) == [run_id]
    log = (fake_lab.parent / "service-output.log").read_text()
    assert "Traceback" not in log and " 500 " not in log, log[-3000:]
    editor.post(f"/api/runs/{run_id}/cancel")


def test_a_new_home_is_private_and_an_open_one_is_named(tmp_path, monkeypatch):
    home = tmp_path / "fresh" / "lab"
    monkeypatch.setenv("PTFT_HOME", str(home))
    assert paths.home() == home and stat.S_IMODE(home.stat().st_mode) == 0o700
    assert paths.exposure_warning(home) is None
    home.chmod(0o755)
    assert "readable by other users" in paths.exposure_warning(home) and "chmod 700" in paths.exposure_warning(home)


@pytest.mark.slow  # a CLI process, its own service and a worker, killed and waited for: 5 s
def test_a_service_started_by_a_cli_command_ends_with_it_even_on_kill_9(fake_lab, tmp_path):
    config = tmp_path / "long.yaml"
    config.write_text("kind: pretrain\nmax_steps: 200\n")
    env = {**os.environ, "PTFT_FAKE_STEP_S": "0.05"}
    cli = subprocess.Popen([sys.executable, "-m", "ptft_core", "run", str(config)], cwd=paths.REPO_ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        info = wait_for(lambda: (fake_lab / "service.json").exists() and json.loads(
            (fake_lab / "service.json").read_text()), 120, "the command's own service")
        service = psutil.Process(info["pid"])
        assert str(cli.pid) in service.cmdline()  # --owner-pid
        cli.kill()
        cli.wait(timeout=30)
        service.wait(timeout=60)  # ends on its own: its owner is gone
        assert not (fake_lab / "service.json").exists()
    finally:
        if cli.poll() is None:
            cli.kill()


def test_a_service_whose_home_is_deleted_stops(service, fake_lab):
    import shutil

    _, _, proc = service
    shutil.rmtree(fake_lab)
    proc.wait(timeout=60)


def test_more_cpu_ranks_than_cores_are_refused(service):
    from ptft_core.engine.devices import cpu_cores

    if cpu_cores() >= 8:
        pytest.skip("ranks are at most 8: this machine has a core for each")
    url, tokens, _ = service
    reply = httpx.post(f"{url}/api/runs", json={"config": {"kind": "pretrain", "ranks": cpu_cores() + 1,
                                                           "device": "cpu"}},
                       headers={"Authorization": f"Bearer {tokens.editor}"})
    assert reply.status_code == 422 and reply.json()["detail"].startswith(f"ranks: {cpu_cores() + 1} processes")
