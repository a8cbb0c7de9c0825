"""On a CUDA GPU: throughput with bf16 autocast and model FLOPs utilisation (MFU).

MFU = 6 × parameters × tokens per second / the card's peak dense bf16 rate. Parameters include the embeddings
(the usual convention for encoder MFU is the same 6·N·D estimate; attention's own FLOPs are not counted, so the
figure is a lower bound at long blocks).

    python -m bench.gpu_bench [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench.mlm_bench import BLOCK, blocks_for, masked
from ptft_core.families import scratch_lm
from ptft_core.models import autocast, load_tokenizer

# Dense bf16 tensor-core peaks from NVIDIA's data sheets (without sparsity).
PEAK_BF16 = {"H100 80GB HBM3": 989e12, "H100 PCIe": 756e12, "H200": 989e12, "A100": 312e12}


def peak_flops() -> tuple[str, float]:
    name = torch.cuda.get_device_name()
    for key, peak in PEAK_BF16.items():
        if key in name:
            return name, peak
    return name, float("nan")


def mlm_throughput(preset: str, batch: int, steps: int, compile_model: bool) -> dict:
    device = torch.device("cuda")
    tokenizer = load_tokenizer("minilm-l6")
    batches = masked(tokenizer, blocks_for(tokenizer, "train"), 0)
    torch.manual_seed(0)
    model = scratch_lm("bert", preset, tokenizer).to(device).train()
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    step_fn = torch.compile(model) if compile_model else model

    def make(i):
        ids = torch.cat([batches[(i * batch // 32 + k) % len(batches)][0] for k in range(batch // 32)])
        labels = torch.cat([batches[(i * batch // 32 + k) % len(batches)][1] for k in range(batch // 32)])
        return ids.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    def train_step(i):
        ids, labels = make(i)
        with autocast(device):
            loss = step_fn(ids, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    for i in range(10):  # warm-up (and compilation)
        train_step(i)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        loss = train_step(i)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens_s = steps * batch * BLOCK / seconds
    name, peak = peak_flops()
    return {"preset": preset, "batch": batch, "block": BLOCK, "params": params, "tokens_per_s": tokens_s,
            "mfu": 6 * params * tokens_s / peak, "device": name, "compiled": compile_model,
            "last_loss": loss.item()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args(argv)
    rows = []
    # Uncompiled is what the product runs; compiled shows the headroom torch.compile would give.
    for preset, batch, compiled in [("base", 128, False), ("base", 256, False), ("base", 256, True),
                                    ("base", 512, True)]:
        row = mlm_throughput(preset, batch, args.steps, compiled)
        rows.append(row)
        print(f"MLM {preset:5s} batch {batch:4d} block {BLOCK} compiled={compiled!s:5s} "
              f"{row['tokens_per_s']:10.0f} tok/s  MFU {row['mfu']:.1%}  ({row['device']})", flush=True)
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(rows, indent=2))
    return {"rows": rows}


if __name__ == "__main__":
    main()
