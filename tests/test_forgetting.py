"""Forgetting probes and mitigations: CKA, sequential fine-tuning, replay, L2-SP, the MLM probe."""

import numpy as np
import pytest
import torch
from tiny_runs import tiny_finetune, tiny_pretrain

from ptft_core.config import ConfigError, replay_sizes
from ptft_core.families import load_classifier
from ptft_core.journal import MemoryLogger
from ptft_core.training import run_finetune, run_pretrain
from ptft_core.training.checkpoint import load_weights
from ptft_core.training.common import PhaseClock, seed_everything
from ptft_core.training.finetune import Progress, fit_task, setup
from ptft_core.training.forgetting import linear_cka


def probe_notes(logger: MemoryLogger) -> list[dict]:
    """The run's notes besides the ones every run writes about its precision and its pooling."""
    return [e for e in logger.events if e["type"] == "note" and not e["message"].startswith(("computing in",
                                                                                              "pooling:"))]


LABELS = ["negative", "positive"]


def test_linear_cka_properties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16))
    rotation, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x @ rotation + 5.0) == pytest.approx(1.0)  # invariant to rotation, scale, shift
    assert linear_cka(x, rng.normal(size=(200, 16))) < 0.2
    assert linear_cka(x, rng.normal(size=(200, 8))) == pytest.approx(linear_cka(rng.normal(size=(200, 8)), x),
                                                                     abs=0.2)


def test_replay_sizes():
    assert replay_sizes(32, 0.0) == (32, 0)
    assert replay_sizes(32, 0.25) == (24, 8)
    assert replay_sizes(4, 0.05) == (3, 1)  # a positive fraction replays at least one example
    assert replay_sizes(4, 0.99) == (1, 3)  # and never crowds out the current task


@pytest.mark.slow
def test_replay_mixes_the_asked_share_of_each_batch(home, tmp_path):
    config = tiny_finetune(then_dataset="tweets", replay_fraction=0.25, max_steps=3)
    logger = MemoryLogger()
    run = setup(config, tmp_path, logger, torch.device("cpu"), lambda: False, PhaseClock())
    seen = {0: [], 1: []}  # examples per training forward pass, by task model
    for index, task in enumerate(run.tasks):
        task.model.register_forward_pre_hook(
            lambda module, args, kwargs, i=index: seen[i].append(len(kwargs["input_ids"])) if module.training
            else None, with_kwargs=True)
    progress = Progress()
    assert fit_task(run, progress, None) == "completed"
    assert seen == {0: [16, 16, 16], 1: []}  # the first task alone: no replay source yet
    seen[0].clear()
    assert fit_task(run, progress, None) == "completed"
    assert seen == {1: [12, 12, 12], 0: [4, 4, 4]}  # 25% of each batch replayed through the first task's head


@pytest.mark.slow
def test_sequential_run_measures_the_first_task_all_along(home, tmp_path):
    logger = MemoryLogger()
    config = tiny_finetune(then_dataset="tweets", max_steps=4, eval_every=2, probe_every=1)
    assert run_finetune(config, tmp_path, logger) == "completed"
    prev = [e for e in logger.events if e["type"] == "metric" and e["name"] == "prev_task_accuracy"]
    # Every evaluation of the second task (steps 5-8), from its start: the first task's best weights at step 4.
    assert [e["step"] for e in prev] == [4, 6, 8]
    assert all(e["split"] == "forgetting" for e in prev)
    assert len(logger.values("prev_task_loss", "forgetting")) == 3
    assert [e["step"] for e in logger.events if e["type"] == "metric" and e["name"] == "cka_similarity"] == [
        0, 2, 4, 4, 6, 8]  # each task's start and its evaluations
    validation = [e["step"] for e in logger.events if e["type"] == "metric" and e["split"] == "validation"
                  and e["name"] == "accuracy"]
    assert validation == [0, 2, 4, 6, 8]  # the second task's untrained head is not scored at its start
    assert len(logger.values("accuracy", "test")) == 1
    epochs = [e["epoch"] for e in logger.events if e["type"] == "metric" and e["name"] == "loss"
              and e["split"] == "train"]
    assert epochs == sorted(epochs)  # the epoch axis runs on across the two tasks
    notes = probe_notes(logger)
    assert len(notes) == 1 and "no MLM head" in notes[0]["message"]


def test_replay_needs_a_source(home, tmp_path):
    with pytest.raises(ConfigError, match="then_dataset"):
        run_finetune(tiny_finetune(replay_fraction=0.2), tmp_path, MemoryLogger())
    with pytest.raises(ConfigError, match="MLM head"):
        run_finetune(tiny_finetune(replay_fraction=0.2, replay_source="mlm"), tmp_path, MemoryLogger())


@pytest.mark.slow
def test_l2sp_keeps_the_encoder_closer_to_its_start(home, tmp_path):
    def distance(l2sp: float) -> float:
        config = tiny_finetune(l2sp=l2sp, max_steps=8, probe_drift=False)
        run_finetune(config, tmp_path / str(l2sp), MemoryLogger())
        seed_everything(config.seed)
        start, _ = load_classifier(config.base, LABELS)  # the same seeded init the run started from
        final, _ = load_classifier(config.base, LABELS)
        load_weights(final, tmp_path / str(l2sp) / "checkpoints" / "final")
        return sum(((a - b) ** 2).sum().item() for a, b in
                   zip(start.bert.parameters(), final.bert.parameters(), strict=True))

    free, anchored = distance(0.0), distance(10.0)
    assert 0 < anchored < 0.5 * free


@pytest.mark.slow
def test_mlm_probe_and_mlm_replay_with_a_pretrained_base(home, tmp_path):
    run_pretrain(tiny_pretrain(max_steps=2), tmp_path / "pre", MemoryLogger())
    base = str(tmp_path / "pre" / "checkpoints" / "final")
    logger = MemoryLogger()
    config = tiny_finetune(base=base, replay_fraction=0.25, replay_source="mlm", eval_every=3, probe_every=1)
    assert run_finetune(config, tmp_path / "ft", logger) == "completed"
    mlm = logger.values("general_mlm_loss", "forgetting")
    assert len(mlm) == 3 and all(0 < v < 20 for v in mlm)  # steps 0, 3 and 6
    assert not probe_notes(logger)
    assert (tmp_path / "ft" / "checkpoints" / "final" / "mlm_head.safetensors").is_file()
