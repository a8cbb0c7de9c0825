"""The engine: queue, slots, cancel, resume, crashes of workers and of the engine itself, recovery, the lock.

Most tests run real worker processes with the test trainer (`PTFT_TRAINER=tests.fake_trainer:run`, see
ptft_core/worker.py); `test_real_training_cancel_and_resume` runs the real masked-LM pretraining. The queue
logic and the journal edge cases use a launcher without processes (`StubLauncher`): the engine only talks to
the `Launcher` protocol.
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
from ptft_core.config import ConfigError, FinetuneConfig, PretrainConfig
from ptft_core.engine import Engine, Gpu, Launcher
from ptft_core.engine.devices import DevicePool
from ptft_core.journal import JournalWriter, read_events
from ptft_core.store import Store
from ptft_core.ticker import Ticker
from tests.conftest import wait_for


@pytest.fixture
def lab(fake_lab) -> Path:
    return fake_lab


def fake(steps: int = 20, every: int = 5, seed: int = 0, **kw) -> PretrainConfig:
    return PretrainConfig(max_steps=steps, eval_every=every, seed=seed, **kw)


def journal_metric_seqs(run_dir: Path) -> set[int]:
    events, _ = read_events(run_dir / "events.jsonl")
    return {e["seq"] for e in events if e["type"] == "metric"}


def db_metric_seqs(store: Store, run_id: str) -> list[int]:
    return store.query("SELECT seq FROM metrics WHERE run_id = ? ORDER BY seq", [run_id])["seq"].tolist()


def progress_step(run_dir: Path) -> int:
    events, _ = read_events(run_dir / "events.jsonl")
    return max((e["step"] for e in events if e["type"] == "progress"), default=-1)


def worker_pid(run_dir: Path) -> int | None:
    events, _ = read_events(run_dir / "events.jsonl")
    pids = [e["pid"] for e in events if e["type"] == "status" and e.get("status") == "running"]
    return pids[-1] if pids else None


def assert_series_continuous(store: Store, run_id: str) -> None:
    """Over non-superseded rows each series' steps strictly increase, and attempt k > 1 starts right after its
    checkpoint step."""
    df = store.query("SELECT split, name, step, attempt FROM metrics WHERE run_id = ? AND NOT superseded"
                     " ORDER BY seq", [run_id])
    for (_split, _name), series in df.groupby(["split", "name"]):
        steps = series["step"].tolist()
        assert all(b > a for a, b in zip(steps, steps[1:], strict=False)), f"{_split}/{_name}: {steps}"
    row = store.get_run(run_id)
    if row["attempt"] > 1:
        train = df[(df.split == "train") & (df.name == "loss")]
        first_new = train[train.attempt == row["attempt"]]["step"].min()
        assert first_new == row["resume_step"] + 1
        assert train["step"].tolist() == list(range(1, train["step"].max() + 1))  # no gap, no restart


# -- a launcher without processes, for the queue logic ---------------------------------------------------------
class StubHandle:
    def __init__(self, run_dir: Path, resume: bool):
        self.run_dir, self.resume, self.pid, self.code, self.terminated = run_dir, resume, None, None, False


class StubLauncher:
    def __init__(self):
        self.launched: list[StubHandle] = []

    def launch(self, run_dir, device_env, resume):
        handle = StubHandle(Path(run_dir), resume)
        handle.env = device_env
        self.launched.append(handle)
        return handle

    def poll(self, handle):
        return handle.code

    def terminate(self, handle):
        handle.terminated = True

    def kill(self, handle):
        handle.code = -9

    def adopt(self, run_dir, pid):
        return None


def test_stub_launcher_satisfies_the_protocol():
    assert isinstance(StubLauncher(), Launcher)


def test_an_idle_engine_and_its_drivers_look_again_only_after_a_write(lab):
    """What keeps an idle service idle: the engine reads its queue, and a driver ticks, again only after the store
    changed; whatever makes a run startable is such a change (a submit, a run's end); a failed tick is retried."""
    class Counting(Ticker):
        def __init__(self, engine):
            super().__init__(engine)
            self.ticks, self.fail = 0, False

        def tick(self):
            self.ticks += 1
            if self.fail:
                raise RuntimeError("a bad tick")

    launcher = StubLauncher()
    with Engine(cpu_slots=1, launcher=launcher) as engine:
        driver = Counting(engine)
        assert driver.tick_if_changed() and not driver.tick_if_changed() and driver.ticks == 1
        engine.submit(fake())
        engine.step()
        assert len(launcher.launched) == 1 and driver.tick_if_changed() and driver.ticks == 2
        engine.submit(fake(seed=1))
        engine.step()
        assert len(launcher.launched) == 1  # its one slot is busy
        launcher.launched[0].code = 0
        engine.step()  # the first run's end is a write: the queued one starts
        assert len(launcher.launched) == 2
        driver.fail = True
        assert driver.tick_if_changed() and driver.tick_if_changed() and driver.ticks == 4


def test_priority_then_fifo_within_the_slots(lab):
    launcher = StubLauncher()
    with Engine(cpu_slots=2, launcher=launcher) as engine:
        low = [engine.submit(fake(seed=i)) for i in range(3)]
        high = engine.submit(fake(seed=9), priority=5)
        assert [q["id"] for q in engine.queue()] == [high, *low]
        engine.step()
        assert [h.run_dir.name for h in launcher.launched] == [high, low[0]]
        assert launcher.launched[0].env["CUDA_VISIBLE_DEVICES"] == ""
        assert launcher.launched[0].env["PTFT_THREADS"] == str(max(1, engine.pool.cores // 2))
        engine.step()
        assert len(launcher.launched) == 2  # both slots busy
        launcher.launched[0].code = 0
        engine.step()
        assert [h.run_dir.name for h in launcher.launched] == [high, low[0], low[1]]
        assert engine.store.get_run(high)["status"] == "failed"  # exited 0 without a final status
        assert "without reporting a final status" in engine.store.get_run(high)["error"]
        assert engine.cancel(low[2]) == "cancelled"  # queued: at once
        assert engine.queue() == []
        assert engine.max_concurrent == 2


def test_gpu_runs_wait_for_a_gpu_and_cpu_runs_backfill(lab):
    launcher = StubLauncher()
    with Engine(cpu_slots=1, launcher=launcher, gpus=[Gpu(0, "fake")]) as engine:
        g1 = engine.submit(fake(device="cuda"), priority=2)
        g2 = engine.submit(fake(device="auto"), priority=1)  # auto takes the GPU when there is one
        c1 = engine.submit(fake(device="cpu"))
        engine.step()
        launched = {h.run_dir.name: h.env for h in launcher.launched}
        assert set(launched) == {g1, c1}
        assert launched[g1]["CUDA_VISIBLE_DEVICES"] == "0" and launched[g1]["PTFT_DEVICE"] == "cuda"
        assert engine.queue()[0]["id"] == g2 and engine.queue()[0]["needs"] == "cuda"
        assert [d["busy"] for d in engine.devices()] == [1, 1]
    with Engine(cpu_slots=1, launcher=StubLauncher()) as engine, pytest.raises(ConfigError, match="cuda"):
        engine.submit(fake(device="cuda"))


def save_fake_checkpoint(engine: Engine, run_id: str, name: str) -> None:
    folder = engine.run_dir(run_id) / "checkpoints" / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")


def test_a_run_waits_for_the_checkpoint_it_starts_from(lab):
    launcher = StubLauncher()
    with Engine(cpu_slots=2, launcher=launcher) as engine:
        parent = engine.submit(fake(steps=20, checkpoint_steps=[10]))
        child = engine.submit(FinetuneConfig(base=f"run:{parent}/step-10"))
        late = engine.submit(fake(model=f"run:{parent}"), priority=9)  # its final checkpoint; first in the queue
        assert engine.store.get_run(child)["parent_run"] == parent  # the lineage, from the config
        engine.step()
        assert [h.run_dir.name for h in launcher.launched] == [parent]  # a slot is free, but no checkpoint yet
        waits = {q["id"]: q["waits_for"] for q in engine.queue()}
        assert waits == {late: f"checkpoint final of {parent}", child: f"checkpoint step-10 of {parent}"}
        save_fake_checkpoint(engine, parent, "step-10")
        engine.step()
        assert [h.run_dir.name for h in launcher.launched] == [parent, child]
        assert engine.store.get_run(late)["status"] == "queued"
        save_fake_checkpoint(engine, parent, "final")
        launcher.launched[0].code = 0
        engine.step()
        assert [h.run_dir.name for h in launcher.launched] == [parent, child, late]


def test_a_run_fails_with_the_reason_when_its_parent_ends_without_the_checkpoint(lab):
    launcher = StubLauncher()
    with Engine(cpu_slots=1, launcher=launcher) as engine:
        parent = engine.submit(fake(steps=20, checkpoint_steps=[10]))
        engine.step()
        save_fake_checkpoint(engine, parent, "step-5")
        child = engine.submit(fake(model=f"run:{parent}/step-10"))
        grandchild = engine.submit(FinetuneConfig(base=f"run:{child}"))
        engine.cancel(parent)
        launcher.launched[0].code = 0  # exits without a final status: failed
        engine.step()
        row = engine.store.get_run(child)
        assert row["status"] == "failed" and launcher.launched[-1].run_dir.name == parent
        assert f"run {parent} cancelled without checkpoint 'step-10' (it has step-5)" in row["error"], row["error"]
        engine.step()  # the failure runs down the lineage
        assert engine.store.get_run(grandchild)["status"] == "failed"
        assert f"run {child} failed without checkpoint 'final'" in engine.store.get_run(grandchild)["error"]
        with pytest.raises(ConfigError, match="base: run:pt-nope: there is no run 'pt-nope'"):
            engine.submit(FinetuneConfig(base="run:pt-nope"))
        assert len(launcher.launched) == 1


def test_a_run_of_several_ranks_holds_one_gpu_per_rank_on_one_node(lab):
    launcher = StubLauncher()
    with Engine(cpu_slots=1, launcher=launcher, gpus=[Gpu(0, "fake"), Gpu(1, "fake"), Gpu(2, "fake")]) as engine:
        with pytest.raises(ConfigError, match="ranks: 4 ranks take a GPU each on one node, .* has 3"):
            engine.submit(FinetuneConfig(ranks=4))  # auto: the GPUs
        assert engine.submit(FinetuneConfig(ranks=4, device="cpu"))  # ranks on the CPU share its slot
        pair = engine.submit(FinetuneConfig(ranks=2), priority=3)
        single = engine.submit(fake(device="cuda"), priority=2)
        second_pair = engine.submit(FinetuneConfig(ranks=2), priority=1)
        engine.step()
        env = {h.run_dir.name: h.env for h in launcher.launched}
        assert env[pair]["CUDA_VISIBLE_DEVICES"] == "0,1" and env[single]["CUDA_VISIBLE_DEVICES"] == "2"
        assert int(env[pair]["PTFT_THREADS"]) == 2 * int(env[single]["PTFT_THREADS"])  # a GPU slot's per rank
        assert engine.store.get_run(pair)["device"] == "cuda:0,1"
        assert [d["busy"] for d in engine.devices()] == [1, 1, 1, 1]
        assert second_pair not in env  # one GPU free, two needed: it waits, all or nothing
        launcher.launched[[h.run_dir.name for h in launcher.launched].index(pair)].code = 0
        engine.step()
        assert launcher.launched[-1].run_dir.name == second_pair
        assert launcher.launched[-1].env["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_a_readopted_run_of_several_gpus_is_counted_on_each(lab):
    pool = DevicePool(cpu_slots=1, gpus=[Gpu(0), Gpu(1)])
    held = pool.occupy("cuda:0,1", "r1")
    assert held.name == "cuda:0,1" and held.env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert pool.acquire("cuda", "r2") is None
    pool.release("r1")
    assert pool.acquire("cuda", "r2", gpus=2).name == "cuda:0,1"


def test_corrupt_and_truncated_journal_lines_are_skipped(lab, caplog):
    launcher = StubLauncher()
    with Engine(cpu_slots=1, launcher=launcher) as engine:
        run_id = engine.submit(fake())
        engine.step()
        run_dir = engine.run_dir(run_id)
        journal = JournalWriter(run_dir, run_id)
        journal.metric(1, "loss", 1.0)
        journal.close()
        with open(run_dir / "events.jsonl", "a") as f:
            f.write('{"type": "metric", "run_id": "' + run_id + '", "seq": 2, "st\x00garbage\n')  # torn line
            f.write("not json at all\n")
        journal = JournalWriter(run_dir, run_id)
        journal.metric(2, "loss", 0.5)
        journal.close()
        with open(run_dir / "events.jsonl", "a") as f:
            f.write('{"type":"metric","run_id":"' + run_id + '","seq":9,"step":3,"split":"train","name":"loss",')
        engine.step()
        assert db_metric_seqs(engine.store, run_id) == [1, 2]  # torn lines skipped, the partial one waits
        assert "corrupt journal line" in caplog.text
        with open(run_dir / "events.jsonl", "a") as f:
            f.write('"value":0.25,"wall_time":1.0}\n')
        launcher.launched[0].code = 0
        engine.step()
        assert db_metric_seqs(engine.store, run_id) == [1, 2, 9]  # completed by the writer: ingested


def test_recovery_uses_the_journal_final_status_or_interrupts(lab):
    with Engine(cpu_slots=1, launcher=StubLauncher(), launch_queued=False) as engine:
        done, gone = engine.submit(fake()), engine.submit(fake())
        for run_id in (done, gone):
            engine.store.update_run(run_id, status="running", pid=999_999)  # a dead PID
            journal = JournalWriter(engine.run_dir(run_id), run_id)
            journal.event("status", status="running", pid=999_999, attempt=1)
            for step in range(1, 6):
                journal.metric(step, "loss", 1.0 / step)
            if run_id == done:
                journal.event("status", status="completed")
            journal.close()
    with Engine(cpu_slots=1) as engine:  # the real launcher: PID 999999 is not a live worker
        assert engine.store.get_run(done)["status"] == "completed"
        assert engine.store.get_run(gone)["status"] == "interrupted"
        for run_id in (done, gone):
            assert set(db_metric_seqs(engine.store, run_id)) == journal_metric_seqs(engine.run_dir(run_id))
        assert engine.active_runs() == []


def test_resume_retry_delete_rules(lab):
    with Engine(cpu_slots=1, launcher=StubLauncher()) as engine:
        run_id = engine.submit(fake(), tags=["a"], name="mine", priority=3)
        with pytest.raises(ValueError, match="only interrupted"):
            engine.resume(run_id)
        engine.cancel(run_id)
        with pytest.raises(ValueError, match="no checkpoint"):
            engine.resume(run_id)
        again = engine.retry(run_id)
        row, new = engine.store.get_run(run_id), engine.store.get_run(again)
        assert again != run_id and new["config"] == row["config"] and new["tags"] == ["a"]
        assert (new["name"], new["priority"], new["status"]) == ("mine", 3, "queued")
        engine.step()
        with pytest.raises(ValueError, match="running"):
            engine.delete(again)
        engine.delete(run_id)
        assert not engine.store.has_run(run_id) and not engine.run_dir(run_id).exists()


def test_engine_process_never_imports_torch(lab):
    code = ("import sys; from ptft_core.engine import Engine; e = Engine(cpu_slots=1); e.step(); e.close(); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=paths.REPO_ROOT,
                         timeout=120, check=True).stdout
    assert out.split() == ["False", "False"]


def test_a_second_engine_in_another_process_fails_at_once_naming_the_pid(lab):
    with Engine(cpu_slots=1, launcher=StubLauncher()):
        code = ("import time; from ptft_core.engine import Engine\n"
                "from ptft_core.store import StoreLockedError\nt = time.monotonic()\n"
                "try:\n    Engine(cpu_slots=1)\nexcept StoreLockedError as e:\n"
                "    print(round(time.monotonic() - t, 2), e.pid, '|', e)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=paths.REPO_ROOT,
                             timeout=120).stdout
    took, pid, _, message = out.split(" ", 3)
    assert int(pid) == os.getpid() and f"process {os.getpid()}" in message
    assert float(took) < 2.0  # at once, not after a timeout
    assert "ptft.duckdb" in message


# -- real worker processes ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_twenty_queued_runs_on_two_slots(lab):
    with Engine(cpu_slots=2, poll_interval=0.1) as engine:
        ids = [engine.submit(fake(steps=5, every=5, seed=i)) for i in range(20)]
        engine.start()
        statuses = engine.wait(ids, timeout=240)
        assert set(statuses.values()) == {"completed"}
        assert engine.max_concurrent == 2
        # From the engine's bookkeeping: launch-to-exit intervals never overlap three deep.
        edges = sorted([(h["launched"], 1) for h in engine.history] + [(h["exited"], -1) for h in engine.history])
        depth = peak = 0
        for _, d in edges:
            depth += d
            peak = max(peak, depth)
        assert peak == 2
        # And from the store: the workers' own running..final times.
        runs = engine.store.list_runs()
        edges = sorted([(t.timestamp(), 1) for t in runs.started_at] + [(t.timestamp(), -1) for t in runs.finished_at])
        depth = peak = 0
        for _, d in edges:
            depth += d
            peak = max(peak, depth)
        assert peak <= 2
        for run_id in ids:
            assert set(db_metric_seqs(engine.store, run_id)) == journal_metric_seqs(engine.run_dir(run_id))


@pytest.mark.slow
def test_kill_9_of_a_worker_is_detected_and_nothing_logged_is_lost(lab):
    with Engine(cpu_slots=1, poll_interval=0.2) as engine:
        run_id = engine.submit(fake(steps=120, every=10))
        engine.start()
        run_dir = engine.run_dir(run_id)
        wait_for(lambda: progress_step(run_dir) >= 25, 60, "the run to reach step 25")
        os.kill(worker_pid(run_dir), signal.SIGKILL)
        killed = time.monotonic()
        status = wait_for(lambda: engine.store.get_run(run_id)["status"] in ("failed", "interrupted")
                          and run_id not in engine.active_runs(), 10, "the engine to notice")
        assert status and time.monotonic() - killed < 5
        row = engine.store.get_run(run_id)
        assert "SIGKILL" in row["error"]
        assert db_metric_seqs(engine.store, run_id) == sorted(journal_metric_seqs(run_dir))
        # A failed run with a checkpoint resumes.
        engine.resume(run_id)
        assert engine.wait([run_id], timeout=120) == {run_id: "completed"}
        assert_series_continuous(engine.store, run_id)


@pytest.mark.slow
def test_cancel_stops_within_10_s_and_leaves_a_resumable_checkpoint(lab):
    with Engine(cpu_slots=1, poll_interval=0.2) as engine:
        run_id = engine.submit(fake(steps=120, every=100))
        engine.start()
        run_dir = engine.run_dir(run_id)
        wait_for(lambda: progress_step(run_dir) >= 15, 60, "the run to reach step 15")
        started = time.monotonic()
        assert engine.cancel(run_id, wait=10) == "cancelled"
        assert time.monotonic() - started < 10
        checkpoints = sorted(run_dir.glob("checkpoints/step-*/training_state.pt"))
        assert checkpoints, "cancel must leave a checkpoint"
        from tests.fake_trainer import load_state

        state = load_state(checkpoints[-1].parent)
        assert state["step"] == int(checkpoints[-1].parent.name[5:]) >= 15
        engine.resume(run_id)
        assert engine.wait([run_id], timeout=120) == {run_id: "completed"}
        row = engine.store.get_run(run_id)
        assert row["attempt"] == 2 and row["resume_step"] == state["step"] and row["step"] == 120
        assert_series_continuous(engine.store, run_id)


@pytest.mark.slow
def test_hung_worker_is_killed_when_its_heartbeat_stops(lab):
    with Engine(cpu_slots=1, poll_interval=0.2, heartbeat_timeout=3) as engine:
        run_id = engine.submit(fake(steps=400))
        engine.start()
        run_dir = engine.run_dir(run_id)
        wait_for(lambda: progress_step(run_dir) >= 3, 60, "the run to start")
        os.kill(worker_pid(run_dir), signal.SIGSTOP)  # frozen: no heartbeat, no exit
        assert engine.wait([run_id], timeout=15) == {run_id: "failed"}
        assert "no heartbeat" in engine.store.get_run(run_id)["error"]


@pytest.mark.slow
def test_failure_in_training_is_reported(lab, monkeypatch):
    monkeypatch.setenv("PTFT_FAKE_FAIL_AT", "4")
    with Engine(cpu_slots=1, poll_interval=0.1) as engine:
        run_id = engine.submit(fake())
        assert engine.wait([run_id], timeout=60) == {run_id: "failed"}
        assert "injected failure at step 4" in engine.store.get_run(run_id)["error"]


ENGINE_SCRIPT = """
import sys, time
from ptft_core.config import PretrainConfig
from ptft_core.engine import Engine
engine = Engine(cpu_slots=2, poll_interval=0.2)
ids = [engine.submit(PretrainConfig(max_steps=int(sys.argv[1]), eval_every=10, seed=i)) for i in range(2)]
print(" ".join(ids), flush=True)
engine.start()
time.sleep(600)
"""


@pytest.mark.slow
def test_kill_9_of_the_engine_loses_and_duplicates_nothing(lab):
    proc = subprocess.Popen([sys.executable, "-c", ENGINE_SCRIPT, "160"], cwd=paths.REPO_ROOT, text=True,
                            stdout=subprocess.PIPE, env=os.environ)
    try:
        a, b = proc.stdout.readline().split()
        dirs = {r: lab / "runs" / r for r in (a, b)}
        wait_for(lambda: all(progress_step(d) >= 30 for d in dirs.values()), 90, "both runs to reach step 30")
    finally:
        proc.kill()  # kill -9 the engine: its workers live in their own sessions and go on
        proc.wait()
    pid_a = worker_pid(dirs[a])
    os.kill(pid_a, signal.SIGKILL)  # and one worker dies while no engine is watching
    time.sleep(0.3)

    with Engine(cpu_slots=2, poll_interval=0.2) as engine:
        assert engine.store.get_run(a)["status"] == "interrupted"
        assert engine.active_runs() == [b]  # re-adopted: still training
        assert engine.history[0]["adopted"]
        engine.start()
        assert engine.wait([b], timeout=120) == {b: "completed"}
        engine.resume(a)
        assert engine.wait([a], timeout=120) == {a: "completed"}
        for run_id in (a, b):
            seqs = db_metric_seqs(engine.store, run_id)
            assert len(seqs) == len(set(seqs))
            assert set(seqs) == journal_metric_seqs(dirs[run_id])
            assert_series_continuous(engine.store, run_id)
        assert engine.store.get_run(a)["attempt"] == 2 and engine.store.get_run(b)["attempt"] == 1


# -- the real trainer -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_training_cancel_and_resume(home, monkeypatch):
    """Real masked-LM pretraining (tiny preset): cancelled mid-run, it leaves a loadable checkpoint, and the
    resumed run finishes with one continuous series."""
    monkeypatch.delenv("PTFT_TRAINER", raising=False)
    monkeypatch.setenv("PTFT_GPUS", "none")
    config = PretrainConfig(model="tiny", corpus=["news"], vocab_size=1000, block_size=32, batch_size=8,
                            max_steps=30, log_every=1, eval_every=10, eval_blocks=8, device="cpu")
    with Engine(cpu_slots=1, poll_interval=0.2) as engine:
        run_id = engine.submit(config)
        engine.start()
        run_dir = engine.run_dir(run_id)
        wait_for(lambda: progress_step(run_dir) >= 12, 240, "real training to reach step 12", interval=0.2)
        # The cancel must land mid-run whatever the machine's speed: the worker is frozen (SIGSTOP) while the
        # cancel is sent, so its SIGTERM is pending before the next step and is handled the moment it continues.
        pid = engine._active[run_id].handle.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            engine.cancel(run_id)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert engine.wait([run_id], timeout=60) == {run_id: "cancelled"}
        checkpoint = max(run_dir.glob("checkpoints/step-*/training_state.pt"))
        import torch

        state = torch.load(checkpoint, weights_only=True)
        assert state["step"] >= 12
        engine.resume(run_id)
        assert engine.wait([run_id], timeout=300) == {run_id: "completed"}
        assert_series_continuous(engine.store, run_id)
        assert set(db_metric_seqs(engine.store, run_id)) == journal_metric_seqs(run_dir)
        row = engine.store.get_run(run_id)
        assert row["step"] == 30 and row["resume_step"] == state["step"]
        assert not engine.store.artifacts(run_id).empty
        assert json.loads((run_dir / "run.json").read_text())["attempt"] == 2
