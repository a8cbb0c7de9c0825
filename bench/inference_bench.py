"""Inference cost of a fine-tuned classifier: ptft's predict path (`inspect.predict`: texts sorted by length so
batches carry little padding, inference mode, the fused attention kernel) against transformers'
`pipeline("text-classification")` on the same model object and the same texts, at batch 1, 32 and 128, in
float32, bf16 (ptft: autocast; the pipeline: the model cast to bf16, its own way) and dynamic int8 quantisation of
the linear layers (`torch.ao.quantization.quantize_dynamic`, the same quantised model for both). Arms interleaved,
`--repeats` times each; medians.

The model is the built-in MiniLM under a fresh two-label head (its weights do not change the cost), read by its
mean as the lab reads it; the texts are movies' test split. Batch 1: a call per text, its latency (p50 / p95 over
the texts) and texts/s; batch 32 and 128: one call with every text, batched 32 (128) at a time, texts/s (what
scoring a split costs). Also the model's size on disk (safetensors) and in memory (parameters and buffers).

    python -m bench.inference_bench [--texts 512] [--repeats 3] [--max-length 128]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ptft_core import inspect
from ptft_core.config import BUILTIN_CHECKPOINT
from ptft_core.data import load_split
from ptft_core.families import load_classifier

BATCHES = (1, 32, 128)
PRECISIONS = ("float32", "bf16", "int8")


def quantised(model: torch.nn.Module) -> torch.nn.Module:
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)


def ptft_arm(loaded: inspect.Loaded, texts: list[str], batch: int, precision: str, max_length: int) -> list[float]:
    """Seconds per call. Batch 1: a call per text (its latency). Batch 32 or 128: one call with every text, batched
    that many at a time (ptft sorts them by length first: the throughput of scoring a split)."""
    calls = [texts[i:i + 1] for i in range(len(texts))] if batch == 1 else [texts]
    times = []
    for call in calls:
        began = time.perf_counter()
        inspect.predict(loaded, call, max_length, batch_size=batch, bf16=precision == "bf16")
        times.append(time.perf_counter() - began)
    return times


def pipeline_arm(classify, texts: list[str], batch: int, max_length: int) -> list[float]:
    """As ptft_arm, through the pipeline (its own batching of a list, in the list's order)."""
    calls = [texts[i:i + 1] for i in range(len(texts))] if batch == 1 else [texts]
    times = []
    for call in calls:
        began = time.perf_counter()
        classify(call, batch_size=batch, truncation=True, max_length=max_length)
        times.append(time.perf_counter() - began)
    return times


def main() -> None:
    from transformers import pipeline

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    texts = load_split("movies", "test")["text"].tolist()[:args.texts]
    model, tokenizer = load_classifier(BUILTIN_CHECKPOINT, ["negative", "positive"])
    model.eval()
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        disk_mb = sum(f.stat().st_size for f in Path(folder).glob("*.safetensors")) / 2**20
    memory_mb = inspect.model_megabytes(model)
    models = {"float32": model, "bf16": model, "int8": quantised(model)}
    pipes = {"float32": pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu", top_k=None),
             "bf16": pipeline("text-classification", model=copy.deepcopy(model).to(torch.bfloat16),
                              tokenizer=tokenizer, device="cpu", top_k=None),
             "int8": pipeline("text-classification", model=models["int8"], tokenizer=tokenizer, device="cpu",
                              top_k=None)}
    results: dict[str, dict[str, list]] = {}
    for _ in range(args.repeats):
        for precision in PRECISIONS:
            loaded = inspect.Loaded(models[precision], tokenizer, ["negative", "positive"])
            for batch in BATCHES:
                for arm in ("ptft", "pipeline"):
                    per_call = (ptft_arm(loaded, texts, batch, precision, args.max_length) if arm == "ptft"
                                else pipeline_arm(pipes[precision], texts, batch, args.max_length))
                    key = f"{arm} {precision} batch {batch}"
                    entry = results.setdefault(key, {"texts_per_s": [], "p50_ms": [], "p95_ms": []})
                    entry["texts_per_s"].append(len(texts) / sum(per_call))
                    entry["p50_ms"].append(1000 * float(np.percentile(per_call, 50)))
                    entry["p95_ms"].append(1000 * float(np.percentile(per_call, 95)))
    table = {key: {name: round(statistics.median(values), 2) for name, values in entry.items()}
             for key, entry in results.items()}
    for precision in PRECISIONS:
        for batch in BATCHES:
            ours, theirs = table[f"ptft {precision} batch {batch}"], table[f"pipeline {precision} batch {batch}"]
            ours["vs_pipeline"] = round(ours["texts_per_s"] / theirs["texts_per_s"], 2)
    print(json.dumps({"texts": len(texts), "max_length": args.max_length, "threads": torch.get_num_threads(),
                      "model_disk_mb": round(disk_mb, 1), "model_memory_mb": round(memory_mb, 1),
                      "repeats": args.repeats, "arms": table}, indent=2))


if __name__ == "__main__":
    main()
