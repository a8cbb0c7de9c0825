"""Sequence-classification fine-tuning, optionally sequential: `dataset` first, then `then_dataset`.

Sequential fine-tuning gives every task its own head: each task is an `AutoModelForSequenceClassification` of
its own, and all of them share one encoder (the same modules). The first task's accuracy, measured all along
with its own head, then drops only as far as the shared encoder forgets, which is what is under study, and
label sets of different sizes or meanings need no special case. Replaying the first task trains through its
own head.

Setup (data, models, probes) -> one `fit_task` per task (the step loop, evaluations, early stopping) ->
test metrics with the best checkpoint, which becomes `checkpoints/final`.

With `ranks > 1` the same loop runs in every rank's process, each on its slice of every batch, gradients
averaged before each step (distributed.py); rank 0 alone writes checkpoints, and stop or resume-point decisions
are agreed between ranks before anyone acts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel

from ptft_core.config import PRESETS, ConfigError, FinetuneConfig, eval_steps, probe_steps, replay_sizes, task_steps
from ptft_core.data import label_names, load_split
from ptft_core.families import checkpoint_objective, load_classifier
from ptft_core.journal import MetricLogger
from ptft_core.models import (
    POOLING_ATTR,
    POOLING_NOTE,
    MaskedLMHead,
    MLMModel,
    autocast,
    classifier_sharing_encoder,
    compute_dtype,
    load_mlm_head,
    pick_device,
    resolve_checkpoint,
)
from ptft_core.rundir import RunDir
from ptft_core.training import distributed
from ptft_core.training.checkpoint import (
    latest_checkpoint,
    load_training_state,
    load_weights,
    promote_checkpoint,
    prune_step_checkpoints,
    save_checkpoint,
)
from ptft_core.training.common import (
    PhaseClock,
    TrainMeter,
    build_optimizer,
    build_scheduler,
    decay_groups,
    generator,
    in_precision,
    length_grouped_batches,
    log_metrics,
    optimizer_step,
    pad_batch,
    restore_rng_state,
    rng_state,
    seed_everything,
)
from ptft_core.training.evaluate import classification_metrics, log_reliability
from ptft_core.training.forgetting import (
    MLMReplay,
    Probes,
    build_probes,
    l2sp_anchor,
    l2sp_penalty,
    measure_probes,
)
from ptft_core.training.strategies import apply_strategy, head_parameters, strategy_param_groups, unfreeze_stage
from ptft_core.training.utilisation import Utilisation

EVAL_BATCH = 64
# The validation sample is drawn with this seed, not the run's: every seed of a comparison is scored on the same
# examples, so their curves differ by what they learned, not by which examples they were shown.
VALIDATION_SAMPLE_SEED = 0
# A resume point (weights + optimizer state) costs a second or more for MiniLM: epoch ends leave one, but at most
# one a minute after the first (an 85-example arm has an epoch every 6 steps).
RESUME_POINT_EVERY_S = 60.0


@dataclass
class Examples:
    """Tokenized, unpadded examples; batches are padded when drawn."""

    ids: list[list[int]]
    labels: np.ndarray
    left_padded: bool = False  # the tokenizer pads on the left (XLNet)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index) -> Examples:
        return Examples([self.ids[i] for i in index], self.labels[index], self.left_padded)

    def batch(self, index, pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
        multiple = 8 if device.type == "cuda" else 1
        batch = {**pad_batch([self.ids[i] for i in index], pad_id, multiple, self.left_padded),
                 "labels": torch.as_tensor(self.labels[index])}
        return {k: v.to(device) for k, v in batch.items()}


def tokenize_split(tokenizer, dataset: str, split: str, max_length: int,
                   pick: Callable[[np.ndarray], np.ndarray] | None = None) -> Examples:
    """A split's examples, tokenized; `pick(labels)` -> the rows to keep, chosen before tokenizing (a 10 % run
    tokenizes its 10 %: most of a short run's data time was tokenizing rows it never used)."""
    frame = load_split(dataset, split)
    if pick is not None:
        frame = frame.iloc[pick(frame["label"].to_numpy())]
    ids = tokenizer(frame["text"].tolist(), truncation=True, max_length=max_length)["input_ids"]
    return Examples(ids, frame["label"].to_numpy(dtype=np.int64), tokenizer.padding_side == "left")


