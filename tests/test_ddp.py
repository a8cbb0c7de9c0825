"""Data-parallel runs (`ranks: 2`): real 2-rank gloo fine-tuning and pretraining of the tiny preset on CPU under
torchrun, through the engine and its local launcher: the ranks end with the same weights, rank 0 alone journals
(every metric seq once), a cancel stops both ranks at one step with one checkpoint, and `kill -9` of the launcher
(torchrun) leaves no rank alive."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from ptft_core.config import FinetuneConfig, ImagePretrainConfig, OptimConfig, PretrainConfig
from ptft_core.engine import Engine
from ptft_core.journal import read_events
from ptft_core.rundir import RunDir
from ptft_core.training.distributed import Ranks, shard
from tests.conftest import wait_for


def test_a_batch_is_split_between_the_ranks_and_none_is_left_without_an_example():
    assert [shard(range(5), Ranks(r, 2)) for r in (0, 1)] == [[0, 2, 4], [1, 3]]
    assert [shard([7], Ranks(r, 2)) for r in (0, 1)] == [[7], [7]]  # an epoch's last batch of one
    assert shard(range(4), Ranks()) == [0, 1, 2, 3]


@pytest.fixture
def lab(home, monkeypatch, every_core):
    monkeypatch.setenv("PTFT_GPUS", "none")
    monkeypatch.delenv("PTFT_TRAINER", raising=False)
    return home


def ddp_config(**overrides) -> FinetuneConfig:
    """The tiny preset on 10% of amazon in two ranks: a randomly initialised 2-layer BERT, 16 examples a step."""
    fields = dict(base="tiny", dataset="amazon", label_fraction=0.1, max_length=32, batch_size=16, epochs=1,
                  max_steps=8, eval_every=4, log_every=1, eval_train_samples=16, probe_corpus="news", probe_size=8,
                  optim=OptimConfig(lr=1e-3, warmup_ratio=0.0), ranks=2)
    return FinetuneConfig(**{**fields, **overrides})


def ddp_pretrain() -> PretrainConfig:
    """The tiny preset's masked-LM pretraining on news in two ranks, 8 blocks a step."""
    return PretrainConfig(model="tiny", corpus=["news"], vocab_size=1000, block_size=32, batch_size=8, max_steps=8,
                          log_every=1, eval_every=4, eval_blocks=8, optim=OptimConfig(lr=1e-3, warmup_ratio=0.0),
                          ranks=2)


def ddp_images() -> ImagePretrainConfig:
    """resnet-small on digits at 8 pixels in two ranks, 32 images a step: batch norm's statistics see each rank's
    16 and are averaged at every evaluation and checkpoint."""
    return ImagePretrainConfig(dataset="digits", image_size=8, batch_size=32, max_steps=8, log_every=1, eval_every=4,
                               ranks=2)


def journal(engine: Engine, run_id: str) -> list[dict]:
    return read_events(engine.run_dir(run_id) / "events.jsonl")[0]


def torchrun_of(engine: Engine, run_id: str) -> psutil.Process:
    """The run row's pid is rank 0's (its `status running` event); torchrun is its parent."""
    torchrun = psutil.Process(engine.store.get_run(run_id)["pid"]).parent()
    assert "torch.distributed.run" in torchrun.cmdline(), torchrun.cmdline()
    return torchrun


def ranks_of(torchrun: psutil.Process) -> list[psutil.Process]:
    return [p for p in torchrun.children(recursive=True) if "ptft_core.worker" in " ".join(p.cmdline())]


def start_a_long_run(engine: Engine) -> tuple[str, psutil.Process, list[psutil.Process]]:
    """A 2-rank run of many epochs, three steps in: (its id, torchrun, the two ranks)."""
    run_id = engine.submit(ddp_config(epochs=200, max_steps=0, eval_every=1000, eval_count=1))
    engine.start()
    wait_for(lambda: any(e["type"] == "progress" and e["step"] >= 3 for e in journal(engine, run_id)), 240,
             "three steps")
    torchrun = torchrun_of(engine, run_id)
    ranks = ranks_of(torchrun)
    assert len(ranks) == 2
    return run_id, torchrun, ranks


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["finetune", "pretrain", "image_pretrain"])
def test_two_ranks_train_one_run_with_the_same_weights_and_one_journal(lab, kind):
    with Engine(cpu_slots=1) as engine:
        run_id = engine.submit({"finetune": ddp_config, "pretrain": ddp_pretrain, "image_pretrain": ddp_images}[kind]())
        engine.start()
        assert engine.wait([run_id], timeout=300) == {run_id: "completed"}, engine.store.get_run(run_id)["error"]
        events = journal(engine, run_id)
        seqs = [e["seq"] for e in events]
        assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs)  # one writer
        statuses = [e["status"] for e in events if e["type"] == "status"]
        assert statuses == ["running", "completed"]  # rank 0's, once each
        spread = [e["value"] for e in events if e["type"] == "metric" and e["name"] == "rank_weight_spread"]
        assert spread == [0.0]  # averaged gradients: identical weights on both ranks
        train = [e["step"] for e in events if e["type"] == "metric" and e["split"] == "train" and e["name"] == "loss"]
        assert train == list(range(1, 9))
        assert RunDir(engine.run_dir(run_id)).has_checkpoint("final")
        assert "rank 1" in (engine.run_dir(run_id) / "worker.log").read_text()  # both ranks ran and ended


@pytest.mark.ddp
@pytest.mark.slow
def test_a_cancel_stops_both_ranks_at_one_step_with_one_checkpoint(lab):
    with Engine(cpu_slots=1) as engine:
        run_id, _, ranks = start_a_long_run(engine)
        engine.cancel(run_id)
        assert engine.wait([run_id], timeout=10) == {run_id: "cancelled"}
        checkpoints = [p.name for p in (engine.run_dir(run_id) / "checkpoints").iterdir()]
        assert len([c for c in checkpoints if c.startswith("step-")]) == 1, checkpoints
        step = RunDir(engine.run_dir(run_id)).latest_step()
        saves = [e for e in journal(engine, run_id) if e["type"] == "checkpoint"]
        assert [e["step"] for e in saves] == [step]  # one save, by rank 0, at the step both stopped
        wait_for(lambda: not any(r.is_running() and r.status() != psutil.STATUS_ZOMBIE for r in ranks), 30,
                 "both ranks to end")


@pytest.mark.ddp
@pytest.mark.slow
def test_kill_9_of_torchrun_leaves_no_rank_alive(lab):
    with Engine(cpu_slots=1) as engine:
        run_id, torchrun, ranks = start_a_long_run(engine)
        os.kill(torchrun.pid, signal.SIGKILL)
        wait_for(lambda: not any(r.is_running() and r.status() != psutil.STATUS_ZOMBIE for r in ranks), 30,
                 "every rank to die with torchrun")
        assert engine.wait([run_id], timeout=60)[run_id] == "failed"
        assert "SIGKILL" in engine.store.get_run(run_id)["error"]
