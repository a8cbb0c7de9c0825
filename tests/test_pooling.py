"""`pooling`: what a classifier's head reads. auto resolves per base (mean for the built-in sentence-transformers
MiniLM, cls for presets), mean is the masked mean of the last hidden states (so padding never changes it), a
saved fine-tune reloads with its pooling, and the field changes a run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_runs import tiny_finetune, tiny_pretrain

from ptft_core.config import ConfigError
from ptft_core.families import load_classifier
from ptft_core.journal import MemoryLogger
from ptft_core.models import POOLING_ATTR
from ptft_core.training import run_finetune, run_pretrain

LABELS = ["neg", "pos"]


def logits(model, tokenizer, texts: list[str]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits


def test_auto_pooling_is_mean_for_minilm_and_cls_for_a_preset(home):
    minilm, _ = load_classifier("minilm-l6", LABELS)
    preset, _ = load_classifier("tiny", LABELS, family="roformer")
    assert getattr(minilm.config, POOLING_ATTR) == "mean"
    assert getattr(preset.config, POOLING_ATTR) == "cls"


@pytest.mark.parametrize("family", ["bert", "roformer"])
def test_mean_pooling_reads_the_mean_of_the_text_s_tokens_whatever_the_padding(home, family):
    torch.manual_seed(0)
    model, tokenizer = load_classifier("tiny", LABELS, family=family, pooling="mean")
    torch.manual_seed(0)
    cls, _ = load_classifier("tiny", LABELS, family=family, pooling="cls")
    texts = ["a fine film", "a long and tedious film that never ends, with a plot nobody could follow"]
    batch = logits(model, tokenizer, texts)
    assert torch.allclose(batch[0], logits(model, tokenizer, texts[:1])[0], atol=1e-5)
    assert not torch.allclose(batch, logits(cls, tokenizer, texts), atol=1e-4)


def test_mean_pooling_is_refused_where_the_head_reads_another_position(home):
    with pytest.raises(ConfigError, match="pooling: mean"):
        load_classifier("tiny", LABELS, family="gpt2", dataset="amazon", pooling="mean")


def test_a_saved_mean_pooled_classifier_reloads_with_its_pooling(home, tmp_path):
    model, tokenizer = load_classifier("tiny", LABELS, family="bert", pooling="mean")
    model.save_pretrained(tmp_path / "ft")
    tokenizer.save_pretrained(tmp_path / "ft")
    again, _ = load_classifier(str(tmp_path / "ft"), LABELS)
    assert getattr(again.config, POOLING_ATTR) == "mean"
    texts = ["a fine film", "bad"]
    assert torch.allclose(logits(model, tokenizer, texts), logits(again, tokenizer, texts), atol=1e-5)


def test_inspect_reads_a_mean_pooled_run_the_way_it_was_trained(home):
    from ptft_core import inspect, paths

    model, tokenizer = load_classifier("tiny", LABELS, family="bert", pooling="mean")
    final = paths.run_dir("ft-20261207-000000-aaaaaa") / "checkpoints" / "final"
    model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    loaded = inspect.load_classifier("ft-20261207-000000-aaaaaa")
    texts = ["a fine film", "bad"]
    expected = torch.softmax(logits(model.eval(), tokenizer, texts), dim=-1).numpy()
    assert np.allclose(inspect.predict(loaded, texts, 32), expected, atol=1e-5)  # not a fresh pooler over [CLS]


@pytest.mark.slow
def test_pooling_changes_a_minilm_fine_tune_and_the_run_notes_say_which(home, tmp_path):
    def run(pooling: str) -> MemoryLogger:
        logger = MemoryLogger()
        config = tiny_finetune(base="minilm-l6", pooling=pooling, max_steps=3, eval_val_samples=16,
                               eval_train_samples=0, probe_drift=False, dropout=0.0)
        assert run_finetune(config, tmp_path / pooling, logger) == "completed"
        return logger

    mean, cls = run("mean"), run("cls")
    assert all(abs(a - b) > 1e-4 for a, b in zip(mean.values("loss", "train"), cls.values("loss", "train"),
                                                  strict=True))
    notes = [e["message"] for e in cls.events if e["type"] == "note"]
    assert any(n.startswith("pooling: cls") for n in notes)


@pytest.mark.parametrize("base, read_by", [("minilm-l6", "mean"), ("scratch", "cls")])
def test_further_pretraining_keeps_how_its_checkpoint_is_read(home, tmp_path, base, read_by):
    """MiniLM further pretrained is still a sentence-transformers encoder: `auto` reads its checkpoints by the
    mean, as it reads MiniLM (a study comparing them must not read one by [CLS] and the other by its mean); a
    model pretrained from scratch here is read by [CLS]."""
    config = tiny_pretrain(max_steps=1, eval_every=1, **({} if base == "scratch" else {"model": base}))
    assert run_pretrain(config, tmp_path / "pre", MemoryLogger()) == "completed"
    classifier, _ = load_classifier(str(tmp_path / "pre" / "checkpoints" / "final"), LABELS)
    assert getattr(classifier.config, POOLING_ATTR) == read_by
