"""Where ptft's fine-tuning step goes on the CPU: `torch.profiler` over training steps of the built-in MiniLM
as `run_finetune` takes them (train mode, bf16 autocast where the CPU has native bf16 with the math attention
kernel, AdamW, gradient clipping), on batches of 32 `movies` sentences padded to their longest (max length 128).
Reports the share of self CPU time per kind of work: matrix products (the FLOPs the model needs), attention,
elementwise and normalisation (GELU, dropout, layer norm, softmax, casts and copies), the optimizer, the rest.

    python -m bench.step_profile_bench [--steps 12] [--precision bf16] [--by-shape]

`--by-shape`: also the casts and copies (`aten::copy_`) grouped by the shapes they move (recording shapes inflates
the many small ops' times: read the shares between shapes, not against the plain profile).
"""

from __future__ import annotations

import argparse
import collections

import torch

from ptft_core.config import BUILTIN_CHECKPOINT, OptimConfig
from ptft_core.data import label_names, load_split
from ptft_core.families import load_classifier
from ptft_core.models import autocast, compute_precision, resolve_precision
from ptft_core.training.common import build_optimizer, decay_groups, optimizer_step, pad_batch

KINDS = {  # an aten op's kind, by the first pattern in its name (checked in order)
    "matrix products": ("addmm", "aten::mm", "bmm", "linear", "matmul"),
    "attention": ("attention", "sdpa", "baddbmm"),
    "elementwise and normalisation": ("gelu", "dropout", "layer_norm", "softmax", "to_copy", "copy_", "add", "mul",
                                      "div", "tanh", "native_", "where", "masked", "sum", "mean", "clone", "fill"),
    "optimizer": ("adam", "foreach", "clip", "norm", "sqrt", "lerp", "addcmul", "addcdiv"),
}


def kind_of(name: str) -> str:
    return next((kind for kind, patterns in KINDS.items() if any(p in name for p in patterns)), "the rest")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bf16"])
    parser.add_argument("--by-shape", action="store_true")
    args = parser.parse_args()
    device = torch.device("cpu")
    dtype = resolve_precision(args.precision, device)
    model, tokenizer = load_classifier(BUILTIN_CHECKPOINT, label_names("movies"), pooling="auto")
    model.train()  # a fine-tuning step: dropout on, as run_finetune trains
    optim = OptimConfig()
    optimizer = build_optimizer(decay_groups(model.named_parameters(), optim.weight_decay, optim.lr), optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    frame = load_split("movies", "train").head(32 * (args.steps + 2))
    ids = tokenizer(frame["text"].tolist(), truncation=True, max_length=128)["input_ids"]
    labels = torch.as_tensor(frame["label"].to_numpy())
    batches = [(pad_batch(ids[i:i + 32], tokenizer.pad_token_id), labels[i:i + 32]) for i in range(0, len(ids), 32)]

    def step(batch, target) -> None:
        with autocast(device, training=True):
            loss = model(**batch, labels=target).loss
        loss.backward()
        optimizer_step(optimizer, scheduler, optim.grad_clip)

    with compute_precision(dtype):
        for batch, target in batches[:2]:  # warm-up: kernels chosen, buffers allocated
            step(batch, target)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                    record_shapes=args.by_shape) as profile:
            for batch, target in batches[2:]:
                step(batch, target)
    shares: dict[str, float] = collections.defaultdict(float)
    total = 0.0
    for event in profile.key_averages():
        if event.key.startswith("aten::") or "attention" in event.key:
            shares[kind_of(event.key)] += event.self_cpu_time_total
            total += event.self_cpu_time_total
    print(f"{args.steps} steps of MiniLM, batch 32, {dtype}; self CPU time of aten ops by kind:")
    for kind, micros in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:32s} {micros / total:6.1%}")
    print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    if args.by_shape:
        copies = [e for e in profile.key_averages(group_by_input_shape=True) if e.key == "aten::copy_"]
        print("aten::copy_ by the shape it moves (share of all aten self CPU time):")
        for event in sorted(copies, key=lambda e: -e.self_cpu_time_total)[:30]:
            print(f"  {event.self_cpu_time_total / total:6.2%} {event.count:5d} calls  {event.input_shapes[0]}")


if __name__ == "__main__":
    main()
