"""What a run costs: the FLOPs estimate, the measured device peak, and the "device" metrics every run logs."""

import json

import pandas as pd
import pytest
import torch
from tiny_runs import tiny_finetune, tiny_pretrain
from torch import nn
from transformers import BertConfig, BertModel

from ptft_core import paths, ui
from ptft_core.journal import MemoryLogger
from ptft_core.training import run_finetune, run_pretrain
from ptft_core.training.utilisation import PEAKS_FILE, device_key, device_peak, flops_per_token, measure_peak

CPU = torch.device("cpu")


def test_flops_per_token_counts_every_weight_but_the_embeddings_plus_attention():
    config = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=64)
    model = BertModel(config)
    embedding = sum(p.numel() for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters())
    others = sum(p.numel() for p in model.parameters()) - embedding
    assert embedding == (1000 + 64 + 2) * 64
    assert flops_per_token(model, 32) == 6 * others + 12 * 2 * 64 * 32


def test_the_peak_is_measured_and_the_best_seen_is_kept(empty_home):
    measured = measure_peak(CPU, torch.float32)
    assert measured > 1e8  # any CPU of this century does 0.1 GFLOP/s
    file = paths.home() / PEAKS_FILE
    key = device_key(CPU, torch.float32)
    file.write_text(json.dumps({key: 1e18}))
    assert device_peak(CPU, torch.float32) == 1e18  # a slower measurement now does not lower it
    file.write_text(json.dumps({key: 1.0}))
    assert device_peak(CPU, torch.float32) > 1e8  # a better one replaces it
    assert json.loads(file.read_text())[key] > 1e8


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
def test_every_run_logs_its_flops_utilisation_and_memory(home, tmp_path, kind):
    logger = MemoryLogger()
    if kind == "pretrain":
        assert run_pretrain(tiny_pretrain(), tmp_path, logger) == "completed"
    else:
        assert run_finetune(tiny_finetune(), tmp_path, logger) == "completed"
    device = {n: logger.values(n, "device") for n in ("train_flops", "model_tflops", "mfu", "cpu_percent", "rss_mib")}
    steps = len(logger.values("loss", "train"))
    assert all(len(v) == steps for v in device.values()), {k: len(v) for k, v in device.items()}
    flops = device["train_flops"]
    assert all(b > a > 0 for a, b in zip(flops, flops[1:], strict=False))  # grows with every logged step
    assert all(m > 0 for m in device["mfu"]) and all(r > 50 for r in device["rss_mib"])
    last = pd.DataFrame([{"split": "device", "name": n, "value": v[-1]} for n, v in device.items()])
    labels = [label for label, _, _ in ui.device_usage(last)]
    assert labels == ["training FLOPs", "MFU", "CPU", "memory"]
