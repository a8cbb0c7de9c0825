"""bf16 against float32 on this CPU: the product's fine-tune (`run_finetune`, MiniLM on the full `movies` train
split, as in docs/benchmarks.md) in both precisions, seeds interleaved (float32, bf16, float32, bf16, ...) so
that drifts of the machine fall on both arms alike. Reports steps/s of the training steps (set-up and evaluations
excluded) and test accuracy per run, the mean accuracy difference with Welch's t-test, and whether it is within
the 0.5-point parity bar that `precision: auto` must clear before it takes bf16 on a CPU. `--arms` adds bf16 with
layer norm in float32 (`models.CPU_BF16_LAYER_NORM` off: bf16 before layer_norm.py), compared with each arm.

    python -m bench.precision_bench [--seeds 3] [--epochs 2] [--fraction 1.0]
                                    [--arms float32 bf16 "bf16, float32 layer norm"]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from bench import models_switched, save_result
from bench.finetune_bench import BATCH, LR, TimedLogger
from ptft_core.config import FinetuneConfig, OptimConfig
from ptft_core.models import native_bf16
from ptft_core.studies.stats import difference, mean_std
from ptft_core.training import run_finetune

PARITY_POINTS = 0.5


ARMS = {"float32": ("float32", True), "bf16": ("bf16", True), "bf16, float32 layer norm": ("bf16", False)}


def one_run(arm: str, seed: int, epochs: int, fraction: float) -> dict:
    precision, bf16_norm = ARMS[arm]
    config = FinetuneConfig(base="minilm-l6", dataset="movies", label_fraction=fraction, epochs=epochs,
                            batch_size=BATCH, max_length=128, optim=OptimConfig(lr=LR), log_every=20,
                            eval_every=0, eval_count=1, eval_val_samples=160, eval_train_samples=0, probe_mlm=False,
                            probe_drift=False, seed=seed, device="cpu", precision=precision)
    logger = TimedLogger()
    with tempfile.TemporaryDirectory() as run_dir, models_switched({"CPU_BF16_LAYER_NORM": bf16_norm}):
        run_finetune(config, Path(run_dir), logger)
    steps = [e for e in logger.events if e["type"] == "metric" and e["split"] == "train" and e["name"] == "loss"]
    seconds = steps[-1]["t"] - steps[0]["t"]
    return {"precision": arm, "seed": seed, "steps_per_s": (steps[-1]["step"] - steps[0]["step"]) / seconds,
            "test_accuracy": logger.values("accuracy", "test")[-1]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--fraction", type=float, default=1.0)
    parser.add_argument("--arms", nargs="+", default=["float32", "bf16"], choices=list(ARMS))
    args = parser.parse_args(argv)
    native = native_bf16(torch.device("cpu"))
    print(f"native bf16 on this CPU: {native}; torch threads {torch.get_num_threads()}")
    rows = []
    for seed in range(args.seeds):
        for arm in args.arms:
            rows.append(one_run(arm, seed, args.epochs, args.fraction))
            print(json.dumps(rows[-1]))
    by = {p: [r for r in rows if r["precision"] == p] for p in args.arms}
    acc = {p: mean_std([r["test_accuracy"] for r in rs]) for p, rs in by.items()}
    speed = {p: mean_std([r["steps_per_s"] for r in rs]) for p, rs in by.items()}
    first = args.arms[0]  # every other arm against the first (float32 by default)
    result = {"native_bf16": native, "args": vars(args), "rows": rows, "against": first, "arms": {}}
    for arm in args.arms:
        print(f"{arm:26s} steps/s {speed[arm].mean:.2f} ({speed[arm].mean / speed[first].mean:.2f}x {first}); "
              f"test accuracy {acc[arm].mean * 100:.2f} ± {acc[arm].std * 100:.2f}")
        if arm != first:
            d = difference(acc[arm], acc[first])
            result["arms"][arm] = {"speedup": speed[arm].mean / speed[first].mean, "accuracy_minus": d.as_dict(),
                                   "parity": abs(d.delta) * 100 <= PARITY_POINTS}
            print(f"  {arm} - {first}: {d.text()}; parity within {PARITY_POINTS} points: "
                  f"{result['arms'][arm]['parity']}")
    save_result("precision-cpu", result)
    return result


if __name__ == "__main__":
    main()
