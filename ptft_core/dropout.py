"""Dropout on the CPU at a quarter of the random numbers: what a training forward on the CPU runs instead of
PyTorch's own dropout (models.autocast enters `CheapDropout` for every forward that is backpropagated there).

Why: in a MiniLM fine-tuning step on this project's 2-core CPU, drawing dropout's masks (`bernoulli_`, one
random number per element, about 7 ns each) was 17 % of the step's time, more than any single layer's matrix
product (`python -m bench.step_profile_bench`, docs/benchmarks.md section 6). A mask needs only a few bits per
element: `keep_mask` draws one 64-bit random word per four elements from the same generator (so `torch.manual_seed`
still fixes every mask) and keeps an element where its 16 bits are above the drop rate, which is so exact to
1/65,536. The same mask then scales the kept elements by 1/(1 - p) in one fused pass forwards and backwards, as
PyTorch's own dropout does.

Attention's dropout lives inside `scaled_dot_product_attention`, so a call that asks for dropout is computed here
by its definition (scores, mask, softmax, dropout, values) with the scores and the softmax in float32 and the
products with the values in the run's dtype: as exact as PyTorch's math kernel or more, and faster on the CPU.
With both, a MiniLM fine-tuning step in bf16 is 1.13x faster (`python -m bench.peer_bench`, docs/benchmarks.md
section 6). Calls without dropout (evaluation, or `dropout: 0`) and every other device (CUDA's fused dropout is
cheap already) go to PyTorch unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

LANES = 4  # 16-bit lanes in a 64-bit random word


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """A boolean mask of `shape`, each element kept with probability 1 - p, independently (p quantised to
    1/65,536)."""
    count = math.prod(shape)
    words = torch.empty((count + LANES - 1) // LANES, dtype=torch.int64, device=device)
    words.random_(-(2**63), None)  # every bit uniform (the default range leaves the sign bit 0)
    lanes = words.view(torch.int16)[:count].view(shape)
    return lanes >= round(p * 65536) - 32768


class MaskedScale(torch.autograd.Function):
    """x * mask / (1 - p), and the gradient through the same mask: PyTorch's dropout with our mask."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        keep = keep_mask(x.shape, p, x.device)
        ctx.scale = 1.0 / (1.0 - p)
        ctx.save_for_backward(keep)
        return torch.ops.aten.native_dropout_backward(x, keep, ctx.scale)  # the fused masked scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (keep,) = ctx.saved_tensors
        return torch.ops.aten.native_dropout_backward(grad, keep, ctx.scale), None


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode dropout of `x` at rate `p` (0 < p)."""
    return torch.zeros_like(x) if p >= 1.0 else MaskedScale.apply(x, p)


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
              dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
              enable_gqa: bool = False) -> torch.Tensor:
    """`scaled_dot_product_attention` by its definition, with `dropout`'s masks on the attention weights."""
    device = query.device.type
    low = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else query.dtype
    if enable_gqa:  # grouped keys and values: each serves query heads // their heads
        key = key.repeat_interleave(query.size(-3) // key.size(-3), -3)
        value = value.repeat_interleave(query.size(-3) // value.size(-3), -3)
    scale = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    with torch.autocast(device, enabled=False):
        scores = torch.matmul(query.float() * scale, key.float().transpose(-2, -1))
        # Masked scores take float32's lowest value, not -inf: as cheap as an addition, never NaN; a row whose every
        # key is masked (none in the lab's batches, padded on the right) would weigh its keys alike.
        lowest = torch.finfo(scores.dtype).min
        if is_causal:
            seen = torch.ones(scores.shape[-2:], dtype=torch.bool, device=query.device).tril()
            scores = torch.where(seen, scores, lowest)
        if attn_mask is not None:
            scores = torch.where(attn_mask, scores, lowest) if attn_mask.dtype == torch.bool else scores + attn_mask
        weights = torch.softmax(scores, -1).to(low)
        if dropout_p > 0:
            weights = dropout(weights, dropout_p)
        return torch.matmul(weights, value.to(low))


def _dropout_args(input, p=0.5, training=True, inplace=False):  # F.dropout's signature
    return input, p, training, inplace


def _attention_args(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                    enable_gqa=False):  # F.scaled_dot_product_attention's signature
    return dict(query=query, key=key, value=value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                scale=scale, enable_gqa=enable_gqa)


class CheapDropout(TorchFunctionMode):
    """Within it, `F.dropout` in training and attention with dropout on a CPU tensor take the cheap masks above;
    everything else runs as it would."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.dropout:
            x, p, training, inplace = _dropout_args(*args, **kwargs)
            if training and p > 0 and not inplace and x.device.type == "cpu":
                return dropout(x, p)
        elif func is F.scaled_dot_product_attention:
            call = _attention_args(*args, **kwargs)
            if call["dropout_p"] > 0 and call["query"].device.type == "cpu":
                return attention(**call)
        return func(*args, **kwargs)
