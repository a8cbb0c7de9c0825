"""Layer norm in bf16 in a CPU training forward in bf16 (ptft_core/layer_norm.py): the norm's float32 output
rounded once to bf16, only where models.autocast says a bf16 forward will be backpropagated on a CPU (not in
evaluation, not in float32, not with the switch off), and a whole encoder's loss and gradients stay close to those
of the float32 norm it replaces."""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from ptft_core import models
from ptft_core.layer_norm import Bf16LayerNorm

CPU = torch.device("cpu")


def test_the_norm_answers_in_bf16_with_its_float32_values_rounded_once():
    torch.manual_seed(0)
    norm, x = nn.LayerNorm(64), torch.randn(8, 10, 64) * 3 + 1
    with Bf16LayerNorm():
        out = norm(x)
        already_low = norm(x.bfloat16())
        other = torch.tanh(x)  # anything else passes through untouched
    assert out.dtype == torch.bfloat16 and torch.equal(out, norm(x).bfloat16())
    assert already_low.dtype == torch.bfloat16 and other.dtype == torch.float32


def test_only_a_cpu_bf16_training_forward_takes_it_and_the_switch_turns_it_off():
    norm, x = nn.LayerNorm(16), torch.randn(4, 16)

    def dtype(precision: torch.dtype, training: bool) -> torch.dtype:
        with models.compute_precision(precision), models.autocast(CPU, training=training):
            return norm(x).dtype

    assert dtype(torch.bfloat16, training=True) == torch.bfloat16
    assert dtype(torch.bfloat16, training=False) == torch.float32  # evaluation keeps PyTorch's norm
    assert dtype(torch.float32, training=True) == torch.float32
    try:
        models.CPU_BF16_LAYER_NORM = False
        assert dtype(torch.bfloat16, training=True) == torch.float32
    finally:
        models.CPU_BF16_LAYER_NORM = True


def test_an_encoder_s_gradients_stay_as_close_to_float32_as_bf16_autocast_s_own():
    """A post-norm encoder (BERT, as MiniLM): with the norm in bf16 its whole residual stream is bf16. Its loss and
    gradients, against a float32 reference, stay within a small multiple of the distance bf16 autocast with the
    float32 norm has from the same reference (0.55 % against 0.40 % of the gradient's norm here); a norm skipped or
    a gradient cut would be far off."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=200, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForSequenceClassification(config).train()
    ids, labels = torch.randint(5, 200, (16, 24)), torch.randint(0, 2, (16,))

    def loss_and_gradient(precision: torch.dtype, bf16_norm: bool) -> tuple[float, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        models.CPU_BF16_LAYER_NORM = bf16_norm
        try:
            with models.compute_precision(precision), models.autocast(CPU, training=True):
                loss = model(input_ids=ids, labels=labels).loss
        finally:
            models.CPU_BF16_LAYER_NORM = True
        loss.backward()
        assert all(p.grad.dtype == torch.float32 for p in model.parameters())  # for AdamW's float32 weights
        return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])

    reference_loss, reference = loss_and_gradient(torch.float32, bf16_norm=True)  # float32: the mode stays off
    autocast_loss, autocast = loss_and_gradient(torch.bfloat16, bf16_norm=False)
    bf16_norm_loss, bf16_norm = loss_and_gradient(torch.bfloat16, bf16_norm=True)
    assert not torch.equal(bf16_norm, autocast)  # the mode was on: the stream was rounded

    def distance(gradient: torch.Tensor) -> float:
        return (torch.linalg.vector_norm(gradient - reference) / torch.linalg.vector_norm(reference)).item()

    assert distance(bf16_norm) <= 3 * distance(autocast) and distance(bf16_norm) < 0.02
    assert abs(bf16_norm_loss - reference_loss) <= 3 * abs(autocast_loss - reference_loss) + 1e-4
