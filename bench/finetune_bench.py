"""Fine-tuning throughput: ptft's loop against what a user would write instead, side by side in one process.

Same model (`minilm-l6`), same training examples (one epoch over a seeded, stratified subset of `movies`), same batch
size, steps, optimizer (AdamW, lr 5e-5, linear schedule) and truncation length. Throughput counts real tokens (no
padding): the examples are identical, so real tokens per step are identical, and tokens/s ratios equal step-rate
ratios. Each method's validation accuracy on the full `movies` validation split is reported, so speed is not bought
with quality.

    python -m bench.finetune_bench [--examples 1024] [--max-length 128] [--skip-512]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from bench import baselines
from ptft_core.config import FinetuneConfig, OptimConfig
from ptft_core.data import load_split
from ptft_core.journal import MemoryLogger
from ptft_core.models import load_tokenizer, resolve_checkpoint
from ptft_core.training import run_finetune
from ptft_core.training.finetune import stratified_subset

BATCH = 32
LR = 5e-5
SEED = 0


class TimedLogger(MemoryLogger):
    """Keeps when each event was logged, so training time can be told apart from set-up and evaluation."""

    def metric(self, step, name, value, split="train", epoch=None, tokens_seen=None):
        super().metric(step, name, value, split, epoch, tokens_seen)
        self.events[-1]["t"] = time.perf_counter()


def ours(fraction: float, max_length: int, device: str, steps: int) -> tuple[float, int, float]:
    """(seconds for the training steps between the first and the last logged step, steps timed, val accuracy).

    Logging every step would add a device sync per step on CUDA; one log per eighth of the epoch does not."""
    config = FinetuneConfig(base="minilm-l6", dataset="movies", label_fraction=fraction, epochs=1, batch_size=BATCH,
                            max_length=max_length, optim=OptimConfig(lr=LR), log_every=max(1, steps // 8),
                            eval_every=10**9,
                            eval_train_samples=0, probe_mlm=False, probe_drift=False, seed=SEED, device=device)
    logger = TimedLogger()
    with tempfile.TemporaryDirectory() as run_dir:
        run_finetune(config, Path(run_dir), logger)
    steps = [e for e in logger.events if e["type"] == "metric" and e["split"] == "train" and e["name"] == "loss"]
    accuracy = logger.values("accuracy", "validation")[-1]
    return steps[-1]["t"] - steps[0]["t"], steps[-1]["step"] - steps[0]["step"], accuracy


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1024, help="training examples (one epoch)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--skip-512", action="store_true", help="skip the padded-to-512 loop (slow on a CPU)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    train = load_split("movies", "train")
    labels = train["label"].to_numpy()
    fraction = args.examples / len(train)
    picked = stratified_subset(labels, fraction, SEED)
    texts, y = train["text"].iloc[picked].tolist(), labels[picked].tolist()
    steps = -(-len(texts) // BATCH)
    validation = load_split("movies", "validation")
    val_texts, val_y = validation["text"].tolist(), validation["label"].tolist()
    model_dir = resolve_checkpoint("minilm-l6")
    tokenizer = load_tokenizer("minilm-l6")
    real_tokens = sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"])
    tokens_per_step = real_tokens / steps

    rows = {}
    seconds, timed_steps, acc = ours(fraction, args.max_length, args.device, steps)
    rows["ptft (dynamic padding, length-grouped)"] = (seconds / timed_steps, acc)
    paddings = [128] if args.skip_512 else [128, 512]
    for pad in paddings:
        seconds, model, tok = baselines.padded_loop(model_dir, texts, y, BATCH, steps, pad, LR, SEED, args.device)
        acc = baselines.accuracy(model, tok, val_texts, val_y, args.max_length)
        rows[f"plain loop padded to {pad}"] = (seconds / steps, acc)
    seconds, model, tok = baselines.hf_trainer(model_dir, texts, y, BATCH, steps, args.max_length, LR, SEED,
                                            args.device)
    rows["transformers.Trainer (defaults)"] = (seconds / steps, baselines.accuracy(model, tok, val_texts, val_y,
                                                                                   args.max_length))

    ours_step = rows["ptft (dynamic padding, length-grouped)"][0]
    print(f"movies, {len(texts)} examples, {steps} steps of {BATCH}, max_length {args.max_length}, "
          f"{tokens_per_step:.0f} real tokens/step, torch threads {torch.get_num_threads()}")
    print(f"{'method':42s} {'samples/s':>10s} {'real tok/s':>11s} {'ptft speed-up':>14s} {'val acc':>8s}")
    result = {}
    for name, (step_s, acc) in rows.items():
        samples_s, tokens_s = BATCH / step_s, tokens_per_step / step_s
        print(f"{name:42s} {samples_s:10.1f} {tokens_s:11.0f} {step_s / ours_step:13.2f}x {acc:8.3f}")
        result[name] = {"samples_per_s": samples_s, "real_tokens_per_s": tokens_s,
                        "ptft_speedup": step_s / ours_step, "val_accuracy": acc}
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "finetune.json").write_text(json.dumps({"args": vars(args), "rows": result}, indent=2))
    return result


if __name__ == "__main__":
    main()
