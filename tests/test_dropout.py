"""Cheap dropout masks on the CPU (ptft_core/dropout.py): the masks drop at the asked rate with every bit of the
random words used alike, a seed fixes them, kept elements and gradients are scaled by the same mask, attention
computed here equals PyTorch's without dropout and applies the masks to its weights with it, and the mode takes
only what it should: training dropout and attention with dropout on the CPU, inside a training forward."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ptft_core import models
from ptft_core.dropout import CheapDropout, attention, dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_masks_drop_at_the_asked_rate_in_every_lane_of_a_random_word(p):
    torch.manual_seed(0)
    keep = keep_mask(torch.Size([1_000_000]), p, torch.device("cpu"))
    sd = math.sqrt(p * (1 - p) / keep.numel())
    assert abs((1 - keep.float().mean().item()) - p) < 5 * sd
    lanes = 1 - keep.view(-1, 4).float().mean(0)  # each 16-bit lane of the 64-bit words, the sign bit's included
    assert ((lanes - p).abs() < 5 * sd * 2).all(), lanes


def test_a_seed_fixes_the_masks_and_another_seed_draws_others():
    def mask(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return keep_mask(torch.Size([64, 33]), 0.3, torch.device("cpu"))

    assert torch.equal(mask(1), mask(1))
    assert not torch.equal(mask(1), mask(2))


def test_dropout_scales_what_it_keeps_and_its_gradient_flows_through_the_same_mask():
    x = torch.randn(4000, requires_grad=True)
    y = dropout(x, 0.25)
    kept = y != 0
    assert 0.7 < kept.float().mean() < 0.8
    assert torch.allclose(y[kept], x[kept] / 0.75)
    upstream = torch.randn(4000)
    y.backward(upstream)
    assert torch.allclose(x.grad, upstream * kept / 0.75)
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


def qkv(heads: int = 4, kv_heads: int = 4, length: int = 9, dim: int = 8):
    torch.manual_seed(0)
    return (torch.randn(2, heads, length, dim), torch.randn(2, kv_heads, length, dim),
            torch.randn(2, kv_heads, length, dim))


def padding_mask(length: int = 9) -> torch.Tensor:
    """The boolean mask `transformers` hands attention: True where a query may read a key (the second text is
    padded after 6 tokens)."""
    keys = torch.ones(2, length, dtype=torch.bool)
    keys[1, 6:] = False
    return keys[:, None, None, :].expand(2, 1, length, length)


@pytest.mark.parametrize("case", ["none", "bool", "additive", "causal", "grouped", "scale"])
def test_attention_without_dropout_equals_pytorch_s(case):
    q, k, v = qkv(kv_heads=2 if case == "grouped" else 4)
    call = {"none": {}, "bool": {"attn_mask": padding_mask()},
            "additive": {"attn_mask": torch.randn(2, 1, 9, 9)}, "causal": {"is_causal": True},
            "grouped": {"enable_gqa": True}, "scale": {"scale": 0.05, "attn_mask": padding_mask()}}[case]
    expected = F.scaled_dot_product_attention(q, k, v, **call)
    assert torch.allclose(attention(q, k, v, **call), expected, atol=1e-5)


def test_attention_in_bf16_is_at_least_as_close_to_float32_as_pytorch_s_math_kernel():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (t * 3 for t in qkv(length=48, dim=32))  # scores of a real model's size: bf16 rounding shows
    mask = padding_mask(48)
    exact = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    with torch.autocast("cpu", dtype=torch.bfloat16), sdpa_kernel([SDPBackend.MATH]):
        ours = attention(q, k, v, attn_mask=mask)
        theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert ours.dtype == theirs.dtype == torch.bfloat16
    assert (ours.float() - exact).abs().mean() <= (theirs.float() - exact).abs().mean()


def test_attention_drops_attention_weights_with_the_seeded_masks():
    q, k, v = qkv()
    mask = padding_mask()
    torch.manual_seed(5)
    out = attention(q, k, v, attn_mask=mask, dropout_p=0.3)
    torch.manual_seed(5)
    keep = keep_mask(torch.Size([2, 4, 9, 9]), 0.3, torch.device("cpu"))
    scores = (q @ k.transpose(-2, -1) / math.sqrt(8)).masked_fill(~mask, float("-inf"))
    expected = (torch.softmax(scores, -1) * keep / 0.7) @ v
    assert torch.allclose(out, expected, atol=1e-5)


def test_the_mode_takes_training_dropout_and_attention_with_dropout_and_nothing_else():
    x = torch.randn(50, 40)
    layer = nn.Dropout(0.4)
    q, k, v = qkv()
    with CheapDropout():
        torch.manual_seed(7)
        trained = layer.train()(x)
        evaluated = layer.eval()(x)
        plain_attention = F.scaled_dot_product_attention(q, k, v)
        torch.manual_seed(7)
        dropped_attention = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
        in_place = x.clone()
        F.dropout(in_place, 0.5, training=True, inplace=True)  # PyTorch's own: the caller reads its argument
    torch.manual_seed(7)
    assert torch.allclose(trained, torch.where(keep_mask(x.shape, 0.4, x.device), x / 0.6, 0.0))
    assert torch.equal(evaluated, x)
    assert torch.allclose(plain_attention, F.scaled_dot_product_attention(q, k, v), atol=1e-6)
    torch.manual_seed(7)
    assert torch.allclose(dropped_attention, attention(q, k, v, dropout_p=0.5), atol=1e-6)
    assert ((in_place == 0) | torch.isclose(in_place, x * 2)).all() and (in_place == 0).any()


def test_a_training_forward_on_the_cpu_takes_the_cheap_masks_and_the_switch_turns_them_off():
    """models.autocast(training=True) enters the mode; an evaluation forward and CPU_CHEAP_DROPOUT=False do not."""
    x = torch.randn(300, 30)
    device = torch.device("cpu")

    def dropped(training: bool) -> torch.Tensor:
        torch.manual_seed(11)
        with models.autocast(device, training=training):
            return F.dropout(x, 0.5, training=True)

    torch.manual_seed(11)
    cheap = torch.where(keep_mask(x.shape, 0.5, device), x * 2, 0.0)
    assert torch.equal(dropped(training=True), cheap)
    assert not torch.equal(dropped(training=False), cheap)
    try:
        models.CPU_CHEAP_DROPOUT = False
        assert not torch.equal(dropped(training=True), cheap)
    finally:
        models.CPU_CHEAP_DROPOUT = True