def fixed_sample(size: int, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """A `pick` for `tokenize_split`: a fixed, stratified sample of `size` rows (all of them when `size` is 0 or
    not smaller than the split)."""
    def pick(labels: np.ndarray) -> np.ndarray:
        if not size or size >= len(labels):
            return np.arange(len(labels))
        return stratified_subset(labels, size / len(labels), seed)
    return pick


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """`fraction` of each class (at least one example of each), drawn with `seed`."""
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:max(1, round(fraction * np.sum(labels == c)))]
              for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


@dataclass
class Task:
    dataset: str
    model: PreTrainedModel  # shares its encoder with every other task's model
    train: Examples
    train_sample: Examples  # fixed sample of `train`, scored with the probes (overfitting curves)
    validation: Examples
    epochs: int
    batch_size: int  # current-task examples per batch; the rest of config.batch_size is replay
    n_replay: int
    steps_per_epoch: int
    total_steps: int
    eval_at: frozenset[int]  # task steps after which it evaluates (and once before its first step)
    probe_at: frozenset[int]  # task steps (0 included) whose evaluation also scores the train sample and probes


@dataclass
class Progress:
    """Where the run stands; saved in every step checkpoint."""

    step: int = 0
    task: int = 0  # index of the task being trained
    task_start: int = 0  # global step at which it started
    epoch_offset: float = 0.0  # epochs trained on earlier tasks: the metrics' epoch axis runs on across tasks
    best: float | None = None  # best validation value of the current task
    best_step: int = 0  # the step whose weights scored it (checkpoints/best)
    bad_evals: int = 0  # evaluations since it last improved
    tokens: int = 0  # training tokens so far, every rank's (what the FLOPs estimate counts)


