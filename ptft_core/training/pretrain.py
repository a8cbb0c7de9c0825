"""Language-model pretraining: a preset of any family from scratch (with its own tokenizer learned from the
corpus) or further pretraining of a checkpoint, with the family's objective (masked LM, causal LM, span
corruption; lm_data.py). One loop, top to bottom: setup -> data -> optimize -> log / evaluate / checkpoint.

With `ranks > 1` every rank draws the same batch and the same masks (one generator, as one process would), keeps
its share of the rows and averages its gradients with the others' (distributed.py); rank 0 alone evaluates,
journals and checkpoints, and a stop request is agreed between ranks before any of them acts on it."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from ptft_core.config import OBJECTIVE_TITLE, ConfigError, PretrainConfig, eval_steps
from ptft_core.data import load_texts
from ptft_core.families import OBJECTIVE_NOTE, LanguageModel, load_lm, scratch_lm, train_tokenizer
from ptft_core.journal import MetricLogger
from ptft_core.models import autocast, compute_dtype, pick_device
from ptft_core.training import distributed
from ptft_core.training.checkpoint import latest_checkpoint, load_training_state, save_checkpoint
from ptft_core.training.common import (
    PhaseClock,
    TrainMeter,
    build_optimizer,
    build_scheduler,
    decay_groups,
    generator,
    in_precision,
    log_metrics,
    optimizer_step,
    restore_rng_state,
    rng_state,
    seed_everything,
)
from ptft_core.training.lm_data import eval_loss, fixed_batches, objective_batch, text_blocks
from ptft_core.training.reference import reference_losses
from ptft_core.training.utilisation import Utilisation

EVAL_MASK_SEED = 1234  # one masking of the validation blocks for every evaluation of every run


def build_model(config: PretrainConfig, checkpoint: Path | None,
                train_texts: list[str]) -> tuple[LanguageModel, object, str]:
    """(model, tokenizer, objective): from the run's own checkpoint when resuming, a family's preset, or the
    checkpoint to continue."""
    if checkpoint is not None:  # resuming: weights, head and tokenizer all come from the checkpoint
        return load_lm(str(checkpoint))
    if config.from_scratch:
        tokenizer = train_tokenizer(config.family, train_texts, config.vocab_size)
        return scratch_lm(config.family, config.model, tokenizer), tokenizer, config.objective
    model, tokenizer, objective = load_lm(config.model)
    if config.objective not in ("auto", objective):
        raise ConfigError(f"objective: {config.model} continues with {objective} (its architecture), not "
                          f"{config.objective}")
    return model, tokenizer, objective


@in_precision
def run_pretrain(config: PretrainConfig, run_dir: Path, logger: MetricLogger, *,
                 should_stop: Callable[[], bool] = lambda: False, resume: bool = False,
                 device: str | None = None) -> str:
    """Train; return "completed", or "cancelled" (after saving a checkpoint) as soon as `should_stop()`.

    `resume` continues from the newest `step-<N>` checkpoint: same weights, optimizer, schedule, RNG and data
    order, and the metric series goes on from step N.
    """
    run_dir = Path(run_dir)
    ranks = distributed.from_env()
    device = distributed.start(ranks, pick_device(device or config.device))
    seed_everything(config.seed)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    clock = PhaseClock()

    # --- data and model
    with clock.phase("load"):
        train_texts = load_texts(config.corpus, "train")
        model, tokenizer, objective = build_model(config, checkpoint, train_texts)
        model.to(device)
    if checkpoint is None:  # say what trains, once
        note = OBJECTIVE_NOTE.get(getattr(model.saved.config, "model_type", ""), "")
        logger.event("note", message=f"{type(model.saved).__name__}, {OBJECTIVE_TITLE[objective]}"
                                     + (f" ({note})" if note else ""))
    if config.freeze_encoder and objective != "mlm":
        raise ConfigError(f"freeze_encoder: {config.model} trains with {objective}; only masked LM has a head "
                          "of its own to train")
    if config.freeze_encoder:  # only the head learns: a fixed encoder gets a reader
        model.encoder.requires_grad_(False)

    def train_mode() -> None:
        """The training phase, set where it starts (before the first step, after every evaluation, which leaves
        the model in eval mode): dropout on, except in a frozen encoder, a fixed feature extractor."""
        model.train()
        if config.freeze_encoder:
            model.encoder.eval()
    with clock.phase("data"):
        train_blocks = text_blocks(tokenizer, train_texts, config.block_size)
        val_blocks = text_blocks(tokenizer, load_texts(config.corpus, "validation"), config.block_size)
        val_blocks = val_blocks[:config.eval_blocks]
    batches_per_epoch = len(train_blocks) // config.batch_size
    if batches_per_epoch == 0 or len(val_blocks) == 0:
        raise ConfigError(f"corpus {config.corpus} is too small for block_size={config.block_size}, "
                          f"batch_size={config.batch_size}: {len(train_blocks)} train and "
                          f"{len(val_blocks)} validation blocks")
    val_batches = fixed_batches(objective, val_blocks, config.batch_size, tokenizer, config.mask_prob,
                                EVAL_MASK_SEED)
    if checkpoint is None and ranks.main:  # what word frequencies alone score on the same validation targets
        with clock.phase("data"):
            reference = reference_losses(objective, train_blocks, val_batches, len(tokenizer),
                                         tokenizer.all_special_ids)
        log_metrics(logger, 0, reference, "reference", 0.0, 0)

    # --- optimization
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    optimizer = build_optimizer(decay_groups(trainable, config.optim.weight_decay, config.optim.lr), config.optim)
    scheduler = build_scheduler(optimizer, config.optim, config.max_steps)
    masking = generator(config.seed)  # its own stream, so dropout draws do not shift which tokens get masked
    step = 0
    if checkpoint is not None:
        state = load_training_state(checkpoint)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        masking.set_state(state["masking"])
        restore_rng_state(state["rng"])
        step = state["step"]

    def save(name: str) -> None:
        if not ranks.main:
            return
        state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "masking": masking.get_state(), "rng": rng_state()}
        with clock.phase("checkpoint"):
            save_checkpoint(run_dir, name, step, model.saved, tokenizer, config, logger, state, model.head)

    def evaluate() -> None:
        if not ranks.main:  # the same numbers on every rank: one evaluates, the others go on to the next step
            return
        with clock.phase("evaluate"):
            val_loss = eval_loss(model, val_batches, device)
        clock.count("evaluate")
        log_metrics(logger, step, {"loss": val_loss, "perplexity": math.exp(min(val_loss, 50.0))},
                    "validation", step / batches_per_epoch, tokens_seen)
        meter.restart_clock()

    tokens_seen = step * config.batch_size * config.block_size
    meter = TrainMeter(device)
    usage = Utilisation(model, device, compute_dtype(), config.block_size) if ranks.main else None
    evaluate_at = eval_steps(config.max_steps, config.eval_every, config.eval_count)

    def report_progress() -> None:  # with the pace: the steps and evaluations left at their measured costs
        left = {"train": config.max_steps - step, "evaluate": sum(s > step for s in evaluate_at)}
        logger.event("progress", step=step, total_steps=config.max_steps, **clock.pace(left))

    if step == 0:  # the starting point of the loss curve
        evaluate()
    order_epoch, order = -1, None
    train_mode()
    with clock.phase("train"):
        while step < config.max_steps:
            # The data order is a function of (seed, epoch): a resumed run draws exactly the batches it would have.
            epoch, index = divmod(step, batches_per_epoch)
            if epoch != order_epoch:
                order_epoch = epoch
                order = torch.randperm(len(train_blocks), generator=generator(config.seed * 7919 + epoch))
            blocks = train_blocks[order[index * config.batch_size:(index + 1) * config.batch_size]]
            inputs, labels = objective_batch(objective, blocks, tokenizer, config.mask_prob, masking)
            mine = distributed.shard(range(len(blocks)), ranks)  # this rank's rows of the batch
            lr = optimizer.param_groups[0]["lr"]
            with autocast(device, training=True):
                loss = model(inputs[mine].to(device), labels[mine].to(device))
            loss.backward()
            distributed.average_gradients(model.parameters(), ranks)
            grad_norm = optimizer_step(optimizer, scheduler, config.optim.grad_clip)
            step += 1
            clock.count("train")
            tokens_seen += blocks.numel()
            meter.update(loss, len(mine) * config.block_size)  # this rank's tokens

            epoch_float = step / batches_per_epoch
            if step % config.log_every == 0 or step == config.max_steps:
                train = {**meter.read(), "lr": lr, "grad_norm": grad_norm.item()}
                log_metrics(logger, step, train, "train", epoch_float, tokens_seen)
                if usage is not None:
                    log_metrics(logger, step, usage.read(train["tokens_per_s"], tokens_seen), "device", epoch_float,
                                tokens_seen)
                report_progress()
            if step in evaluate_at:
                evaluate()
                train_mode()
                report_progress()
            if step in config.checkpoint_steps:
                save(f"step-{step}")
                meter.restart_clock()
            (stop,) = distributed.agree(ranks, step < config.max_steps and should_stop())
            if stop:
                save(f"step-{step}")
                report_progress()  # the row shows where it stopped
                return "cancelled"
    if ranks.parallel:  # 0 when the ranks' weights are the same, as averaged gradients keep them
        logger.metric(step, "rank_weight_spread", distributed.weight_spread(model, ranks), "time")
    save("final")
    clock.log(logger, step, step / batches_per_epoch)
    return "completed"
