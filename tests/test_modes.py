"""Training phases set their own mode: every optimizer step of every kind of base runs in train mode (dropout on),
every evaluation and probe in eval mode, whatever mode the base was loaded in (`from_pretrained` hands a model
over in eval mode, `from_config` in train mode), and measuring a probe never changes what training does.

The slow tests run real 2-4-step fine-tunes (MiniLM for the built-in, folder, scratch and second-task bases): a
mode is a property of the real loop, so no stand-in trainer would show it; each run takes a few seconds."""

from __future__ import annotations

import contextlib

import pytest
import torch
from tiny_runs import tiny_finetune, tiny_pretrain
from torch import nn
from torch.nn.modules.module import register_module_forward_pre_hook
from transformers import PreTrainedModel

from ptft_core import paths
from ptft_core.journal import MemoryLogger
from ptft_core.training import run_finetune, run_pretrain
from ptft_core.training.lm_data import eval_loss


@contextlib.contextmanager
def forward_modes():
    """Every forward of a `transformers` model in this process, as (gradients on, dropout modes): a forward with
    gradients is a training step, one without is an evaluation or a probe."""
    records: list[tuple[bool, set[bool]]] = []

    def hook(module, args):
        if isinstance(module, PreTrainedModel):
            records.append((torch.is_grad_enabled(),
                            {m.training for m in module.modules() if isinstance(m, nn.Dropout)}))

    handle = register_module_forward_pre_hook(hook)
    try:
        yield records
    finally:
        handle.remove()


def assert_phases(records: list[tuple[bool, set[bool]]], train_forwards: int) -> None:
    training = [modes for grad, modes in records if grad]
    evaluating = [modes for grad, modes in records if not grad]
    assert len(training) >= train_forwards and evaluating
    assert all(modes == {True} for modes in training), "a training step ran with dropout off somewhere"
    assert all(modes == {False} for modes in evaluating), "an evaluation ran with dropout on somewhere"


def pretrained(tmp_path) -> str:
    """A pretraining run of ours (it carries an MLM head: the MLM probe runs), as `run:pre`."""
    assert run_pretrain(tiny_pretrain(max_steps=2), paths.run_dir("pre"), MemoryLogger()) == "completed"
    return "run:pre"


BASES = {
    "built-in": lambda tmp_path: {"base": "minilm-l6"},
    "preset": lambda tmp_path: {"base": "tiny"},
    "scratch": lambda tmp_path: {"base": "minilm-l6", "scratch": True},
    "run checkpoint": lambda tmp_path: {"base": pretrained(tmp_path)},
    "hub-style folder": lambda tmp_path: {"base": str(paths.models_dir() / "minilm-l6")},
    "second task": lambda tmp_path: {"base": "minilm-l6", "then_dataset": "tweets", "replay_fraction": 0.25},
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(BASES))
def test_every_base_trains_in_train_mode_and_evaluates_in_eval_mode(home, tmp_path, kind):
    overrides = BASES[kind](tmp_path)
    config = tiny_finetune(max_steps=3, eval_every=1, eval_val_samples=32, eval_train_samples=16, **overrides)
    tasks = 2 if config.then_dataset else 1
    with forward_modes() as records:
        assert run_finetune(config, tmp_path / "ft", MemoryLogger()) == "completed"
    # An evaluation after every step: each later step follows an evaluation that left the model in eval mode.
    assert_phases(records, train_forwards=3 * tasks)


@pytest.mark.slow
def test_pretraining_and_further_pretraining_train_in_train_mode(home, tmp_path):
    with forward_modes() as records:
        assert run_pretrain(tiny_pretrain(max_steps=4, eval_every=1), tmp_path / "pre", MemoryLogger()) == "completed"
        further = tiny_pretrain(model=str(tmp_path / "pre" / "checkpoints" / "final"), max_steps=4, eval_every=1)
        assert run_pretrain(further, tmp_path / "further", MemoryLogger()) == "completed"
    assert_phases(records, train_forwards=8)


@pytest.mark.slow
def test_a_frozen_encoder_reads_in_eval_mode_while_the_head_trains(home, tmp_path):
    """Pretraining with freeze_encoder: the encoder is a fixed feature extractor (dropout off) at every step."""
    with forward_modes() as records:
        config = tiny_pretrain(max_steps=3, eval_every=1, freeze_encoder=True)
        assert run_pretrain(config, tmp_path / "pre", MemoryLogger()) == "completed"
    assert records and all(modes == {False} for _, modes in records)


@pytest.mark.slow
def test_dropout_changes_a_pretrained_base_s_training(home, tmp_path):
    """The `dropout` field reaches MiniLM: 0.0 and 0.3 give different training losses from the same seed, and
    0.0 twice gives the same."""
    def losses(dropout: float, folder: str) -> list[float]:
        logger = MemoryLogger()
        config = tiny_finetune(base="minilm-l6", dropout=dropout, max_steps=3, eval_val_samples=16,
                               eval_train_samples=0, probe_drift=False)
        assert run_finetune(config, tmp_path / folder, logger) == "completed"
        return logger.values("loss", "train")

    none, again, some = losses(0.0, "a"), losses(0.0, "b"), losses(0.3, "c")
    assert none == pytest.approx(again, rel=1e-5)
    assert all(abs(a - b) > 1e-4 for a, b in zip(none, some, strict=True))


@pytest.mark.slow
def test_probes_do_not_change_the_training_loss_series(home, tmp_path):
    """The MLM and drift probes at every evaluation (a base of our pretraining: it has an MLM head) leave the
    seeded training loss series exactly as it is with no probes."""
    base = pretrained(tmp_path)

    def series(probes: bool, folder: str) -> list[float]:
        logger = MemoryLogger()
        config = tiny_finetune(base=base, max_steps=4, eval_every=1, eval_val_samples=32, probe_mlm=probes,
                               probe_drift=probes, dropout=0.2)
        assert run_finetune(config, tmp_path / folder, logger) == "completed"
        assert bool(logger.values("general_mlm_loss", "forgetting")) == probes
        return logger.values("loss", "train")

    assert series(True, "probed") == pytest.approx(series(False, "plain"), rel=1e-6)


def test_an_evaluation_leaves_eval_mode_for_the_loop_to_change():
    """Evaluations never restore a mode: the training loop sets one after each (no mode is inherited)."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))

    class Loss(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, inputs, labels):
            return ((self.net(inputs.float()) - labels.float()) ** 2).mean()

    wrapper = Loss().train()
    batches = [(torch.ones(2, 4), torch.zeros(2, 4), 8)]
    assert eval_loss(wrapper, batches, torch.device("cpu")) > 0
    assert not wrapper.training and not model[1].training
