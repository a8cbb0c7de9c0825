"""Layer norm that hands on bf16 in a CPU training forward in bf16 (models.autocast enters `Bf16LayerNorm`).

Why: CPU autocast computes matrix products in bf16 but leaves layer norm's output in float32 where its input was
float32 (the embeddings', then, in a post-norm encoder like BERT, the whole residual stream: a bf16 product's
output plus a float32 residual is float32). Every product that reads that output casts it to bf16 first (Q, K and
V each cast the same tensor), and the backward casts each of their gradients back: about 43 % of the casts in a
MiniLM fine-tuning step, which were 8.3 % of its time (`python -m bench.step_profile_bench --by-shape`,
docs/benchmarks.md section 6). Here layer norm still computes in float32 (PyTorch's CPU kernel accumulates in
float32 for a bf16 input too) and rounds its output to bf16 once: the products read it without a cast, and the
residual stream of a post-norm encoder stays in bf16, as in Megatron-style bf16 training (its residual
connections are bf16 unless asked otherwise). Evaluation forwards and float32 runs keep PyTorch's float32 norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


class Bf16LayerNorm(TorchFunctionMode):
    """`F.layer_norm` (every `nn.LayerNorm`) answers in bf16 where it would answer in float32."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is F.layer_norm and out.dtype == torch.float32:
            return out.to(torch.bfloat16)
        return out
