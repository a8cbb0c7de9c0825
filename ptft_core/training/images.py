"""Supervised image pretraining: a ResNet or VGG from scratch on a labelled image set (vision/), the ImageNet
recipe at this lab's size. One loop, top to bottom: setup -> data -> optimize -> log / evaluate / checkpoint ->
test, as the language-model loop (pretrain.py) reads.

What it writes: train loss, lr, grad norm and images/s every `log_every` steps; validation loss, accuracy, macro
P/R/F1 and ECE at step 0 and `eval_count` times (eval_steps); at the end the test split's, scored with the last
weights; at step 0, the majority class's accuracy on the test split (split "reference"), the floor a classifier
must beat.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ptft_core.config import ConfigError, ImagePretrainConfig, eval_steps
from ptft_core.data import dataset_info, label_names
from ptft_core.journal import MetricLogger
from ptft_core.models import autocast, pick_device
from ptft_core.training.checkpoint import (
    latest_checkpoint,
    load_image_classifier,
    load_training_state,
    model_record,
    save_image_checkpoint,
)
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
from ptft_core.training.evaluate import classification_metrics
from ptft_core.vision.data import Images, Normalisation, augment, load_images
from ptft_core.vision.models import ImageClassifier, build_classifier

EVAL_BATCH = 256  # images per forward when scoring: no gradients, so larger batches than training's fit
# Convolutions run on channels-last tensors (NHWC): oneDNN's layout on a CPU, tensor cores' on a GPU. A training
# step of resnet-small on 64 MNIST images, this CPU: 51 -> 40 ms in float32, 26 -> 25 ms in bf16; vgg-small
# 14 -> 12 and 12 -> 7 ms (docs/benchmarks.md, section 14).
LAYOUT = torch.channels_last


def as_input(pixels: torch.Tensor, normalise: Normalisation, device: torch.device) -> torch.Tensor:
    """uint8 images -> the model's input: normalised float on `device`, channels last."""
    return normalise(pixels.to(device)).contiguous(memory_format=LAYOUT)


@torch.inference_mode()
def score(model: ImageClassifier, images: Images, normalise: Normalisation, device: torch.device) -> dict:
    """Loss, accuracy, macro P/R/F1 and ECE of `model` on `images`, in eval mode (batch norm's running
    statistics, no dropout); the caller sets the training phase again."""
    model.eval()
    logits = []
    for start in range(0, len(images), EVAL_BATCH):
        with autocast(device):
            logits.append(model(as_input(images.pixels[start:start + EVAL_BATCH], normalise, device)).float().cpu())
    return classification_metrics(torch.cat(logits).numpy(), images.labels.numpy())


def majority_accuracy(train: Images, test: Images) -> float:
    """The test accuracy of always answering the training split's most frequent class."""
    majority = int(np.bincount(train.labels.numpy()).argmax())
    return float((test.labels == majority).double().mean())


