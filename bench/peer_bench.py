"""ptft's fine-tune against the best-configured peers a user would pick, side by side in one process, 3 seeds.

Arms (MiniLM on a stratified share of `movies` train, one epoch, batch 32, max length 128, AdamW lr 5e-5 with
ptft's defaults for every arm: 6 % warm-up, weight decay 0.01, linear schedule, gradient clip 1.0):
- ptft (`run_finetune`) in float32 and, where the CPU has native bf16, in bf16; and in bf16 with PyTorch's own
  dropout instead of the cheap masks (`models.CPU_CHEAP_DROPOUT` off: what ptft was before dropout.py), or with
  layer norm in float32 (`models.CPU_BF16_LAYER_NORM` off: before layer_norm.py);
- `transformers.Trainer` with its default sampler; with `train_sampling_strategy="group_by_length"` (its docs'
  advice for speed); and grouped + `bf16=True` where the CPU has native bf16;
- the Accelerate "no trainer" loop (`run_glue_no_trainer.py`'s recipe), bf16 where native.

Every arm trains on the same examples (the seed's stratified subset, as ptft draws it), is timed over its training
steps only (set-up, tokenisation and evaluation excluded), and is scored by the same hand-written evaluation
(`baselines.accuracy`, float32, on the full `movies` test split) from its final weights. Seeds are interleaved
(every arm for seed 0, then seed 1, ...) so a drift of the machine falls on every arm alike. Also reported:
ptft's model FLOP rate (its own `model_tflops` log) as a share of the matmul peak it measured in its dtype.

    python -m bench.peer_bench [--seeds 3] [--fraction 0.5] [--epochs 1] [--arms "ptft bf16" ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench import baselines, models_switched
from bench.finetune_bench import BATCH, LR, TimedLogger
from ptft_core.config import FinetuneConfig, OptimConfig
from ptft_core.data import load_split
from ptft_core.models import native_bf16, resolve_checkpoint
from ptft_core.studies.stats import difference, mean_std
from ptft_core.training import run_finetune
from ptft_core.training.finetune import stratified_subset

MAX_LENGTH = 128
OPTIM = OptimConfig(lr=LR)  # ptft's defaults; the peers get the same warm-up and weight decay
TARGET_SPEEDUP = 1.5
TARGET_MFU = 0.5


def ptft_arm(precision: str, seed: int, fraction: float, epochs: int, steps: int, test: tuple[list, list],
             switches: dict[str, bool] | None = None) -> dict:
    """`switches`: `ptft_core.models` switches set for this run only (an arm of ptft as it was before a change)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    # pooling="cls": the peers' `AutoModelForSequenceClassification` head reads BERT's pooled [CLS], and the final
    # weights are scored through that same class; ptft's own default for MiniLM (mean) would be a different model,
    # and a plain `from_pretrained` of its checkpoint would read [CLS] through an untrained pooler.
    config = FinetuneConfig(base="minilm-l6", dataset="movies", label_fraction=fraction, epochs=epochs, pooling="cls",
                            batch_size=BATCH, max_length=MAX_LENGTH, optim=OPTIM, log_every=max(1, steps // 10),
                            eval_every=0, eval_count=1, eval_val_samples=64, eval_train_samples=0, probe_mlm=False,
                            probe_drift=False, seed=seed, device="cpu", precision=precision)
    logger = TimedLogger()
    with tempfile.TemporaryDirectory() as run_dir:
        with models_switched(switches or {}):
            run_finetune(config, Path(run_dir), logger)
        final = Path(run_dir) / "checkpoints" / "final"
        model = AutoModelForSequenceClassification.from_pretrained(final, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(final)
    steps = [e for e in logger.events if e["type"] == "metric" and e["split"] == "train" and e["name"] == "loss"]
    seconds = steps[-1]["t"] - steps[0]["t"]
    mfu = [e["value"] for e in logger.events if e["type"] == "metric" and e["name"] == "mfu"]
    tflops = [e["value"] for e in logger.events if e["type"] == "metric" and e["name"] == "model_tflops"]
    return {"steps_per_s": (steps[-1]["step"] - steps[0]["step"]) / seconds,
            "test_accuracy": baselines.accuracy(model, tokenizer, *test, MAX_LENGTH),
            "mfu": statistics.median(mfu[1:] or mfu), "model_tflops": statistics.median(tflops[1:] or tflops)}


def peer_arm(kind: str, bf16: bool, grouped: bool, seed: int, train: tuple[list, list], steps: int,
             test: tuple[list, list]) -> dict:
    common = dict(batch_size=BATCH, steps=steps, max_length=MAX_LENGTH, lr=LR, seed=seed,
                  warmup_ratio=OPTIM.warmup_ratio, weight_decay=OPTIM.weight_decay, bf16=bf16)
    model_dir = str(resolve_checkpoint("minilm-l6"))
    if kind == "trainer":
        seconds, model, tokenizer = baselines.hf_trainer(model_dir, *train, device="cpu", group_by_length=grouped,
                                                         **common)
    else:
        seconds, model, tokenizer = baselines.accelerate_loop(model_dir, *train, **common)
    return {"steps_per_s": steps / seconds, "test_accuracy": baselines.accuracy(model, tokenizer, *test, MAX_LENGTH)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=0.5, help="share of movies train (stratified)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--arms", nargs="+", help="run only these arms (names as printed)")
    args = parser.parse_args(argv)
    bf16 = native_bf16(torch.device("cpu"))
    arms = {"ptft float32": ("ptft", "float32"), "ptft bf16": ("ptft", "bf16"),
            "ptft bf16, torch dropout": ("ptft", "bf16", {"CPU_CHEAP_DROPOUT": False}),
            "ptft bf16, float32 layer norm": ("ptft", "bf16", {"CPU_BF16_LAYER_NORM": False}),
            "Trainer (defaults)": ("trainer", False, False), "Trainer, group_by_length": ("trainer", False, True),
            "Trainer, group_by_length, bf16": ("trainer", True, True), "Accelerate loop": ("accelerate", False, False),
            "Accelerate loop, bf16": ("accelerate", True, False)}
    if bf16:  # the accelerate loop in its better precision only (it has no length grouping to tell apart)
        arms.pop("Accelerate loop")
    else:
        arms = {name: arm for name, arm in arms.items() if "bf16" not in name}
    if args.arms:
        arms = {name: arm for name, arm in arms.items() if name in args.arms}
    frame = load_split("movies", "train")
    test_frame = load_split("movies", "test")
    test = (test_frame["text"].tolist(), test_frame["label"].tolist())
    labels = frame["label"].to_numpy()
    print(f"native bf16: {bf16}; torch threads {torch.get_num_threads()}; arms: {', '.join(arms)}")
    rows = []
    for seed in range(args.seeds):
        picked = stratified_subset(labels, args.fraction, seed)  # what ptft's label_fraction draws for this seed
        train = (frame["text"].iloc[picked].tolist(), labels[picked].tolist())
        steps = args.epochs * -(-len(picked) // BATCH)
        for name, arm in arms.items():
            started = time.perf_counter()
            if arm[0] == "ptft":
                row = ptft_arm(arm[1], seed, args.fraction, args.epochs, steps, test, *arm[2:])
            else:
                row = peer_arm(arm[0], arm[1], arm[2], seed, train, steps, test)
            rows.append({"arm": name, "seed": seed, "steps": steps, **row,
                         "wall_s": time.perf_counter() - started})
            print(json.dumps(rows[-1]))
    summary = summarise(rows, list(arms))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "peers-cpu.json").write_text(json.dumps({"args": vars(args), "native_bf16": bf16, "rows": rows,
                                                    "summary": summary}, indent=2))
    return summary


def summarise(rows: list[dict], arms: list[str]) -> dict:
    by = {a: [r for r in rows if r["arm"] == a] for a in arms}
    speed = {a: mean_std([r["steps_per_s"] for r in rs]) for a, rs in by.items()}
    acc = {a: mean_std([r["test_accuracy"] for r in rs]) for a, rs in by.items()}
    ptft = max((a for a in arms if a.startswith("ptft")), key=lambda a: speed[a].mean)
    peer = max((a for a in arms if not a.startswith("ptft")), key=lambda a: speed[a].mean)
    mfus = {a: [r["mfu"] for r in rs if "mfu" in r] for a, rs in by.items()}
    print(f"{'arm':34s} {'steps/s':>8s} {'vs best ptft':>12s} {'test acc (mean ± sd)':>22s} {'MFU':>5s}")
    for a in arms:
        print(f"{a:34s} {speed[a].mean:8.2f} {speed[ptft].mean / speed[a].mean:11.2f}x "
              f"{acc[a].mean * 100:14.2f} ± {acc[a].std * 100:.2f} "
              f"{statistics.mean(mfus[a]) if mfus[a] else float('nan'):5.0%}")
    d = difference(acc[ptft], acc[peer])
    mfu = statistics.mean(r["mfu"] for r in by[ptft])
    print(f"fastest ptft arm: {ptft}; fastest peer: {peer}: {speed[ptft].mean / speed[peer].mean:.2f}x "
          f"(target >= {TARGET_SPEEDUP}); accuracy {ptft} - {peer}: {d.text()}; ptft MFU {mfu:.0%} of its dtype's "
          f"measured matmul peak (target >= {TARGET_MFU:.0%})")
    return {"arms": {a: {"steps_per_s": speed[a].mean, "steps_per_s_sd": speed[a].std, "test_accuracy": acc[a].mean,
                         "test_accuracy_sd": acc[a].std} for a in arms},
            "fastest_ptft": ptft, "fastest_peer": peer, "speedup": speed[ptft].mean / speed[peer].mean,
            "accuracy_difference": d.as_dict(), "ptft_mfu": mfu,
            "mfu": {a: statistics.mean(m) for a, m in mfus.items() if m}}


if __name__ == "__main__":
    main()
