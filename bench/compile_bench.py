"""`torch.compile` for the CPU fine-tune: MiniLM classification steps on the product's batches, eager against
compiled, side by side in one process, in float32 and (where native) bf16 autocast.

The batches are what `run_finetune` trains on: `movies` sentences grouped by length and padded per batch
(dynamic shapes). Compiled arms: `dynamic=True` (one graph for every length), and `dynamic=False` with the lengths
rounded up to a few buckets (16, 32, 64, 128: a graph per bucket, more padding). Reported per arm: the compile
time (the first pass over every bucket) and steps/s afterwards, the same batches in the same order for every arm.

    python -m bench.compile_bench [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from ptft_core.data import load_split
from ptft_core.models import load_tokenizer, native_bf16, resolve_checkpoint

BUCKETS = (16, 32, 64, 128)
BATCH = 32


def batches(steps: int, bucketed: bool) -> list[dict]:
    tokenizer = load_tokenizer("minilm-l6")
    frame = load_split("movies", "train").sample(steps * BATCH, random_state=0)
    ids = tokenizer(frame["text"].tolist(), truncation=True, max_length=128)["input_ids"]
    order = np.argsort([len(i) for i in ids], kind="stable")
    rng = np.random.default_rng(0)
    groups = [order[i:i + BATCH] for i in range(0, len(order), BATCH)]
    rng.shuffle(groups)
    labels = frame["label"].to_numpy()
    out = []
    for group in groups:
        width = max(len(ids[i]) for i in group)
        if bucketed:
            width = next(b for b in BUCKETS if b >= width)
        x = torch.zeros(len(group), width, dtype=torch.long)
        mask = torch.zeros_like(x)
        for row, i in enumerate(group):
            x[row, :len(ids[i])] = torch.tensor(ids[i])
            mask[row, :len(ids[i])] = 1
        out.append({"input_ids": x, "attention_mask": mask, "labels": torch.tensor(labels[group])})
    return out


def arm(mode: str, bf16: bool, data: list[dict]) -> dict:
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(resolve_checkpoint("minilm-l6"), num_labels=2,
                                                               dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True)
    forward = model if mode == "eager" else torch.compile(model, dynamic=mode == "compile dynamic")
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()

    def step(batch: dict) -> None:
        with cast:
            loss = forward(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    started = time.perf_counter()
    seen = set()
    for batch in data:  # the first pass over each shape (bucket) compiles; counted as compile time
        if batch["input_ids"].shape[1] not in seen and mode != "compile dynamic":
            seen.add(batch["input_ids"].shape[1])
            step(batch)
    if mode == "compile dynamic":
        step(data[0])
        step(data[1])  # dynamic=True recompiles once when it first sees a second length
    warm_s = time.perf_counter() - started
    started = time.perf_counter()
    for batch in data:
        step(batch)
    return {"arm": mode, "bf16": bf16, "compile_s": warm_s, "steps_per_s": len(data) / (time.perf_counter() - started)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args(argv)
    dynamic, bucketed = batches(args.steps, False), batches(args.steps, True)
    rows = []
    for bf16 in (False, True) if native_bf16(torch.device("cpu")) else (False,):
        for mode, data in (("eager", dynamic), ("compile dynamic", dynamic), ("eager", bucketed),
                           ("compile buckets", bucketed)):
            rows.append(arm(mode, bf16, data) | {"padding": "buckets" if data is bucketed else "per batch"})
            print(json.dumps(rows[-1]))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "compile-cpu.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
