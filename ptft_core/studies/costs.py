"""Time estimates of a plan: the cost model (`COSTS`), measured on this project's 2-core CPU machine, times each
planned run's step and evaluation counts; plus what the estimates and reports read about a dataset (its split
sizes and mean text length, its majority-class rate). Nothing here imports torch.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ptft_core.config import (
    BUILTIN_CHECKPOINT,
    CPU_AUTO_BF16,
    EvaluateConfig,
    FinetuneConfig,
    ImageFinetuneConfig,
    ImagePretrainConfig,
    PretrainConfig,
    eval_steps,
    probe_steps,
    task_steps,
)
from ptft_core.data import dataset_info

if TYPE_CHECKING:
    from ptft_core.studies.templates import PlannedRun


@dataclass(frozen=True)
class Cost:
    """Seconds on this project's 2-core CPU (2 torch threads, float32) for one model family.

    step_s = step_fixed_s + train_s_per_token * tokens in the batch (padded); evaluation (no gradient) costs
    eval_s_per_token per token. Measured with `run_finetune` / `run_pretrain` and a forward/backward loop of
    the real models (batch 16 and 32 at 32 and 48 tokens; pretraining at batch 32 x block 128) on an otherwise
    idle machine. On a shared machine (other users' jobs) runs take 2-4x longer.
    """

    step_fixed_s: float  # optimizer step over all parameters, python overhead
    train_s_per_token: float  # forward + backward
    eval_s_per_token: float  # forward only


# Recalibrated 2026-12-06 against six quick studies run at one slot (`python -m bench.study_costs_bench`): the
# runs took a median 0.48x (MiniLM fine-tunes, 42 runs), 0.55x (fine-tunes of run checkpoints, 29) and 0.67-0.78x
# (pretraining) of the 2026-12-01 costs, now that evaluation scores a fixed sample and a warm worker holds the
# imports. The MiniLM and tiny costs below are the old ones times 0.5 and 0.6; the others, never measured in a
# study, keep their ratio to MiniLM.
COSTS: dict[str, Cost] = {
    # 22.7M parameters. 2026-12-01 through the worker (its phase timing, split "time"): 0.52 s a step at batch
    # 16 x ~29 tokens, evaluation 73 examples/s; 2026-12-06 in the studies: about 0.3 s a step.
    BUILTIN_CHECKPOINT: Cost(0.095, 0.35e-3, 0.23e-3),
    "tiny": Cost(0.012, 0.033e-3, 0.010e-3),  # 4.4M (mostly embeddings)
    "mini": Cost(0.025, 0.11e-3, 0.04e-3),
    "small": Cost(0.05, 0.34e-3, 0.125e-3),
    "base": Cost(0.75, 2.15e-3, 0.75e-3),
}
# Pretraining steps cost more than COSTS says (packed blocks, no padding to skip; the MLM head's projection over the
# vocabulary): the quick studies' pretraining runs took 1.1-2.1x (tiny, 3 runs) and 1.4x (MiniLM) of its estimate.
PRETRAIN_FACTOR = 1.5
# A run's fixed cost: the fork server's warm start (no imports: about 1-3 s to the first step before evaluation),
# model load, tokenisation, the final checkpoint, and the engine's gap to the next run. 8.0 counted cold imports;
# against the eight quick studies of 2026-12-07 (`python -m bench.study_costs_bench --slots 1`) 8.0 estimated
# 1.14-2.1x their walls, 5.0 estimates 0.99-1.76x (short-run studies most over: their evaluate runs and 27-step
# fine-tunes cost less than COSTS says; 3.0 fit them better but put pretraining_objective 11 % under).
PROCESS_START_S = 5.0
TOKENIZER_TRAIN_S = 10.0  # WordPiece training on a scratch run's corpus (wiki + news)
PADDING_FACTOR = 1.15  # length-grouped batches still pad a little
# Two one-thread CPU slots against one two-thread slot on the 2-core machine: 1.2x the throughput (measured on the
# quick studies: pretraining_helps 12.0 min with 2 slots against 14.9 min of run time; finetune_strategy 11.2
# against 14.9). More slots than cores add nothing.
CPU_SLOTS_SPEEDUP = 1.2
# bf16 autocast on a CPU that computes it natively, against float32 (COSTS): a MiniLM fine-tune's steps 1.41-1.60x
# (bench.precision_bench), tiny pretraining 1.46x (bench.pretrain_levers_bench); evaluations autocast too. The quick
# studies' wall times fell 1.45x (pretraining_helps, 250-step MiniLM runs) to 1.01x (how_much_pretraining, tiny
# models) on 2026-12-06 (docs/studies.md): the tiny families gain less, which this one factor overstates.
CPU_BF16_SPEEDUP = 1.4
GPU_SPEEDUP = 30.0  # rough: one GPU against the 2-core CPU, for the full preset's order of magnitude
# Used when the data room cannot be asked (rows per split, mean tokens per text); the built-ins' real values.
DATASET_FALLBACK = {
    "movies": ({"train": 8483, "validation": 1061, "test": 1061}, 24.9),
    "amazon": ({"train": 2966, "validation": 371, "test": 371}, 20.5),
    "nyt": ({"train": 4152, "validation": 519, "test": 519}, 22.9),
    "tweets": ({"train": 3360, "validation": 420, "test": 420}, 20.9),
}


def dataset_shape(name: str) -> tuple[dict[str, int], float]:
    """(rows per split, mean tokens per text) of a labelled dataset."""
    try:

        info = dataset_info(name)
        mean = getattr(info, "mean_tokens", None) or DATASET_FALLBACK.get(name, ({}, 30.0))[1]
        return dict(info.splits), float(mean)
    except Exception:  # not prepared, or a user dataset without the numbers: the built-ins' own values
        return DATASET_FALLBACK.get(name, ({"train": 5000, "validation": 500, "test": 500}, 30.0))


def finetune_seconds(config: FinetuneConfig, family: str) -> float:
    cost = COSTS[family]
    total = PROCESS_START_S
    tasks = [config.dataset, *([config.then_dataset] if config.then_dataset else [])]
    first_val = 0
    for index, dataset in enumerate(tasks):
        splits, mean_tokens = dataset_shape(dataset)
        tokens = min(config.max_length, mean_tokens + 2) * PADDING_FACTOR
        examples = max(1, round(config.label_fraction * splits.get("train", 0)))
        steps_per_epoch, steps = task_steps(config, index, examples)
        eval_at = eval_steps(steps, config.eval_every, config.eval_count, steps_per_epoch)
        evals, probes = len(eval_at) + 1, len(probe_steps(eval_at, config.probe_every))  # + step 0
        validation = min(splits.get("validation", 0), config.eval_val_samples or math.inf)
        eval_tokens = (validation + (first_val if index else 0)) * tokens
        probe_tokens = min(config.eval_train_samples, examples) * tokens
        if config.probe_drift or config.probe_mlm:
            probe_tokens += config.probe_size * config.max_length * (config.probe_drift + config.probe_mlm)
        total += steps * (cost.step_fixed_s + cost.train_s_per_token * config.batch_size * tokens)
        total += (evals * eval_tokens + probes * probe_tokens) * cost.eval_s_per_token
        first_val = validation
        if index == len(tasks) - 1:
            total += splits.get("test", 0) * tokens * cost.eval_s_per_token
    return total


def evaluate_seconds(config: EvaluateConfig, family: str, max_length: int) -> float:
    """A cross-domain evaluation: one process, each dataset's test split scored once at `max_length`."""
    total = PROCESS_START_S
    for dataset in config.datasets:
        splits, mean_tokens = dataset_shape(dataset)
        total += splits.get("test", 0) * min(max_length, mean_tokens + 2) * COSTS[family].eval_s_per_token
    return total


def pretrain_seconds(config: PretrainConfig, family: str) -> float:
    cost = COSTS[family]
    tokens = config.batch_size * config.block_size
    total = PROCESS_START_S + (TOKENIZER_TRAIN_S if config.from_scratch else 0.0)
    # A head-only run (freeze_encoder) does the encoder's forward only: about a third of forward + backward.
    train_share = 0.35 if config.freeze_encoder else 1.0
    total += PRETRAIN_FACTOR * config.max_steps * (cost.step_fixed_s + train_share * cost.train_s_per_token * tokens)
    evals = len(eval_steps(config.max_steps, config.eval_every, config.eval_count)) + 1
    total += evals * config.eval_blocks * config.block_size * cost.eval_s_per_token
    return total


@dataclass(frozen=True)
class ImageCost:
    """Seconds on this project's 2-core CPU (float32, channels-last) for one image preset at 28 pixels; a run at
    another size scales by its pixel count. step_s = step_fixed_s + train_s_per_image * batch; scoring costs
    eval_s_per_image. Measured 2026-12-07 from one-seed pilots of the image transfer study (resnet-small, batch
    16 and 64 on mnist, in bf16, times CPU_BF16_SPEEDUP)."""

    step_fixed_s: float
    train_s_per_image: float
    eval_s_per_image: float


IMAGE_COSTS = {"resnet-small": ImageCost(0.002, 0.6e-3, 0.2e-3)}  # the preset the study trains; others: its cost
# What a strategy's backward pass costs against full fine-tuning's (a linear probe: the head's alone; the bottom
# stages frozen: no weight gradients below the top): the pilots' wall times, 500 steps each.
IMAGE_TRAIN_SHARE = {"linear_probe": 0.4, "freeze_bottom": 0.7}
# An image run forked from the fork server imports nothing; its start is the model, the decoding of its splits'
# PNGs (mnist: 5,000 of them) and the journal: 1-2 s in the pilots, against a text run's tokenising.
IMAGE_START_S = 2.0


def image_seconds(config: ImagePretrainConfig | ImageFinetuneConfig, train_images: int, eval_images: int,
                  test_images: int) -> float:
    """An image run on `train_images` training images (after its label fraction), scoring `eval_images` at each
    evaluation (validation and, for a fine-tune of a pretrained base, the source task's) and `test_images` once."""
    cost = IMAGE_COSTS.get(getattr(config, "model", None) or "resnet-small", IMAGE_COSTS["resnet-small"])
    scale = ((config.image_size or 28) / 28) ** 2
    steps_per_epoch = max(1, train_images // config.batch_size)
    steps = steps_per_epoch * config.epochs
    steps = min(steps, config.max_steps) if config.max_steps else steps
    share = IMAGE_TRAIN_SHARE.get(getattr(config, "strategy", "full"), 1.0)
    train = steps * (cost.step_fixed_s + share * scale * cost.train_s_per_image * config.batch_size)
    evals = len(eval_steps(steps, config.eval_every, config.eval_count, steps_per_epoch)) + 1
    return IMAGE_START_S + train + scale * cost.eval_s_per_image * (evals * eval_images + test_images)


def image_rows(dataset: str, classes: list[str], split: str) -> int:
    """Rows of a split of `dataset`, only those of `classes` when some are named."""
    try:
        balance = dataset_info(dataset).label_balance.get(split) or {}
    except Exception:  # not prepared: the built-ins' even classes
        return 0
    return sum(n for name, n in balance.items() if not classes or name in classes)


@functools.cache  # the CPU does not change under a running process; the Studies page estimates on every rerun
def cpu_native_bf16() -> bool:
    """Whether this machine's CPU computes bf16 in hardware (AVX512-BF16 or AMX), as /proc/cpuinfo says: the
    worker asks torch (`models.native_bf16`); this side does not import it, and a test holds the two to agree."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux: no estimate of a speed-up it cannot see
        return False
    flags = next((set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), set())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def cpu_computes_bf16(precision: str, native_bf16: bool) -> bool:
    """Whether a CPU run with this `precision` computes in bf16 at native speed (models.resolve_precision's rule;
    bf16 asked for on a CPU without it is emulated, and no faster)."""
    return native_bf16 and (precision == "bf16" or (precision == "auto" and CPU_AUTO_BF16))


def run_seconds(runs: list[PlannedRun], device: str = "cpu", native_bf16: bool | None = None) -> dict[str, float]:
    """Estimated seconds per planned run (GPU: compute divided by a rough GPU_SPEEDUP, process start kept; a CPU
    run in native bf16, by CPU_BF16_SPEEDUP). `native_bf16`: whether the CPU has it (None: this machine's)."""
    native_bf16 = cpu_native_bf16() if native_bf16 is None else native_bf16
    out: dict[str, float] = {}
    family_of: dict[str, str] = {}  # planned key -> the model family its checkpoints are
    configs = {run.key: run.config for run in runs}
    for run in runs:
        c = run.config
        inherited = family_of.get(run.base_from.key) if run.base_from else None
        if isinstance(c, ImagePretrainConfig | ImageFinetuneConfig):
            family = "image"
            source = configs.get(run.base_from.key) if run.base_from else None
            source_eval = (image_rows(source.dataset, source.classes, "validation")
                           if source is not None and not getattr(c, "scratch", False) else 0)
            train = round(getattr(c, "label_fraction", 1.0) * image_rows(c.dataset, c.classes, "train"))
            seconds = image_seconds(c, train, image_rows(c.dataset, c.classes, "validation") + source_eval,
                                    image_rows(c.dataset, c.classes, "test"))
        elif isinstance(c, PretrainConfig):
            family = c.model if c.model in COSTS else inherited or BUILTIN_CHECKPOINT
            seconds = pretrain_seconds(c, family)
        elif isinstance(c, EvaluateConfig):
            family = inherited or BUILTIN_CHECKPOINT
            trained = configs.get(run.base_from.key) if run.base_from else None
            seconds = evaluate_seconds(c, family, c.max_length or getattr(trained, "max_length", 128))
        else:
            family = inherited or (c.base if c.base in COSTS else BUILTIN_CHECKPOINT)
            seconds = finetune_seconds(c, family)
        family_of[run.key] = family
        start = IMAGE_START_S if family == "image" else PROCESS_START_S
        if device == "cuda":
            seconds = start + (seconds - start) / GPU_SPEEDUP
        elif cpu_computes_bf16(getattr(c, "precision", "float32"), native_bf16):  # evaluate runs: float32
            seconds = start + (seconds - start) / CPU_BF16_SPEEDUP
        out[run.key] = seconds
    return out


def estimate_seconds(runs: list[PlannedRun], slots: int = 1, device: str = "cpu",
                     native_bf16: bool | None = None) -> float:
    """Wall-clock seconds for the whole plan on `slots` concurrent slots of `device`. CPU slots share the
    machine's cores, so more of them speed a plan up by CPU_SLOTS_SPEEDUP, not by their number."""
    speedup = (CPU_SLOTS_SPEEDUP if slots > 1 else 1.0) if device == "cpu" else max(1, slots)
    return sum(run_seconds(runs, device, native_bf16).values()) / speedup


def dataset_chance(name: str) -> float | None:
    """The majority class's share of a dataset's test split: the accuracy of always guessing it."""
    try:

        balance = dataset_info(name).label_balance.get("test") or {}
    except Exception:
        return None
    total = sum(balance.values())
    return max(balance.values()) / total if total else None


def dataset_classes(name: str) -> int | None:
    """How many labels a dataset has (None when the data room cannot say)."""
    try:

        return len(dataset_info(name).label_names) or None
    except Exception:
        return None
