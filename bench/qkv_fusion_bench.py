"""One product for attention's Q, K and V instead of three, as a lever for the bf16 step (docs/benchmarks.md
section 6): forward and backward of the three projections of a MiniLM layer under bf16 autocast on the CPU, a
`[batch x length, 384]` float32 input (the residual stream) and float32 weights, separate against fused (the
weights concatenated: one cast of the input, one wider product). Arms alternate, each timed over `--reps` calls.

    python -m bench.qkv_fusion_bench [--rows 1920] [--reps 50] [--rounds 2]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

HIDDEN = 384  # MiniLM-L6's width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=32 * 60, help="tokens in a batch (32 sentences of about 60)")
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.rows, HIDDEN, requires_grad=True)
    weights = [torch.nn.Parameter(torch.randn(HIDDEN, HIDDEN) * 0.02) for _ in range(3)]
    biases = [torch.nn.Parameter(torch.zeros(HIDDEN)) for _ in range(3)]

    def separate() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs = [F.linear(x, w, b) for w, b in zip(weights, biases, strict=True)]
        sum(o.float().sum() for o in outs).backward()

    def fused() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs = F.linear(x, torch.cat(weights), torch.cat(biases)).split(HIDDEN, dim=-1)
        sum(o.float().sum() for o in outs).backward()

    print(f"Q, K, V projections of [{args.rows}, {HIDDEN}], bf16 autocast, forward + backward, ms a call:")
    for round_ in range(args.rounds):
        for name, fn in (("separate", separate), ("fused", fused)):
            for _ in range(5):  # warm-up
                fn()
            start = time.perf_counter()
            for _ in range(args.reps):
                fn()
            print(f"  round {round_ + 1}  {name:9s} {(time.perf_counter() - start) / args.reps * 1e3:6.2f}")


if __name__ == "__main__":
    main()
