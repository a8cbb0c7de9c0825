"""Do the cheap dropout masks change what pretraining learns? how_much_pretraining's own quick pretraining (tiny
RoFormer, masked LM on wiki + news, 1,500 steps) with the cheap masks and with PyTorch's dropout
(`models.CPU_CHEAP_DROPOUT`), per seed, in one process: the final validation loss of each, and the difference by
Welch's t-test. The runs go to temporary folders; the tokenizer is the lab home's cached one (the study's own),
trained and cached there if absent.

Why it exists: the study's rerun with the cheap masks ended its pretraining at 4.77 nats, 0.58 below the run
before it, with the same seed and recipe. One seed's loss at step 1,500 turned out to be a noisy quantity (this
bench, docs/studies.md).

    python -m bench.dropout_pretrain_bench [--seeds 3] [--steps 1500]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench import save_result
from ptft_core import models
from ptft_core.journal import MemoryLogger
from ptft_core.studies.how_much_pretraining import build
from ptft_core.studies.stats import difference, mean_std
from ptft_core.training import run_pretrain


def final_loss(seed: int, steps: int, cheap: bool) -> float:
    recipe = build("quick", False)[0].config
    config = recipe.__class__(**{**recipe.__dict__, "checkpoint_steps": [], "max_steps": steps, "seed": seed})
    models.CPU_CHEAP_DROPOUT = cheap
    logger = MemoryLogger()
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            run_pretrain(config, Path(run_dir) / "run", logger)
    finally:
        models.CPU_CHEAP_DROPOUT = True
    return logger.values("loss", "validation")[-1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args(argv)
    rows = []
    for seed in range(args.seeds):  # interleaved: the machine's drift falls on both arms alike
        for cheap in (True, False):
            rows.append({"seed": seed, "masks": "cheap" if cheap else "torch",
                         "validation_loss": final_loss(seed, args.steps, cheap)})
            print(json.dumps(rows[-1]), flush=True)
    cheap, torch_ = (mean_std([r["validation_loss"] for r in rows if r["masks"] == arm]) for arm in ("cheap", "torch"))
    gap = difference(cheap, torch_)
    print(f"final validation loss, cheap {cheap.mean:.3f} ± {cheap.std:.3f}, torch {torch_.mean:.3f} ± "
          f"{torch_.std:.3f} (n = {cheap.n} each); cheap - torch: {gap.as_dict()}")
    result = {"args": vars(args), "rows": rows, "difference": gap.as_dict()}
    save_result("dropout-pretrain", result)
    return result


if __name__ == "__main__":
    main()
