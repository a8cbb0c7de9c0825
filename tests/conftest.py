"""Shared fixtures: every test gets its own PTFT_HOME, with the prepared built-in data linked in read-only.

`make test` runs `python -m ptft_core data prepare` before pytest, so the built-ins are in `./data` (or in the
PTFT_DATA_SOURCE folder). Tests never write there: each one writes runs and databases under its own tmp home.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ptft_core import paths
from ptft_core.config import BUILTIN_CHECKPOINT

# Warm workers as for a user in the slow tier: an engine's fork server imports once (niced) and every run after that
# starts without imports (the tiny studies: 139 s -> 52 s). The quick tier's engines and services mostly launch no
# real run, so there a fork server would import torch for nothing (20 s of CPU over `make test-fast`): its workers
# start cold. PTFT_WARM_WORKERS set by hand wins everywhere.
WARM_WORKERS_SET_BY_HAND = "PTFT_WARM_WORKERS" in os.environ


@pytest.fixture(autouse=True)
def _cold_workers_in_the_quick_tier(request, monkeypatch):
    quick = request.node.get_closest_marker("slow") is None and request.node.get_closest_marker("e2e") is None
    if quick and not WARM_WORKERS_SET_BY_HAND:
        monkeypatch.setenv("PTFT_WARM_WORKERS", "0")


@pytest.fixture(scope="session", autouse=True)
def _one_fork_server_per_session(request, tmp_path_factory):
    """One fork server for every engine and service of this session (of this xdist worker, on its cores): each
    engine would otherwise start its own and pay the imports again (about 6 s of a core, 46 engines over `make
    test`). Engines connect to it through `PTFT_FORK_SERVER`, as a lab's would; the fork server's own tests
    (test_warm_worker.py) start theirs. Only where the session has a test in the warm tiers: `make test-fast`
    starts its workers cold and needs no imports."""
    warm = any(item.get_closest_marker("slow") or item.get_closest_marker("e2e") for item in request.session.items)
    if not warm or "PTFT_FORK_SERVER" in os.environ or WARM_WORKERS_SET_BY_HAND:
        yield
        return
    from ptft_core.engine.launcher import shared_fork_server_command  # not at import: the quick tier needs none

    folder = Path(tempfile.mkdtemp(prefix="ptft-fork-"))  # short: a socket's path has at most 107 bytes
    socket_path = folder / "server.sock"
    log = tmp_path_factory.getbasetemp() / f"fork-server-{os.getpid()}.log"
    with open(log, "ab") as out:
        server = subprocess.Popen(shared_fork_server_command(socket_path), stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=out, start_new_session=True)
    wait_for(lambda: socket_path.exists() or server.poll() is not None, 60, "the fork server's socket")
    os.environ["PTFT_FORK_SERVER"] = str(socket_path)
    try:
        yield
    finally:
        del os.environ["PTFT_FORK_SERVER"]
        server.kill()
        server.wait()
        socket_path.unlink(missing_ok=True)
        folder.rmdir()


PREPARED_HOME = Path(os.environ.get("PTFT_DATA_SOURCE") or paths.REPO_ROOT / "data")


def pytest_configure(config):
    """Under pytest-xdist (`make test`: two workers), each worker and everything it starts (services, workers,
    browsers) keeps to its own share of the cores: the engine sizes its runs' threads by the cores it may use
    (`sched_getaffinity`) and torch its own by the same mask, so the two workers' runs no longer spin against each
    other on the same cores. Set here, before any test module imports torch. The DDP tests lend their module every
    core again (two ranks need two)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker and count > 1 and hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) >= count:
            os.sched_setaffinity(0, cores[int(worker.removeprefix("gw")) % count::count])


@pytest.fixture(scope="module")
def every_core():
    """The whole machine's cores for this module's processes (a pytest worker keeps to its share otherwise)."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    share = os.sched_getaffinity(0)
    os.sched_setaffinity(0, range(os.cpu_count() or 1))
    try:
        yield
    finally:
        os.sched_setaffinity(0, share)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll `predicate` until it returns something true (returned), or fail after `timeout` s naming `what`: the
    tests wait on events (a journal line, a status), never on a fixed sleep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def prepared_home() -> Path:
    if not (PREPARED_HOME / "datasets").is_dir() or not (PREPARED_HOME / "models").is_dir():
        pytest.fail(f"built-in data not prepared in {PREPARED_HOME}: run `make data` (make test does it)")
    return PREPARED_HOME


def _builtin(sub: str, entry: Path) -> bool:
    """A prepared entry that `make data` made: a built-in dataset (its meta.json says so), the built-in checkpoint,
    a pinned download."""
    if sub == "datasets":
        meta = entry / "meta.json"
        return meta.is_file() and bool(json.loads(meta.read_text()).get("builtin"))
    return sub == "downloads" or entry.name == BUILTIN_CHECKPOINT


def linked_home(lab: Path) -> Path:
    """A new lab home at `lab` with the prepared built-in datasets and checkpoint linked in."""
    source = prepared_home()
    lab.mkdir(parents=True)
    # Link each built-in entry, not the folders: a test may add its own datasets beside the built-ins, and a
    # dataset the user registered in the prepared home (PTFT_HOME is the user's own lab) never reaches a test.
    for sub in ("datasets", "models", "downloads"):
        (lab / sub).mkdir()
        for entry in (source / sub).glob("*") if (source / sub).is_dir() else ():
            if _builtin(sub, entry):
                (lab / sub / entry.name).symlink_to(entry)
    return lab


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh lab home with the prepared built-in datasets and checkpoint linked in."""
    lab = linked_home(tmp_path / "home")
    monkeypatch.setenv("PTFT_HOME", str(lab))
    return lab


@pytest.fixture
def empty_home(tmp_path, monkeypatch) -> Path:
    """A lab home with nothing in it (for data-preparation and error-path tests)."""
    lab = tmp_path / "empty-home"
    lab.mkdir()
    monkeypatch.setenv("PTFT_HOME", str(lab))
    return lab


@pytest.fixture
def fake_lab(empty_home, monkeypatch) -> Path:
    """An empty lab whose engine launches the stand-in trainer (tests/fake_trainer.py, 50 ms a step) on CPU only."""
    monkeypatch.setenv("PTFT_TRAINER", "tests.fake_trainer:run")
    monkeypatch.setenv("PTFT_GPUS", "none")
    monkeypatch.setenv("PTFT_FAKE_STEP_S", "0.05")
    return empty_home


@pytest.fixture
def service(fake_lab):
    """A running service on a free loopback port: (base URL, tokens, process)."""
    import signal
    import subprocess
    import sys

    from ptft_core.service.tokens import load_or_create

    log = (fake_lab.parent / "service-output.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "ptft_core", "serve", "--port", "0", "--cpu-slots", "1"],
                            cwd=paths.REPO_ROOT, env=os.environ, stdout=log, stderr=subprocess.STDOUT, text=True)
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
        log.close()


def pytest_collection_modifyitems(config, items):
    import importlib.util

    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    skip_gpu = pytest.mark.skip(reason="needs CUDA; none on this machine")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


def stop_lab(home: Path) -> None:
    """Cancel what a test left queued or running in the lab service of `home`, then stop the service."""
    from ptft_core.client import ServiceUnavailable, connect, find_service, stop_service

    if find_service(home) is None:
        return
    try:
        with connect(home) as lab:
            active = list(lab.list_runs(status=["queued", "running"])["id"])
            for run_id in active:
                lab.cancel(run_id)
            if active:
                lab.wait(active, timeout=60)
    except ServiceUnavailable:
        pass
    stop_service(home)