class BestWeights:
    """The current task's best weights, kept in memory: a copy costs milliseconds where writing a checkpoint costs
    0.1-0.2 s (MiniLM), and a short run finds a new best at most of its evaluations. `checkpoints/best` is written
    where a run must find it on disk: with every resume point (so a resumed run's best matches the progress it
    restores) and when the task ends."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] | None = None
        self.step = 0
        self.written = True

    def keep(self, model: torch.nn.Module, step: int) -> None:
        copies: dict[tuple, torch.Tensor] = {}  # tied weights (one tensor under two names) stay one copy
        self.state = {}
        for name, tensor in model.state_dict().items():
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
            if key not in copies:
                copies[key] = tensor.detach().to("cpu", copy=True)
            self.state[name] = copies[key]
        self.step, self.written = step, False

    def write(self, run: Run, model: torch.nn.Module) -> None:
        """Write checkpoints/best (rank 0), unless it already holds these weights."""
        if self.written or self.state is None:
            return
        with run.clock.phase("checkpoint"):
            if run.ranks.main:  # a copy of the dict: save_pretrained pops what it writes
                save_checkpoint(run.run_dir, "best", self.step, model, run.tokenizer, run.config, run.logger,
                                mlm_head=run.mlm_head, announce=False, state_dict=dict(self.state))
        self.written = True

    def load_into(self, model: torch.nn.Module, run_dir: Path) -> None:
        """The best weights into `model`: from memory, or from disk when they were kept before a resume."""
        if self.state is None:
            load_weights(model, RunDir(run_dir).checkpoint("best"))
        else:
            model.load_state_dict(self.state)


@dataclass
class Run:
    """What a fine-tuning run sets up once and every step reads."""

    config: FinetuneConfig
    run_dir: Path
    logger: MetricLogger
    device: torch.device
    tokenizer: object
    tasks: list[Task]
    test: Examples  # the last task's test split, scored whole with its best weights at the end
    probes: Probes
    mlm_head: MaskedLMHead | None
    mlm_replay: MLMReplay | None
    anchor: dict[str, torch.Tensor] | None  # L2-SP's starting weights
    should_stop: Callable[[], bool]
    clock: PhaseClock
    ranks: distributed.Ranks
    best: BestWeights = field(default_factory=BestWeights)  # the current task's

    @property
    def encoder(self) -> torch.nn.Module:
        return self.tasks[0].model.base_model


# --- setup ---------------------------------------------------------------------------------------------------


def build_task(config: FinetuneConfig, index: int, dataset: str, model: PreTrainedModel, tokenizer) -> Task:
    train = tokenize_split(tokenizer, dataset, "train", config.max_length,
                           lambda labels: stratified_subset(labels, config.label_fraction, config.seed))
    sample = np.random.default_rng(config.seed).permutation(len(train))[:config.eval_train_samples]
    # Replay takes part of each batch: from the previous task (second task only) or MLM blocks (any task).
    replaying = config.replay_source == "mlm" or index > 0
    batch_size, n_replay = replay_sizes(config.batch_size, config.replay_fraction if replaying else 0.0)
    steps_per_epoch, total = task_steps(config, index, len(train))
    epochs = config.epochs if index == 0 else config.then_epochs
    validation = tokenize_split(tokenizer, dataset, "validation", config.max_length,
                                fixed_sample(config.eval_val_samples, VALIDATION_SAMPLE_SEED))
    eval_at = eval_steps(total, config.eval_every, config.eval_count, steps_per_epoch)
    return Task(dataset, model, train, train.subset(np.sort(sample)), validation, epochs, batch_size, n_replay,
                steps_per_epoch, total, eval_at, probe_steps(eval_at, config.probe_every))


def setup(config: FinetuneConfig, run_dir: Path, logger: MetricLogger, device: torch.device,
          should_stop: Callable[[], bool], clock: PhaseClock,
          ranks: distributed.Ranks = distributed.ONE_PROCESS) -> Run:
    if config.replay_fraction and config.replay_source == "task" and config.then_dataset is None:
        raise ConfigError("replay_source: 'task' replays the first task into the second; set then_dataset")
    with clock.phase("load"):
        model, tokenizer = load_classifier(config.base, label_names(config.dataset), config.scratch, config.dropout,
                                           config.family, config.dataset, config.pooling)
        model.to(device)
        logger.event("note", message=f"pooling: {POOLING_NOTE[getattr(model.config, POOLING_ATTR)]}"
                                     + (" (auto)" if config.pooling == "auto" else ""))
        second = (classifier_sharing_encoder(model, label_names(config.then_dataset))
                  if config.then_dataset is not None else None)
    with clock.phase("data"):
        tasks = [build_task(config, 0, config.dataset, model, tokenizer)]
        if second is not None:
            tasks.append(build_task(config, 1, config.then_dataset, second, tokenizer))
        test = tokenize_split(tokenizer, tasks[-1].dataset, "test", config.max_length)

    encoder = model.base_model
    mlm_head, causal = None, False
    if not config.scratch and config.base not in PRESETS:
        path = resolve_checkpoint(config.base)
        mlm_head = load_mlm_head(path, encoder)
        causal = checkpoint_objective(path) == "clm" and model.config.tie_word_embeddings
    if mlm_head is not None:
        mlm_head.to(device).requires_grad_(False)  # a fixed reader of the encoder, never trained here
    mlm_replay = None
    if config.replay_fraction and config.replay_source == "mlm":
        if mlm_head is None:
            raise ConfigError(f"replay_source: 'mlm' needs a base with an MLM head (a pretraining run); "
                              f"{config.base!r} has none")
        mlm_replay = MLMReplay(config, tokenizer, MLMModel(encoder, mlm_head))
    # Both are taken from the starting encoder, before any step.
    with clock.phase("probes"):
        probes = build_probes(config, encoder, tokenizer, mlm_head, device, logger, causal)
    anchor = l2sp_anchor(encoder) if config.l2sp else None
    return Run(config, Path(run_dir), logger, device, tokenizer, tasks, test, probes, mlm_head, mlm_replay,
               anchor, should_stop, clock, ranks)


# --- evaluation ----------------------------------------------------------------------------------------------


def classify(model: PreTrainedModel, examples: Examples, pad_id: int, device: torch.device) -> dict[str, float]:
    """Metrics of `model` on `examples` (predict_logits)."""
    return classification_metrics(*predict_logits(model, examples, pad_id, device))


@torch.inference_mode()
def predict_logits(model: PreTrainedModel, examples: Examples, pad_id: int,
                   device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) of `model` on `examples`, batched by length (little padding) in eval mode, which it leaves
    set: the training loop sets the training mode after each evaluation (`train_mode`), never by restoring one."""
    model.eval()
    order = np.argsort([len(ids) for ids in examples.ids], kind="stable")
    logits = []
    for start in range(0, len(order), EVAL_BATCH):
        batch = examples.batch(order[start:start + EVAL_BATCH], pad_id, device)
        with autocast(device):
            logits.append(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float())
    return torch.cat(logits).cpu().numpy(), examples.labels[order]


