"""Which attention kernel a CPU fine-tuning step should use: the flash kernel for CPU (PyTorch's own choice)
against the math kernel, in bf16 and float32, in one process, the same run config each time.

The fine-tune is `run_finetune` itself (MiniLM, `movies`, a quarter of the labels: 67 steps of 32); steps/s from
the logged training steps, test accuracy from the run. In bf16 the kernel of the training step is the product's
setting (`models.CPU_BF16_TRAINING_ATTENTION`, math since this bench), set per arm; in float32 the product leaves
the choice to PyTorch, and the bench forces it around the whole run.

    python -m bench.attention_bench [--repeats 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from pathlib import Path

from torch.nn.attention import SDPBackend, sdpa_kernel

from bench.finetune_bench import TimedLogger
from bench.peer_bench import BATCH, MAX_LENGTH, OPTIM
from ptft_core import models
from ptft_core.config import FinetuneConfig


def one_run(precision: str, math: bool) -> dict:
    from ptft_core.training import run_finetune

    config = FinetuneConfig(base="minilm-l6", dataset="movies", label_fraction=0.25, epochs=1, batch_size=BATCH,
                            max_length=MAX_LENGTH, optim=OPTIM, log_every=6, eval_every=0, eval_count=1,
                            eval_val_samples=64, eval_train_samples=0, probe_mlm=False, probe_drift=False, seed=0,
                            device="cpu", precision=precision)
    logger = TimedLogger()
    models.CPU_BF16_TRAINING_ATTENTION = ("MATH",) if math else ("FLASH_ATTENTION",)
    kernel = sdpa_kernel([SDPBackend.MATH if math else SDPBackend.FLASH_ATTENTION])
    with tempfile.TemporaryDirectory() as run_dir, kernel if precision == "float32" else contextlib.nullcontext():
        run_finetune(config, Path(run_dir), logger)
    steps = [e for e in logger.events if e["type"] == "metric" and e["split"] == "train" and e["name"] == "loss"]
    test = [e["value"] for e in logger.events
            if e["type"] == "metric" and e["split"] == "test" and e["name"] == "accuracy"]
    return {"precision": precision, "kernel": "math" if math else "flash",
            "steps_per_s": (steps[-1]["step"] - steps[0]["step"]) / (steps[-1]["t"] - steps[0]["t"]),
            "test_accuracy": test[-1]}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    rows = []
    for _ in range(args.repeats):  # interleaved: the machine's drift hits every arm alike
        for precision in ("bf16", "float32"):
            for math in (False, True):
                rows.append(one_run(precision, math))
                print(json.dumps(rows[-1]), flush=True)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "attention-cpu.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
