"""What both training loops share: compute precision, seeding and RNG state, optimizers and schedules, batching."""

from __future__ import annotations

import contextlib
import functools
import math
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from ptft_core.config import OptimConfig
from ptft_core.journal import MetricLogger
from ptft_core.models import compute_precision, native_bf16, pick_device, resolve_precision

# --- precision -----------------------------------------------------------------------------------------------


def in_precision(trainer):
    """Run a trainer (`trainer(config, run_dir, logger, **kwargs)`) in its config's compute precision
    (models.resolve_precision), said once in its journal."""
    @functools.wraps(trainer)
    def run(config, run_dir, logger: MetricLogger, **kwargs):
        device = pick_device(kwargs.get("device") or config.device)
        dtype = resolve_precision(config.precision, device)
        bf16 = dtype == torch.bfloat16
        logger.event("note", message=f"computing in {'bf16 (autocast; float32 weights)' if bf16 else 'float32'} "
                                     f"on {device.type}" + (", emulated: this CPU has no native bf16, several "
                                                            "times slower" if bf16 and not native_bf16(device)
                                                            else ""))
        with compute_precision(dtype):
            return trainer(config, run_dir, logger, **kwargs)
    return run

# --- randomness ----------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The global RNG states (dropout draws from torch's), in types `torch.load(weights_only=True)` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- optimization --------------------------------------------------------------------------------------------


def decay_groups(named_params: Iterable[tuple[str, nn.Parameter]], weight_decay: float,
                 lr: float) -> list[dict]:
    """Two param groups at `lr`: matrices decay; biases and LayerNorm weights (every 1-d tensor) do not."""
    params = list(named_params)
    decay = [p for _, p in params if p.ndim >= 2]
    no_decay = [p for _, p in params if p.ndim < 2]
    return [group for group in ({"params": decay, "weight_decay": weight_decay, "lr": lr},
                                {"params": no_decay, "weight_decay": 0.0, "lr": lr}) if group["params"]]


def build_optimizer(param_groups: list[dict], optim: OptimConfig) -> torch.optim.Optimizer:
    """Every parameter goes in, trainable or not: a frozen one has no gradient, so the step skips it (weight
    decay included), and unfreezing it later needs no new optimizer.

    fused=True: one kernel for all parameters; on CPU, AdamW's step over a 30k-word embedding matrix runs about
    4x faster than the default per-tensor loop, which otherwise costs as much as a tiny model's backward pass.
    Adam's weight_decay is L2 added to the gradient (AdamW's is decoupled); both take the groups' values.
    """
    if optim.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=optim.lr, fused=True)
    if optim.optimizer == "adam":
        return torch.optim.Adam(param_groups, lr=optim.lr, fused=True)
    if optim.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=optim.lr, momentum=optim.momentum, fused=True)
    return torch.optim.Adagrad(param_groups, lr=optim.lr, fused=True)