@in_precision
def run_image_pretrain(config: ImagePretrainConfig, run_dir: Path, logger: MetricLogger, *,
                       should_stop: Callable[[], bool] = lambda: False, resume: bool = False,
                       device: str | None = None) -> str:
    """Train; return "completed", or "cancelled" (after saving a checkpoint) as soon as `should_stop()`.

    `resume` continues from the newest `step-<N>` checkpoint: same weights, optimizer, schedule, RNG, data
    order and augmentation draws, and the metric series goes on from step N."""
    run_dir = Path(run_dir)
    device = pick_device(device or config.device)
    seed_everything(config.seed)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    clock = PhaseClock()

    # --- data and model
    with clock.phase("data"):
        info = dataset_info(config.dataset)
        size = config.image_size or info.image_size
        if not size:
            raise ConfigError(f"image_size: {config.dataset}'s images have several sizes; give the size to train at")
        channels = info.channels or 1
        train, validation, test = (load_images(config.dataset, split, size, channels)
                                   for split in ("train", "validation", "test"))
    if len(train) < config.batch_size:
        raise ConfigError(f"batch_size: {config.batch_size} is more than the {len(train)} training images of "
                          f"{config.dataset}")
    with clock.phase("load"):
        if checkpoint is not None:  # resuming: the weights and the normalisation come from the checkpoint
            model, record = load_image_classifier(checkpoint, config.dropout)
            normalise = Normalisation(tuple(record["mean"]), tuple(record["std"]))
        else:
            model = build_classifier(config.model, len(label_names(config.dataset)), channels, config.dropout,
                                     seed=config.seed)
            normalise = Normalisation.of(train)
            record = model_record(config.model, channels, label_names(config.dataset), size, normalise)
        model.to(device, memory_format=LAYOUT)
    if checkpoint is None:
        logger.event("note", message=f"{config.model} from scratch on {config.dataset}: {len(train):,} training "
                                     f"images at {size}x{size}, {channels} channel(s), "
                                     f"{sum(p.numel() for p in model.parameters()):,} parameters")

    # --- optimization
    steps_per_epoch = len(train) // config.batch_size  # the last, partial batch is dropped (batch norm needs >1)
    total = steps_per_epoch * config.epochs
    total = min(total, config.max_steps) if config.max_steps else total
    optimizer = build_optimizer(decay_groups(model.named_parameters(), config.optim.weight_decay, config.optim.lr),
                                config.optim)
    scheduler = build_scheduler(optimizer, config.optim, total)
    draws = generator(config.seed)  # the augmentation's own stream, so it repeats whatever else draws numbers
    step = 0
    if checkpoint is not None:
        state = load_training_state(checkpoint)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        draws.set_state(state["draws"])
        restore_rng_state(state["rng"])
        step = state["step"]

    def save(name: str, with_state: bool) -> None:
        state = ({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                  "draws": draws.get_state(), "rng": rng_state()} if with_state else None)
        with clock.phase("checkpoint"):
            save_image_checkpoint(run_dir, name, step, model, record, config, logger, state)

    def evaluate() -> None:
        with clock.phase("evaluate"):
            metrics = score(model, validation, normalise, device)
        clock.count("evaluate")
        log_metrics(logger, step, metrics, "validation", step / steps_per_epoch, step * config.batch_size)
        meter.restart_clock()

    evaluate_at = eval_steps(total, config.eval_every, config.eval_count, steps_per_epoch)

    def report_progress() -> None:
        left = {"train": total - step, "evaluate": sum(s > step for s in evaluate_at)}
        logger.event("progress", step=step, total_steps=total, **clock.pace(left))

    meter = TrainMeter(device)
    if step == 0:  # the starting point of every curve, and the floor a classifier must beat
        log_metrics(logger, 0, {"accuracy": majority_accuracy(train, test)}, "reference", 0.0)
        evaluate()
    order_epoch, order = -1, None
    model.train()  # the training phase starts here, and again after every evaluation
    with clock.phase("train"):
        while step < total:
            # The order is a function of (seed, epoch): a resumed run draws exactly the batches it would have.
            epoch, index = divmod(step, steps_per_epoch)
            if epoch != order_epoch:
                order_epoch = epoch
                order = torch.randperm(len(train), generator=generator(config.seed * 7919 + epoch))
            rows = order[index * config.batch_size:(index + 1) * config.batch_size]
            pixels = as_input(augment(train.pixels[rows], config.augment, draws), normalise, device)
            lr = optimizer.param_groups[0]["lr"]
            with autocast(device):
                loss = torch.nn.functional.cross_entropy(model(pixels).float(), train.labels[rows].to(device))
            loss.backward()
            grad_norm = optimizer_step(optimizer, scheduler, config.optim.grad_clip)
            step += 1
            clock.count("train")
            meter.update(loss, len(rows))

            if step % config.log_every == 0 or step == total:
                read = meter.read()
                log_metrics(logger, step, {"loss": read["loss"], "images_per_s": read["tokens_per_s"], "lr": lr,
                                           "grad_norm": grad_norm.item()}, "train", step / steps_per_epoch,
                            step * config.batch_size)
                report_progress()
            if step in evaluate_at:
                evaluate()
                model.train()
                report_progress()
            if step < total and should_stop():
                save(f"step-{step}", with_state=True)
                report_progress()  # the row shows where it stopped
                return "cancelled"
    save("final", with_state=False)
    with clock.phase("test"):
        metrics = score(model, test, normalise, device)
    log_metrics(logger, step, metrics, "test", step / steps_per_epoch)
    if not math.isfinite(metrics["loss"]):
        logger.event("note", message="the test loss is not finite: the run diverged (lower the learning rate)")
    clock.log(logger, step, step / steps_per_epoch)
    return "completed"