def evaluate(run: Run, progress: Progress, task: Task, epoch: float) -> bool:
    """Log validation, train-sample and forgetting metrics; keep the best checkpoint; True: stop early.

    The evaluation before a task's first step is the starting point of its curves, not a candidate for the
    best checkpoint (that would hand back the untrained model). At the start of a later task (its head
    untrained) only the forgetting metrics are logged: the earlier task's accuracy with its best weights. The train
    sample and the probes are scored on their own, sparser schedule (`task.probe_at`, config.probe_every)."""
    config, step, pad_id = run.config, progress.step, run.tokenizer.pad_token_id
    task_start = step == progress.task_start
    probing = step - progress.task_start in task.probe_at
    forgetting = {}
    if probing:
        with run.clock.phase("probes"):
            forgetting = measure_probes(run.probes, run.encoder, run.device)
        run.clock.count("probes")
    with run.clock.phase("evaluate"):
        if progress.task > 0:
            first = classify(run.tasks[0].model, run.tasks[0].validation, pad_id, run.device)
            run.clock.count("evaluate", len(run.tasks[0].validation))
            forgetting |= {"prev_task_accuracy": first["accuracy"], "prev_task_loss": first["loss"]}
        log_metrics(run.logger, step, forgetting, "forgetting", epoch)
        if task_start and progress.task > 0:
            return False
        validation = classify(task.model, task.validation, pad_id, run.device)
        run.clock.count("evaluate", len(task.validation))
        log_metrics(run.logger, step, validation, "validation", epoch)
        if probing and len(task.train_sample):
            sample = classify(task.model, task.train_sample, pad_id, run.device)
            run.clock.count("evaluate", len(task.train_sample))
            # The train split's "loss" is the running training loss; the sample's (no dropout) is named apart.
            sample["eval_loss"] = sample.pop("loss")
            log_metrics(run.logger, step, sample, "train", epoch)

    if task_start:
        return False
    value = validation[config.early_stopping_metric]
    lower_is_better = config.early_stopping_metric == "loss"
    if progress.best is None or (value < progress.best if lower_is_better else value > progress.best):
        progress.best, progress.best_step, progress.bad_evals = value, step, 0
        with run.clock.phase("checkpoint"):
            run.best.keep(task.model, step)
        return False
    progress.bad_evals += 1
    return 0 < config.early_stopping_patience <= progress.bad_evals


def work_left(run: Run, progress: Progress) -> dict[str, float]:
    """What the run has still to do, in its phase clock's units: training steps, examples to score (validation
    samples, train samples, the earlier task's validation, the test split) and probe measurements. Early stopping
    can only shorten it."""
    steps = examples = probes = 0
    for index in range(progress.task, len(run.tasks)):
        task = run.tasks[index]
        done = progress.step - progress.task_start if index == progress.task else -1  # -1: step 0 still ahead
        evals = [s for s in (0, *task.eval_at) if s > done]
        steps += task.total_steps - max(done, 0)
        per_eval = len(task.validation) + (len(run.tasks[0].validation) if index > 0 else 0)
        examples += sum(per_eval + (len(task.train_sample) if s in task.probe_at else 0) for s in evals)
        probes += sum(s in task.probe_at for s in evals)
    return {"train": steps, "evaluate": examples + len(run.test), "probes": probes}


# --- training ------------------------------------------------------------------------------------------------


def train_mode(task: Task, replayed: Task | None) -> None:
    """The training phase, set where it starts: at a task's start and after every evaluation (which leaves what
    it read in eval mode). Dropout is on (at the config's `dropout`, or the base's own) in every module a step
    trains through: the task's model (the shared encoder and its head) and, when the earlier task is replayed,
    that task's head. Never inherited: `from_pretrained` hands a model over in eval mode, `from_config` in train
    mode, and a pretrained base must train exactly as a scratch one does. Frozen layers keep train mode too (a
    strategy freezes gradients, not dropout), as in every `Trainer` run; the MLM head read by replay and by the
    probe has no dropout."""
    task.model.train()
    if replayed is not None:
        replayed.model.train()