def build_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over `warmup_ratio` of the steps, then constant, linear decay or cosine decay to 0.

    LambdaLR scales each group's own initial lr, so layer-wise lrs keep their ratios all along.
    """
    warmup = int(optim.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if optim.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if optim.schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def clip_gradients(params: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """The total gradient norm (a tensor: read it with .item() at log time only), clipped when max_norm > 0."""
    grads = [p for p in params if p.grad is not None]
    return torch.nn.utils.clip_grad_norm_(grads, max_norm if max_norm > 0 else math.inf)


def optimizer_step(optimizer: torch.optim.Optimizer, scheduler, grad_clip: float) -> torch.Tensor:
    """Clip, step, advance the schedule, drop the gradients; returns the pre-clipping gradient norm."""
    grad_norm = clip_gradients((p for group in optimizer.param_groups for p in group["params"]), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


# --- batching ------------------------------------------------------------------------------------------------


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, mega_batches: int = 50) -> list[list[int]]:
    """Batches of similar-length examples in a seeded random order.

    Shuffle, cut into mega-batches of `mega_batches` batches, sort each by length and cut it into batches,
    then shuffle the batch order: batches need little padding, yet every epoch (new seed) sees new mixtures.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    size = batch_size * mega_batches
    batches = []
    for start in range(0, len(order), size):
        mega = sorted(order[start:start + size], key=lambda i: -lengths[i])
        batches += [[int(i) for i in mega[b:b + batch_size]] for b in range(0, len(mega), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def pad_batch(sequences: list[list[int]], pad_id: int, multiple: int = 1,
              left: bool = False) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence of this batch (not to max_length): short batches cost little.

    `multiple` rounds that length up: on CUDA, lengths that are not a multiple of 8 push SDPA off its fast
    kernels (measured on an H100: 3x slower steps with MiniLM at batch 32); on a CPU it would only add work.
    `left`: pad before the text (XLNet, whose classifier reads the last position)."""
    longest = -(-max(len(s) for s in sequences) // multiple) * multiple
    input_ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        where = slice(longest - len(seq), longest) if left else slice(0, len(seq))
        input_ids[row, where] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, where] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


# --- logging -------------------------------------------------------------------------------------------------


class TrainMeter:
    """Mean train loss and throughput between two logs. The loss is summed as a tensor, so the only
    device-to-host sync is the `.item()` in `read()`, once per log interval."""

    def __init__(self, device: torch.device):
        self.device = device
        self.loss_sum, self.count = torch.zeros((), device=device), 0
        self.restart_clock()

    def update(self, loss: torch.Tensor, tokens: int) -> None:
        self.loss_sum += loss.detach().float()
        self.count += 1
        self.tokens += tokens

    def restart_clock(self) -> None:
        """Time spent evaluating or saving is not training throughput: call this after such work."""
        self.clock, self.tokens = time.perf_counter(), 0

    def read(self) -> dict[str, float]:
        metrics = {"loss": self.loss_sum.item() / max(self.count, 1),
                   "tokens_per_s": self.tokens / max(time.perf_counter() - self.clock, 1e-9)}
        self.loss_sum, self.count = torch.zeros((), device=self.device), 0
        self.restart_clock()
        return metrics


def log_metrics(logger: MetricLogger, step: int, metrics: dict[str, float], split: str, epoch: float,
                tokens_seen: int | None = None) -> None:
    for name, value in metrics.items():
        logger.metric(step, name, value, split, epoch, tokens_seen)


# --- time accounting -----------------------------------------------------------------


class PhaseClock:
    """Seconds a run spends per phase (load, data, train, evaluate, probes, checkpoint, test), so a study can
    say where its minutes go. Phases nest: time counts for the innermost one only (an evaluation inside the
    training loop is evaluation, not training)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.units: dict[str, float] = defaultdict(float)  # work done per phase, in its own unit (see `count`)
        self._stack: list[str] = []
        self._mark = time.perf_counter()

    def count(self, phase: str, units: float = 1.0) -> None:
        """`units` of `phase`'s work done: training steps, examples scored, probe measurements (each phase keeps
        one unit), so that `pace` can price the work left."""
        self.units[phase] += units

    def pace(self, left: dict[str, float]) -> dict[str, float]:
        """A progress event's pace fields, once a training step has been timed in this process:
        `train_steps_per_s` (training alone, evaluations and checkpoints apart) and `eta_s`, each phase's work
        `left` (in its `count` units) at that phase's own measured seconds per unit (a phase not measured yet
        counts nothing)."""
        self._switch()  # the phase running now, counted up to this moment
        if not self.units.get("train") or not self.seconds.get("train"):
            return {}
        eta = sum(n * self.seconds.get(p, 0.0) / self.units[p] for p, n in left.items() if self.units.get(p))
        return {"train_steps_per_s": round(self.units["train"] / self.seconds["train"], 3),
                "eta_s": round(max(eta, 0.0), 1)}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._switch()
        self._stack.append(name)
        try:
            yield
        finally:
            self._switch()
            self._stack.pop()

    def _switch(self) -> None:
        now = time.perf_counter()
        if self._stack:
            self.seconds[self._stack[-1]] += now - self._mark
        self._mark = now

    def log(self, logger: MetricLogger, step: int, epoch: float) -> None:
        """One metric per phase under split "time" (`<phase>_s`), logged once when the run ends."""
        log_metrics(logger, step, {f"{name}_s": round(s, 3) for name, s in self.seconds.items()}, "time", epoch)
