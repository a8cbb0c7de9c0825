"""Masked-LM pretraining: masking statistics, block packing, a real tiny run, checkpoints and exact resume."""

import pytest
import torch
from tiny_runs import tiny_pretrain
from transformers import AutoModel, AutoTokenizer

from ptft_core.config import PretrainConfig
from ptft_core.journal import MemoryLogger
from ptft_core.models import MLM_HEAD_FILE, load_mlm_head
from ptft_core.training import run_pretrain
from ptft_core.training.checkpoint import load_training_state
from ptft_core.training.lm_data import IGNORE, mask_tokens, pack_blocks

MASK_ID, VOCAB = 4, 1000


def test_masking_statistics():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, VOCAB, (400, 256), generator=g)
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True  # [CLS] ... [SEP]
    special[:, 200:] = True  # padding
    inputs, labels = mask_tokens(ids, special, 0.15, VOCAB, MASK_ID, g)

    selected = labels != IGNORE
    assert not selected[special].any(), "a special token or padding was selected"
    assert torch.equal(inputs[special], ids[special])
    assert torch.equal(labels[selected], ids[selected])
    assert selected[~special].float().mean().item() == pytest.approx(0.15, abs=0.005)

    n = selected.sum().item()
    masked = (inputs[selected] == MASK_ID).sum().item() / n
    kept = (inputs[selected] == ids[selected]).sum().item() / n
    randomised = 1 - masked - kept
    assert masked == pytest.approx(0.8, abs=0.015)
    assert randomised == pytest.approx(0.1, abs=0.015)
    assert kept == pytest.approx(0.1, abs=0.015)
    assert (inputs[~selected] == ids[~selected]).all(), "an unselected position changed"


def test_pack_blocks_fills_full_blocks():
    blocks = pack_blocks([[10, 11, 12], [13, 14], [15, 16, 17, 18, 19]], block_size=5, head=[2], tail=[3])
    assert blocks.tolist() == [[2, 10, 11, 12, 3], [2, 13, 14, 15, 3], [2, 16, 17, 18, 3]]  # tail [19] dropped


def test_tiny_pretrain_logs_and_saves_a_loadable_checkpoint(home, tmp_path):
    config = tiny_pretrain(checkpoint_steps=[3])
    logger = MemoryLogger()
    assert run_pretrain(config, tmp_path / "run", logger) == "completed"

    for name in ("loss", "lr", "grad_norm", "tokens_per_s"):
        assert len(logger.values(name, "train")) == 6, name
    assert [e["step"] for e in logger.events if e["type"] == "metric" and e["split"] == "validation"
            and e["name"] == "loss"] == [0, 3, 6]  # before the first step, then every eval_every
    assert logger.values("perplexity", "validation")[-1] == pytest.approx(
        torch.tensor(logger.values("loss", "validation")[-1]).exp().item(), rel=1e-5)
    progress = [e for e in logger.events if e["type"] == "progress"]
    assert (progress[-1]["step"], progress[-1]["total_steps"], progress[-1]["eta_s"]) == (6, 6, 0.0)
    assert all(e["train_steps_per_s"] > 0 for e in progress)  # training alone: evaluations are timed apart
    checkpoints = [e for e in logger.events if e["type"] == "checkpoint"]
    assert [(e["step"], e["path"].split("/")[-1]) for e in checkpoints] == [(3, "step-3"), (6, "final")]
    tokens = [e["tokens_seen"] for e in logger.events if e["type"] == "metric" and e["name"] == "loss"]
    assert tokens[:3] == [0, 8 * 32, 2 * 8 * 32]  # validation before any step, then the first two train logs

    final = tmp_path / "run" / "checkpoints" / "final"
    assert {"config.json", "model.safetensors", "tokenizer.json", "ptft_config.json", "training_state.pt",
            MLM_HEAD_FILE} <= {p.name for p in final.iterdir()}
    # Plain transformers loads what we saved; our head comes back tied to the embeddings.
    encoder = AutoModel.from_pretrained(final)
    tokenizer = AutoTokenizer.from_pretrained(final)
    assert len(tokenizer) == encoder.config.vocab_size <= 1000
    assert tokenizer("Hello world")["input_ids"][0] == tokenizer.cls_token_id
    assert load_mlm_head(str(final), encoder) is not None
    assert load_training_state(final)["step"] == 6
    assert PretrainConfig(**__import__("json").loads((final / "ptft_config.json").read_text())) == config


@pytest.mark.slow
def test_cancel_then_resume_continues_exactly(home, tmp_path):
    """A run stopped after step 3 and resumed logs the same losses at steps 4-6 as an uninterrupted one.

    Both further-pretrain one checkpoint, so they start from the same weights."""
    run_pretrain(tiny_pretrain(max_steps=1), tmp_path / "base", MemoryLogger())
    config = tiny_pretrain(model=str(tmp_path / "base" / "checkpoints" / "final"))
    straight = MemoryLogger()
    run_pretrain(config, tmp_path / "straight", straight)

    calls = []
    interrupted = MemoryLogger()
    stop_after_three = lambda: calls.append(1) or len(calls) >= 3  # called once after every step
    assert run_pretrain(config, tmp_path / "interrupted", interrupted, should_stop=stop_after_three) == "cancelled"
    assert (tmp_path / "interrupted" / "checkpoints" / "step-3" / "training_state.pt").is_file()
    assert run_pretrain(config, tmp_path / "interrupted", interrupted, resume=True) == "completed"

    def series(logger):
        return [(e["step"], e["value"]) for e in logger.events
                if e["type"] == "metric" and e["name"] == "loss" and e["split"] == "train"]

    resumed = series(interrupted)
    assert [s for s, _ in resumed] == [1, 2, 3, 4, 5, 6]  # the numbering goes on, no restart at 0
    assert [v for _, v in resumed] == pytest.approx([v for _, v in series(straight)], rel=1e-5)
    assert interrupted.values("loss", "validation")[-1] == pytest.approx(straight.values("loss", "validation")[-1],
                                                                         rel=1e-5)