def fit_task(run: Run, progress: Progress, restored: dict | None) -> str:
    """Train the current task to its end (or early stop), then load its best weights back; "cancelled" when
    `should_stop()` interrupts it (after saving a step checkpoint to resume from)."""
    config, logger, device = run.config, run.logger, run.device
    task = run.tasks[progress.task]
    replayed = run.tasks[progress.task - 1] if progress.task > 0 and config.replay_source == "task" else None
    param_groups = strategy_param_groups(task.model, config)
    if replayed is not None and task.n_replay:  # the earlier task's head learns from its replayed examples
        param_groups += decay_groups(head_parameters(replayed.model), config.optim.weight_decay, config.optim.lr)
    optimizer = build_optimizer(param_groups, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, task.total_steps)
    replay_rng = generator(config.seed * 7919 + progress.task)
    if restored is not None:
        optimizer.load_state_dict(restored["optimizer"])
        scheduler.load_state_dict(restored["scheduler"])
        replay_rng.set_state(restored["replay_rng"])
        restore_rng_state(restored["rng"])

    saved_at = -math.inf  # the first epoch end always leaves a resume point

    def save_resume_point() -> None:
        nonlocal saved_at
        saved_at = time.monotonic()
        if not run.ranks.main:
            return
        state = {"progress": asdict(progress), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "replay_rng": replay_rng.get_state(), "rng": rng_state(),
                 "heads": [{name: p.detach() for name, p in head_parameters(t.model)}
                           for t in run.tasks[:progress.task]]}
        run.best.write(run, task.model)  # before the resume point whose progress names it
        with run.clock.phase("checkpoint"):
            save_checkpoint(run.run_dir, f"step-{progress.step}", progress.step, task.model, run.tokenizer,
                            config, logger, state, run.mlm_head)
            prune_step_checkpoints(run.run_dir, keep=1)  # only the newest is a resume point worth its disk space

    pad_id = run.tokenizer.pad_token_id
    lengths = [len(ids) for ids in task.train.ids]
    share = task.batch_size / (task.batch_size + task.n_replay)  # of the loss, as of the batch
    total_steps = sum(t.total_steps for t in run.tasks)
    meter = TrainMeter(device)
    usage = (Utilisation(task.model, device, compute_dtype(), round(float(np.mean(lengths))))
             if run.ranks.main else None)
    stage, trainable, order_epoch, order = None, None, -1, []
    task_step = progress.step - progress.task_start
    epoch_float = progress.epoch_offset + task_step / task.steps_per_epoch
    def report_progress() -> None:
        logger.event("progress", step=progress.step, total_steps=total_steps,
                     **run.clock.pace(work_left(run, progress)))

    report_progress()  # the total, before the step-0 evaluation
    if task_step == 0 and restored is None:  # the starting point of every curve: step 0 of each task
        evaluate(run, progress, task, epoch_float)
        meter.restart_clock()
    train_mode(task, replayed)
    while task_step < task.total_steps:
        epoch, index = divmod(task_step, task.steps_per_epoch)
        if epoch != order_epoch:  # a function of (seed, task, epoch): resuming replays the same order
            order_epoch = epoch
            order = length_grouped_batches(lengths, task.batch_size, config.seed * 7919 + 101 * progress.task + epoch)
        if unfreeze_stage(config, epoch, task_step) != stage:
            stage = unfreeze_stage(config, epoch, task_step)
            if (count := apply_strategy(task.model, config, stage)) != trainable:
                trainable = count
                logger.metric(progress.step, "trainable_params", count, "train", epoch_float)

        shard = distributed.shard(order[index], run.ranks)
        batch = task.train.batch(shard, pad_id, device)
        lr = optimizer.param_groups[-1]["lr"]  # the head's: under discriminative lrs, the top group's
        with autocast(device, training=True):
            task_loss = task.model(**batch).loss
            loss = share * task_loss
            if replayed is not None and task.n_replay:
                picked = torch.randint(len(replayed.train), (task.n_replay,), generator=replay_rng).numpy()
                loss = loss + (1 - share) * replayed.model(**replayed.train.batch(picked, pad_id, device)).loss
            elif run.mlm_replay is not None:
                loss = loss + (1 - share) * run.mlm_replay.loss(task.n_replay, replay_rng, device)
            if run.anchor is not None:
                loss = loss + config.l2sp * l2sp_penalty(run.encoder, run.anchor)
        loss.backward()
        distributed.average_gradients((p for g in optimizer.param_groups for p in g["params"]), run.ranks)
        grad_norm = optimizer_step(optimizer, scheduler, config.optim.grad_clip)
        progress.step += 1
        task_step += 1
        run.clock.count("train")
        meter.update(task_loss, sum(lengths[i] for i in shard))
        progress.tokens += sum(lengths[i] for i in shard) * run.ranks.world

        epoch_float = progress.epoch_offset + task_step / task.steps_per_epoch
        done = task_step == task.total_steps
        epoch_end = task_step % task.steps_per_epoch == 0 or done
        if progress.step % config.log_every == 0 or done:
            train = {**meter.read(), "lr": lr, "grad_norm": grad_norm.item()}
            log_metrics(logger, progress.step, train, "train", epoch_float)
            if usage is not None:
                log_metrics(logger, progress.step, usage.read(train["tokens_per_s"], progress.tokens), "device",
                            epoch_float)
        if progress.step % config.log_every == 0 or done or task_step == 1:  # the first step: a pace to show
            report_progress()
        if task_step in task.eval_at:
            stop_early = evaluate(run, progress, task, epoch_float)
            train_mode(task, replayed)
            meter.restart_clock()
            report_progress()  # the ETA with this evaluation's cost counted
            if stop_early:
                logger.event("early_stop", step=progress.step, best=progress.best)
                break
        if done:
            break
        # One agreed answer per step: a stop reaches the ranks at different steps, and time differs per process.
        save_due, stop = distributed.agree(
            run.ranks, epoch_end and time.monotonic() - saved_at >= RESUME_POINT_EVERY_S, run.should_stop())
        if save_due:
            save_resume_point()
            meter.restart_clock()
        if stop:
            save_resume_point()
            report_progress()  # the row shows where it stopped
            return "cancelled"

    run.best.write(run, task.model)  # the final checkpoint is this task's best (the last task's)
    run.best.load_into(task.model, run.run_dir)
    run.best = BestWeights()
    progress.task += 1
    progress.task_start, progress.epoch_offset = progress.step, epoch_float
    progress.best, progress.bad_evals = None, 0  # the next task tracks its own best (best_step stays: final's)
    return "completed"


