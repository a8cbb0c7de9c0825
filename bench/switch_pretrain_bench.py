"""Does one of ptft's CPU training switches change what pretraining learns? how_much_pretraining's own quick
pretraining (tiny RoFormer, masked LM on wiki + news, 1,500 steps) with the switch on (ptft's default) and off,
per seed, in one process: the final validation loss of each, and the difference by Welch's t-test. Switches:
`CPU_CHEAP_DROPOUT` (dropout.py's masks against PyTorch's dropout) and `CPU_BF16_LAYER_NORM` (layer_norm.py's bf16
norm against autocast's float32 one). The runs go to temporary folders; the tokenizer is the lab home's cached one
(the study's own), trained and cached there if absent.

Why it exists: the study's rerun with the cheap masks ended its pretraining at 4.77 nats, 0.58 below the run
before it, with the same seed and recipe. One seed's loss at step 1,500 turned out to be a noisy quantity (this
bench, docs/studies.md).

    python -m bench.switch_pretrain_bench [--switch CPU_CHEAP_DROPOUT] [--seeds 3] [--steps 1500]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench import models_switched, save_result
from ptft_core.journal import MemoryLogger
from ptft_core.studies.how_much_pretraining import build
from ptft_core.studies.stats import difference, mean_std
from ptft_core.training import run_pretrain

SWITCHES = ("CPU_CHEAP_DROPOUT", "CPU_BF16_LAYER_NORM")


def final_loss(seed: int, steps: int, switch: str, on: bool) -> float:
    recipe = build("quick", False)[0].config
    config = recipe.__class__(**{**recipe.__dict__, "checkpoint_steps": [], "max_steps": steps, "seed": seed})
    logger = MemoryLogger()
    with models_switched({switch: on}), tempfile.TemporaryDirectory() as run_dir:
        run_pretrain(config, Path(run_dir) / "run", logger)
    return logger.values("loss", "validation")[-1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--switch", default="CPU_CHEAP_DROPOUT", choices=SWITCHES)
    args = parser.parse_args(argv)
    rows = []
    for seed in range(args.seeds):  # interleaved: the machine's drift falls on both arms alike
        for on in (True, False):
            rows.append({"seed": seed, args.switch: on,
                         "validation_loss": final_loss(seed, args.steps, args.switch, on)})
            print(json.dumps(rows[-1]), flush=True)
    on, off = (mean_std([r["validation_loss"] for r in rows if r[args.switch] is arm]) for arm in (True, False))
    gap = difference(on, off)
    print(f"final validation loss, {args.switch} on {on.mean:.3f} ± {on.std:.3f}, off {off.mean:.3f} ± "
          f"{off.std:.3f} (n = {on.n} each); on - off: {gap.delta:+.3f} nats, 95 % CI [{gap.ci[0]:+.2f}, "
          f"{gap.ci[1]:+.2f}], Welch p = {gap.p:.2f}")
    result = {"args": vars(args), "rows": rows, "difference": gap.as_dict()}
    save_result(f"switch-pretrain-{args.switch.lower()}", result)
    return result


if __name__ == "__main__":
    main()
