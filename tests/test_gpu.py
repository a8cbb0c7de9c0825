"""CUDA paths: bf16 autocast and real training steps on the GPU. Skipped cleanly where there is no CUDA."""

from __future__ import annotations

import math

import pytest

from ptft_core.config import FinetuneConfig, PretrainConfig
from ptft_core.journal import MemoryLogger

pytestmark = pytest.mark.gpu


def test_autocast_runs_matmuls_in_bf16_on_cuda():
    import torch

    from ptft_core.models import autocast

    device = torch.device("cuda")
    a = torch.randn(64, 64, device=device)
    with autocast(device):
        assert (a @ a).dtype == torch.bfloat16


def test_pretrain_then_finetune_on_cuda(home, tmp_path):
    from ptft_core.training import run_finetune, run_pretrain

    pretrain = PretrainConfig(model="tiny", corpus=["news"], vocab_size=1000, block_size=64, batch_size=16,
                              max_steps=40, log_every=10, eval_every=20, device="cuda")
    logger = MemoryLogger()
    assert run_pretrain(pretrain, tmp_path / "pre", logger) == "completed"
    val = logger.values("loss", "validation")
    assert all(math.isfinite(v) for v in val) and val[-1] < val[0]

    finetune = FinetuneConfig(base="minilm-l6", dataset="movies", label_fraction=0.1, epochs=1, max_steps=60,
                              batch_size=32, max_length=64, eval_every=30, device="cuda", probe_mlm=False)
    logger = MemoryLogger()
    assert run_finetune(finetune, tmp_path / "ft", logger) == "completed"
    assert logger.values("accuracy", "test")[-1] > 0.6
