"""The cost of metric logging on a training step: the lab's tiny preset (BERT, 2 layers, hidden 128) doing
masked-LM steps on batches of 8 x 32 tokens, with and without 10 `JournalWriter.metric` calls per step.

The two arms are interleaved step by step in one process (A, B, A, B, ...) so machine noise hits both alike;
both compute the same Python floats (loss, grad norm, ...), only the logging arm writes them. Two measures:
- direct: the time spent inside the 10 `metric` calls / the mean step time (precise; what logging costs);
- A/B: (mean step with logging - mean step without) / mean step without (noisier; includes indirect effects).
Target: < 2 % of the step time.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

from bench import row

NAME = "logging"
STEPS = 200
WARMUP = 20
METRICS = ["loss", "lr", "grad_norm", "tokens_per_s", "accuracy", "perplexity", "mask_rate", "loss_ema",
           "step_time", "tokens_seen"]


def _model(device):
    import torch
    from transformers import AutoModel, BertConfig

    from ptft_core.models import PRESET_SHAPES, MaskedLMHead, MLMModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=1000, max_position_embeddings=512, **PRESET_SHAPES["tiny"])
    encoder = AutoModel.from_config(config)
    return MLMModel(encoder, MaskedLMHead(encoder.config)).to(device).train()


def measure(device_name: str) -> list[dict]:
    import torch

    from ptft_core.journal import JournalWriter

    device = torch.device(device_name)
    model = _model(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(16):
        ids = torch.randint(5, 1000, (8, 32), generator=gen)
        labels = torch.full_like(ids, -100)
        mask = torch.rand(ids.shape, generator=gen) < 0.15
        mask[:, 0] = True
        labels[mask] = ids[mask]
        batches.append((ids.to(device), labels.to(device)))

    def train_step(i: int) -> dict[str, float]:
        ids, labels = batches[i % len(batches)]
        loss = model(ids, labels)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = loss.item()  # every loop reads its loss; it synchronises a GPU step too
        return {"loss": value, "lr": 1e-3, "grad_norm": float(grad_norm), "tokens_per_s": 1.0, "accuracy": 0.5,
                "perplexity": min(value, 50.0), "mask_rate": 0.15, "loss_ema": value, "step_time": 0.0,
                "tokens_seen": float(i * 256)}

    with tempfile.TemporaryDirectory(prefix="ptft-bench-log-") as run_dir:
        journal = JournalWriter(run_dir, "bench")
        for i in range(WARMUP):
            train_step(i)
        plain, logged, inside = [], [], []
        for i in range(2 * STEPS):
            start = time.perf_counter()
            values = train_step(i)
            if i % 2:
                log_start = time.perf_counter()
                for name in METRICS:
                    journal.metric(i, name, values[name], "train", epoch=i / STEPS, tokens_seen=i * 256)
                inside.append(time.perf_counter() - log_start)
                logged.append(time.perf_counter() - start)
            else:
                plain.append(time.perf_counter() - start)
        journal.close()
    step = statistics.mean(plain)
    direct = statistics.mean(inside) / step
    ab = (statistics.mean(logged) - step) / step
    label = f"tiny MLM step 8x32 on {device_name}"
    return [
        row(NAME, f"{label}: step time without logging (mean)", 1000 * step, "ms", None, digits=3),
        row(NAME, f"{label}: step time with 10 metrics logged (mean)", 1000 * statistics.mean(logged), "ms", None,
            digits=3),
        row(NAME, f"{label}: 10 metric() calls (mean)", 1e6 * statistics.mean(inside), "us", None, digits=3),
        row(NAME, f"{label}: logging cost, direct (calls / step)", 100 * direct, "%", "< 2", digits=3),
        row(NAME, f"{label}: logging cost, interleaved A/B", 100 * ab, "%", "< 2", digits=3),
    ]



def run() -> list[dict]:
    import torch

    from ptft_core.engine.devices import cpu_cores

    # As a worker in one of the engine's default CPU slots would: cores / slots threads.
    torch.set_num_threads(int(os.environ.get("PTFT_THREADS") or max(1, cpu_cores() // 2)))
    rows = measure("cpu")
    if torch.cuda.is_available():
        rows += measure("cuda")
    return rows


if __name__ == "__main__":
    for r in run():
        print(r)