@in_precision
def run_finetune(config: FinetuneConfig, run_dir: Path, logger: MetricLogger, *,
                 should_stop: Callable[[], bool] = lambda: False, resume: bool = False,
                 device: str | None = None) -> str:
    """Fine-tune; return "completed", or "cancelled" (after saving a checkpoint) as soon as `should_stop()`.

    Test metrics (split "test") come from the best checkpoint on the validation metric, which becomes
    `checkpoints/final`. `resume` continues from the newest step checkpoint, the metric series included.
    """
    ranks = distributed.from_env()
    device = distributed.start(ranks, pick_device(device or config.device))
    seed_everything(config.seed)  # the same seed on every rank: the same initial weights, heads included
    clock = PhaseClock()
    run = setup(config, run_dir, logger, device, should_stop, clock, ranks)
    progress, restored = Progress(), None
    checkpoint = latest_checkpoint(run.run_dir) if resume else None
    if checkpoint is not None:
        restored = load_training_state(checkpoint)
        progress = Progress(**restored["progress"])
        load_weights(run.tasks[progress.task].model, checkpoint)
        for task, head in zip(run.tasks, restored["heads"], strict=False):
            task.model.load_state_dict(head, strict=False)

    while progress.task < len(run.tasks):
        with clock.phase("train"):
            if fit_task(run, progress, restored) == "cancelled":
                return "cancelled"
        restored = None

    last = run.tasks[-1]  # its best weights are loaded
    with clock.phase("test"):
        logits, labels = predict_logits(last.model, run.test, run.tokenizer.pad_token_id, device)
    log_metrics(logger, progress.step, classification_metrics(logits, labels), "test", progress.epoch_offset)
    log_reliability(logger, logits, labels)
    if ranks.parallel:  # 0 when the ranks' weights are the same, as averaged gradients keep them
        logger.metric(progress.step, "rank_weight_spread", distributed.weight_spread(last.model, ranks), "time")
    distributed.barrier(ranks)
    if ranks.main:
        with clock.phase("checkpoint"):
            promote_checkpoint(run.run_dir, "best", "final", progress.best_step, logger)
            prune_step_checkpoints(run.run_dir, keep=0)  # resume points only; a finished run needs none
    clock.log(logger, progress.step, progress.epoch_offset)
    return "completed"
