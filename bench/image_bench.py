"""Image training steps/s: ptft's image loop (`run_image_pretrain`: bf16 autocast where the CPU computes it
natively, channels-last convolutions, crop augmentation from its own generator) against a plain PyTorch loop over
the same model, data, batches and augmentation, in float32 (what a user writes first) and in its best
configuration here (bf16 autocast and channels-last, as ptft). Arms interleaved, `--repeats` times each; medians.

Steps/s counts the training steps alone (ptft's own phase clock; the plain loops time their step loop), so the
evaluations ptft does around them do not count against it; each arm also reports its test accuracy after the
same steps, scored in float32.

    python -m bench.image_bench [--model resnet-small] [--dataset mnist] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ptft_core.config import ImagePretrainConfig
from ptft_core.data import dataset_info
from ptft_core.journal import MemoryLogger
from ptft_core.training import run_image_pretrain
from ptft_core.training.common import build_scheduler, generator
from ptft_core.training.images import score
from ptft_core.vision.data import Normalisation, augment, load_images
from ptft_core.vision.models import build_classifier


def ptft_arm(config: ImagePretrainConfig) -> tuple[float, float]:
    logger = MemoryLogger()
    with tempfile.TemporaryDirectory() as folder:
        run_image_pretrain(config, Path(folder), logger)
    last = {(e["split"], e["name"]): e["value"] for e in logger.events if e["type"] == "metric"}
    steps = max(e["step"] for e in logger.events if e["type"] == "metric")
    return steps / last["time", "train_s"], last["test", "accuracy"]


def plain_arm(config: ImagePretrainConfig, best: bool) -> tuple[float, float]:
    """The textbook loop: shuffle, slice, augment, normalise, forward, backward, clip, step; the same learning-rate
    schedule (warmup, linear decay) as ptft's, so both arms do the same optimisation."""
    size = config.image_size
    train, test = (load_images(config.dataset, split, size, 1) for split in ("train", "test"))
    normalise = Normalisation.of(train)
    model = build_classifier(config.model, 10, 1, seed=config.seed).train()
    layout = torch.channels_last if best else torch.contiguous_format
    model.to(memory_format=layout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    draws, steps = generator(config.seed), len(train) // config.batch_size * config.epochs
    scheduler = build_scheduler(optimizer, config.optim, steps)
    order = torch.randperm(len(train), generator=generator(config.seed))
    started = time.perf_counter()
    for step in range(steps):
        index = step % (len(train) // config.batch_size)
        rows = order[index * config.batch_size:(index + 1) * config.batch_size]
        pixels = normalise(augment(train.pixels[rows], config.augment, draws)).contiguous(memory_format=layout)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=best):
            loss = torch.nn.functional.cross_entropy(model(pixels).float(), train.labels[rows])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    return steps / seconds, score(model, test, normalise, torch.device("cpu"))["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet-small")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size = dataset_info(args.dataset).image_size
    config = ImagePretrainConfig(model=args.model, dataset=args.dataset, image_size=size, epochs=args.epochs,
                                 batch_size=64, eval_count=1)
    arms = {"ptft": lambda: ptft_arm(config), "plain float32": lambda: plain_arm(config, best=False),
            "plain bf16 + channels-last": lambda: plain_arm(config, best=True)}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in arms}
    for _ in range(args.repeats):
        for name, arm in arms.items():
            results[name].append(arm())
    summary = {name: {"steps_per_s": statistics.median(r[0] for r in runs),
                      "test_accuracy": statistics.median(r[1] for r in runs)} for name, runs in results.items()}
    base = summary["ptft"]["steps_per_s"]
    for name, row in summary.items():
        print(f"{name:28s} {row['steps_per_s']:7.1f} steps/s  (ptft {base / row['steps_per_s']:.2f}x as fast)  "
              f"test accuracy {row['test_accuracy']:.3f}")
    out = Path(__file__).parent / "results" / f"image_{args.model}_{args.dataset}.json"
    out.write_text(json.dumps({"args": vars(args), "runs": results, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
