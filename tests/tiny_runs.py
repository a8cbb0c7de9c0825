"""Tiny run configs for the training tests: seconds on two CPU cores, real data, real steps."""

from __future__ import annotations

import torch

from ptft_core.config import FinetuneConfig, OptimConfig, PretrainConfig

torch.set_num_threads(2)  # the test machine's cores are shared: never ask for more


def tiny_pretrain(**overrides) -> PretrainConfig:
    """The tiny preset on the small news corpus: ~1 s of tokenizer training, ~20 ms a step."""
    fields = dict(model="tiny", corpus=["news"], vocab_size=1000, block_size=32, batch_size=8, max_steps=6,
                  log_every=1, eval_every=3, eval_blocks=8, optim=OptimConfig(lr=1e-3, warmup_ratio=0.0))
    return PretrainConfig(**{**fields, **overrides})


def tiny_finetune(**overrides) -> FinetuneConfig:
    """A randomly initialised tiny BERT (bert-base vocabulary) on 10% of amazon, short texts, news probes;
    evaluations before the first step and at the end."""
    fields = dict(base="tiny", dataset="amazon", label_fraction=0.1, max_length=32, batch_size=16, epochs=1,
                  max_steps=6, eval_every=1000, log_every=1, eval_train_samples=32, probe_corpus="news",
                  probe_size=16, optim=OptimConfig(lr=1e-3, warmup_ratio=0.0))
    return FinetuneConfig(**{**fields, **overrides})
