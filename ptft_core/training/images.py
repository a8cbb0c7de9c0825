"""Image runs: supervised pretraining of a ResNet or VGG from scratch on a source image set (the ImageNet recipe
at this lab's size), and fine-tuning of its checkpoint on a target set with the text side's strategies. Two setups
(`setup_pretrain`, `setup_finetune`), one loop (`fit`), top to bottom: data -> model -> optimize -> log /
evaluate / checkpoint -> test, as the language-model loop (pretrain.py) reads.

What a run writes: train loss, lr, grad norm and images/s every `log_every` steps; validation loss, accuracy, macro
P/R/F1 and ECE at step 0 and `eval_count` times (eval_steps); at the end the test split's, scored with the last
weights (a pretraining) or the best validation accuracy's (a fine-tune, which also stops early after
`early_stopping_patience` evaluations without a new best); at step 0, the majority class's accuracy on the test
split (split "reference"), the floor a classifier must beat. A fine-tune of a pretrained base also scores the source
task at every evaluation, with the base's own head on the current backbone (split "forgetting": prev_task_accuracy,
prev_task_loss, as the text side's sequential runs), and may replay source images (`replay_fraction`) and pull the
backbone toward its start (`l2sp`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ptft_core import paths
from ptft_core.config import (
    IMAGE_MODELS,
    ConfigError,
    ImageFinetuneConfig,
    ImagePretrainConfig,
    eval_steps,
    replay_sizes,
)
from ptft_core.data import dataset_info, label_names
from ptft_core.data.images import kept_names
from ptft_core.journal import MetricLogger
from ptft_core.models import autocast, pick_device
from ptft_core.rundir import IMAGE_MODEL_FILE, RunDir
from ptft_core.specs import check_classes, run_reference
from ptft_core.training import distributed
from ptft_core.training.checkpoint import (
    CONFIG_FILE,
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
from ptft_core.training.evaluate import classification_metrics, log_reliability
from ptft_core.training.finetune import stratified_subset
from ptft_core.training.forgetting import l2sp_anchor, l2sp_penalty
from ptft_core.training.strategies import apply_strategy, strategy_param_groups, unfreeze_stage
from ptft_core.vision.data import Images, Normalisation, augment, load_images
from ptft_core.vision.models import ImageClassifier, build_classifier
from ptft_core.vision.pretrained import hub_folder, is_timm_folder, load_timm_resnet

EVAL_BATCH = 256  # images per forward when scoring: no gradients, so larger batches than training's fit
# Convolutions run on channels-last tensors (NHWC): oneDNN's layout on a CPU, tensor cores' on a GPU. A training
# step of resnet-small on 64 MNIST images, this CPU: 51 -> 40 ms in float32, 26 -> 25 ms in bf16; vgg-small
# 14 -> 12 and 12 -> 7 ms (docs/benchmarks.md, section 14).
LAYOUT = torch.channels_last


def as_input(pixels: torch.Tensor, normalise: Normalisation, device: torch.device) -> torch.Tensor:
    """uint8 images -> the model's input: normalised float on `device`, channels last."""
    return normalise(pixels.to(device)).contiguous(memory_format=LAYOUT)


def score(model: ImageClassifier, images: Images, normalise: Normalisation, device: torch.device) -> dict:
    """Loss, accuracy, macro P/R/F1 and ECE of `model` on `images` (image_logits)."""
    return classification_metrics(image_logits(model, images, normalise, device), images.labels.numpy())


@torch.inference_mode()
def image_logits(model: ImageClassifier, images: Images, normalise: Normalisation, device: torch.device) -> np.ndarray:
    """`model`'s logits on `images`, in eval mode (batch norm's running statistics, no dropout); the caller sets
    the training phase again."""
    model.eval()
    logits = []
    for start in range(0, len(images), EVAL_BATCH):
        with autocast(device):
            logits.append(model(as_input(images.pixels[start:start + EVAL_BATCH], normalise, device)).float().cpu())
    return torch.cat(logits).numpy()


def majority_accuracy(train: Images, test: Images) -> float:
    """The test accuracy of always answering the training split's most frequent class."""
    majority = int(np.bincount(train.labels.numpy()).argmax())
    return float((test.labels == majority).double().mean())


def train_mode(model: ImageClassifier) -> None:
    """The training phase, set where it starts (before the first step, after every evaluation and every change of
    what trains): batch norm and dropout in training mode, except in frozen layers, which stay fixed feature
    extractors (their batch-norm statistics are the pretrained ones: a frozen layer is bit-identical)."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d) and not module.weight.requires_grad:
            module.eval()


class SourceView(nn.Module):
    """The current backbone read by the base's own (frozen) source head: how well the source task is still done."""

    def __init__(self, model: ImageClassifier, head: nn.Linear) -> None:
        super().__init__()
        self.model, self.head = model, head

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.model.features(pixels))


@dataclass
class Source:
    """A pretrained base's source task: its head (frozen), its validation split (forgetting) and its training
    split (replay), at the fine-tune's size."""

    dataset: str
    head: nn.Linear
    train: Images
    validation: Images


@dataclass
class Best:
    """A fine-tune's best validation accuracy so far and its weights: the ones its final checkpoint and its test
    score get (as a text fine-tune's). Kept in memory (resnet18 is 45 MB, a copy milliseconds) and saved with every
    resume point. The evaluation before the first step is not a candidate: it would hand back the untrained head."""

    accuracy: float = -math.inf
    step: int = 0
    bad_evals: int = 0  # evaluations since it last improved (early stopping)
    weights: dict[str, torch.Tensor] | None = None

    def update(self, accuracy: float, step: int, model: nn.Module) -> None:
        if accuracy > self.accuracy:
            self.accuracy, self.step, self.bad_evals = accuracy, step, 0
            self.weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            self.bad_evals += 1

    def state(self) -> dict:
        return {"accuracy": self.accuracy, "step": self.step, "bad_evals": self.bad_evals, "weights": self.weights}


@dataclass
class ImageRun:
    """What the loop trains: the model and its record, the target's splits at the run's size and normalisation,
    and, for a fine-tune of a pretrained base, its source task and L2-SP anchor."""

    config: ImagePretrainConfig | ImageFinetuneConfig
    model: ImageClassifier
    record: dict
    normalise: Normalisation
    train: Images
    validation: Images
    test: Images
    source: Source | None = None
    anchor: dict[str, torch.Tensor] | None = None

    @property
    def finetuning(self) -> bool:
        return isinstance(self.config, ImageFinetuneConfig)


def load_splits(dataset: str, size: int, channels: int, classes: list[str]) -> tuple[Images, Images, Images]:
    return tuple(load_images(dataset, split, size, channels, classes) for split in ("train", "validation", "test"))


def class_names(dataset: str, classes: list[str]) -> list[str]:
    """The label names a run on `classes` of `dataset` has (all of them when none is named), checked."""
    check_classes(dataset, classes)
    return kept_names(label_names(dataset), classes)


def setup_pretrain(config: ImagePretrainConfig, checkpoint: Path | None, clock: PhaseClock) -> ImageRun:
    names = class_names(config.dataset, config.classes)
    with clock.phase("data"):
        info = dataset_info(config.dataset)
        size = config.image_size or info.image_size
        if not size:
            raise ConfigError(f"image_size: {config.dataset}'s images have several sizes; give the size to train at")
        channels = info.channels or 1
        train, validation, test = load_splits(config.dataset, size, channels, config.classes)
    with clock.phase("load"):
        if checkpoint is not None:  # resuming: the weights and the normalisation come from the checkpoint
            model, record = load_image_classifier(checkpoint, config.dropout)
            normalise = Normalisation(tuple(record["mean"]), tuple(record["std"]))
        else:
            model = build_classifier(config.model, len(names), channels, config.dropout, seed=config.seed)
            normalise = Normalisation.of(train)
            record = model_record(config.model, channels, names, size, normalise)
    return ImageRun(config, model, record, normalise, train, validation, test)


def base_folder(spec: str) -> Path:
    """The checkpoint folder of an image base: run:<id>[/<checkpoint>], a folder holding an image model or a timm
    checkpoint, or a Hugging Face hub id of a timm checkpoint (downloaded, or found in the cache offline)."""
    reference = run_reference(spec)
    folder = Path(spec).expanduser()
    if reference is None and not folder.is_dir() and not spec.startswith((".", "/", "~")):
        return hub_folder(spec)
    if reference is not None:
        run_id, name = reference
        run = RunDir(paths.run_dir(run_id))
        if not run.has_checkpoint(name):
            raise ConfigError(f"base: {spec}: no checkpoint {name!r} in run {run_id!r}; available: "
                              f"{', '.join(run.saved_checkpoints()) or 'none (is the run finished?)'}")
        folder = run.checkpoint(name)
    if not (folder / IMAGE_MODEL_FILE).is_file() and not is_timm_folder(folder):
        raise ConfigError(f"base: {spec[:80]!r} is no image model (a preset: {', '.join(IMAGE_MODELS)}; run:<id> "
                          "of an image pretraining; a timm ResNet's folder or hub id)")
    return folder


def load_base(spec: str) -> tuple[ImageClassifier, dict, dict | None]:
    """An image base (base_folder's specs) with its record, and the config it was trained with when a run of this
    lab made it (None for a timm checkpoint: its source task, ImageNet, is not here to score or replay)."""
    folder = base_folder(spec)
    if is_timm_folder(folder):
        return (*load_timm_resnet(folder), None)
    model, record = load_image_classifier(folder)
    return model, record, json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))


def setup_finetune(config: ImageFinetuneConfig, checkpoint: Path | None, clock: PhaseClock) -> ImageRun:
    names = class_names(config.dataset, config.classes)
    with clock.phase("load"):
        if config.base in IMAGE_MODELS:  # random weights of a shape: no source task, the set's own input
            base, trained = None, None
            info = dataset_info(config.dataset)
            preset, channels = config.base, info.channels or 1
            size = config.image_size or info.image_size
            if not size:
                raise ConfigError(f"image_size: {config.dataset}'s images have several sizes; give the size")
        else:
            base, base_record, trained = load_base(config.base)
            preset, channels = base_record["preset"], base_record["channels"]
            size = config.image_size or base_record["image_size"]
        if config.replay_fraction and (base is None or config.scratch or trained is None):
            why = ", scratch" if config.scratch else ": its source task is not in this lab" if base is not None else ""
            raise ConfigError("replay_fraction: replays the source task of a pretrained base; this run has none "
                              f"(base {config.base!r}{why})")
        model = build_classifier(preset, len(names), channels, config.dropout, seed=config.seed)
        source_dataset, source_classes = None, []
        if base is not None and not config.scratch:  # the pretrained backbone under a new head
            model.backbone.load_state_dict(base.backbone.state_dict())
            if trained is not None:  # a run of this lab: its source task is scored (and may be replayed)
                source_dataset, source_classes = trained["dataset"], trained.get("classes") or []
    with clock.phase("data"):
        train, validation, test = load_splits(config.dataset, size, channels, config.classes)
        train = train.subset(torch.from_numpy(stratified_subset(train.labels.numpy(), config.label_fraction,
                                                                config.seed)))
        source = None
        if source_dataset is not None:
            head = base.classifier.requires_grad_(False)
            source_train, source_validation, _ = load_splits(source_dataset, size, channels, source_classes)
            source = Source(source_dataset, head, source_train, source_validation)
    # A base's input pipeline is kept, its normalisation included (as an ImageNet model keeps ImageNet's), by its
    # scratch baseline too (only the weights differ); a preset learns the target's.
    if base is not None:
        normalise = Normalisation(tuple(base_record["mean"]), tuple(base_record["std"]))
    else:
        normalise = Normalisation.of(train)
    anchor = l2sp_anchor(model.backbone) if config.l2sp else None
    if checkpoint is not None:  # resuming: this run's own weights (the source head and the anchor are the base's)
        model, _ = load_image_classifier(checkpoint, config.dropout)
    record = {**model_record(preset, channels, names, size, normalise), "source_dataset": source_dataset}
    return ImageRun(config, model, record, normalise, train, validation, test, source, anchor)


@in_precision
def run_image_pretrain(config: ImagePretrainConfig, run_dir: Path, logger: MetricLogger, *,
                       should_stop: Callable[[], bool] = lambda: False, resume: bool = False,
                       device: str | None = None) -> str:
    """Train; return "completed", or "cancelled" (after saving a checkpoint) as soon as `should_stop()`.

    `resume` continues from the newest `step-<N>` checkpoint: same weights, optimizer, schedule, RNG, data
    order and augmentation draws, and the metric series goes on from step N."""
    checkpoint = latest_checkpoint(Path(run_dir)) if resume else None
    clock = PhaseClock()
    seed_everything(config.seed)
    run = setup_pretrain(config, checkpoint, clock)
    if checkpoint is None:
        logger.event("note", message=f"{config.model} from scratch on {config.dataset}: {len(run.train):,} "
                                     f"training images at {run.record['image_size']} pixels, {run.record['channels']} "
                                     f"channel(s), {sum(p.numel() for p in run.model.parameters()):,} parameters")
    return fit(run, Path(run_dir), logger, checkpoint, should_stop, clock, device or config.device)


@in_precision
def run_image_finetune(config: ImageFinetuneConfig, run_dir: Path, logger: MetricLogger, *,
                       should_stop: Callable[[], bool] = lambda: False, resume: bool = False,
                       device: str | None = None) -> str:
    """Fine-tune; return "completed", or "cancelled" (after saving a checkpoint) as soon as `should_stop()`;
    `resume` as run_image_pretrain's."""
    checkpoint = latest_checkpoint(Path(run_dir)) if resume else None
    clock = PhaseClock()
    seed_everything(config.seed)
    run = setup_finetune(config, checkpoint, clock)
    if checkpoint is None:
        start = "random weights" if config.base in IMAGE_MODELS or config.scratch else f"{config.base}'s weights"
        source = f"; source task {run.source.dataset} scored and {config.replay_fraction:.0%} replayed" if run.source \
            else ""
        logger.event("note", message=f"{run.record['preset']} from {start}, {config.strategy}, on {config.dataset}: "
                                     f"{len(run.train):,} training images at {run.record['image_size']} pixels{source}")
    return fit(run, Path(run_dir), logger, checkpoint, should_stop, clock, device or config.device)


def fit(run: ImageRun, run_dir: Path, logger: MetricLogger, checkpoint: Path | None,
        should_stop: Callable[[], bool], clock: PhaseClock, device: str) -> str:
    """The loop both kinds share (see the module docstring). Under torchrun (`ranks > 1`) every rank runs it on
    its images of every batch (augmented whole first, so the draws are one process's), gradients averaged, batch
    norm's running statistics averaged before every evaluation and checkpoint; rank 0 alone writes."""
    ranks = distributed.from_env()
    device = distributed.start(ranks, pick_device(device))
    config, model, train = run.config, run.model, run.train
    model.to(device, memory_format=LAYOUT)
    if run.source is not None:
        run.source.head.to(device)
    anchor = {k: v.to(device) for k, v in run.anchor.items()} if run.anchor is not None else None
    replay = config.replay_fraction if run.finetuning else 0.0
    batch_size, n_replay = replay_sizes(config.batch_size, replay)
    if len(train) < batch_size:
        raise ConfigError(f"batch_size: {batch_size} is more than the {len(train)} training images of "
                          f"{config.dataset}")
    steps_per_epoch = len(train) // batch_size  # the last, partial batch is dropped (batch norm needs >1)
    total = steps_per_epoch * config.epochs
    total = min(total, config.max_steps) if config.max_steps else total
    stage = 0
    if run.finetuning:  # what trains (the optimizer holds every parameter: a frozen one gets no gradient)
        apply_strategy(model, config, stage)
        groups = strategy_param_groups(model, config)
    else:
        groups = decay_groups(model.named_parameters(), config.optim.weight_decay, config.optim.lr)
    optimizer = build_optimizer(groups, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, total)
    draws = generator(config.seed)  # the augmentation's own stream, so it repeats whatever else draws numbers
    replay_draws = generator(config.seed + 1)  # which source images are replayed
    step = 0
    best = Best()
    if checkpoint is not None:
        state = load_training_state(checkpoint)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        draws.set_state(state["draws"])
        replay_draws.set_state(state["replay_draws"])
        restore_rng_state(state["rng"])
        step = state["step"]
        best = Best(**state["best"]) if state.get("best") else best
        if run.finetuning:  # where gradual unfreezing stood
            stage = unfreeze_stage(config, step // steps_per_epoch, step)
            apply_strategy(model, config, stage)

    def save(name: str, with_state: bool, at: int | None = None) -> None:
        distributed.average_buffers(model, ranks)
        if not ranks.main:
            return
        state = ({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                  "draws": draws.get_state(), "replay_draws": replay_draws.get_state(), "rng": rng_state(),
                  "best": best.state()}
                 if with_state else None)
        with clock.phase("checkpoint"):
            save_image_checkpoint(run_dir, name, step if at is None else at, model, run.record, config, logger,
                                  state)

    def evaluate() -> bool:
        """Score the validation split (and the source task); keep a fine-tune's best weights. True: stop early."""
        epoch = step / steps_per_epoch
        distributed.average_buffers(model, ranks)
        with clock.phase("evaluate"):
            validation = score(model, run.validation, run.normalise, device)
            log_metrics(logger, step, validation, "validation", epoch, step * config.batch_size)
            if run.source is not None:
                source = score(SourceView(model, run.source.head), run.source.validation, run.normalise, device)
                log_metrics(logger, step, {"prev_task_accuracy": source["accuracy"],
                                           "prev_task_loss": source["loss"]}, "forgetting", epoch)
        clock.count("evaluate")
        meter.restart_clock()
        if not run.finetuning or step == 0:
            return False
        best.update(validation["accuracy"], step, model)
        return 0 < config.early_stopping_patience <= best.bad_evals

    evaluate_at = eval_steps(total, config.eval_every, config.eval_count, steps_per_epoch)

    def report_progress() -> None:
        left = {"train": total - step, "evaluate": sum(s > step for s in evaluate_at)}
        logger.event("progress", step=step, total_steps=total, **clock.pace(left))

    meter = TrainMeter(device)
    if step == 0:  # the starting point of every curve, and the floor a classifier must beat
        log_metrics(logger, 0, {"accuracy": majority_accuracy(train, run.test)}, "reference", 0.0)
        evaluate()
    order_epoch, order = -1, None
    train_mode(model)  # the training phase starts here, and again after every evaluation
    with clock.phase("train"):
        while step < total:
            # The order is a function of (seed, epoch): a resumed run draws exactly the batches it would have.
            epoch, index = divmod(step, steps_per_epoch)
            if epoch != order_epoch:
                order_epoch = epoch
                order = torch.randperm(len(train), generator=generator(config.seed * 7919 + epoch))
            if run.finetuning and unfreeze_stage(config, epoch, step) != stage:  # gradual_unfreeze opens a stage
                stage = unfreeze_stage(config, epoch, step)
                apply_strategy(model, config, stage)
                train_mode(model)
            rows = order[index * batch_size:(index + 1) * batch_size]
            mine = torch.tensor(distributed.shard(range(len(rows)), ranks))  # all of them in one process
            pixels = as_input(augment(train.pixels[rows], config.augment, draws)[mine], run.normalise, device)
            lr = optimizer.param_groups[-1]["lr"]
            with autocast(device, training=True):
                loss = nn.functional.cross_entropy(model(pixels).float(), train.labels[rows][mine].to(device))
                if n_replay:  # source images through the source head: the backbone keeps doing the source task
                    picked = torch.randint(len(run.source.train), (n_replay,), generator=replay_draws)
                    old = as_input(augment(run.source.train.pixels[picked], config.augment, draws), run.normalise,
                                   device)
                    old_loss = nn.functional.cross_entropy(SourceView(model, run.source.head)(old).float(),
                                                           run.source.train.labels[picked].to(device))
                    loss = (loss * batch_size + old_loss * n_replay) / config.batch_size
                if anchor is not None:
                    loss = loss + config.l2sp * l2sp_penalty(model.backbone, anchor)
            loss.backward()
            distributed.average_gradients((p for g in optimizer.param_groups for p in g["params"]), ranks)
            grad_norm = optimizer_step(optimizer, scheduler, config.optim.grad_clip)
            step += 1
            clock.count("train")
            meter.update(loss, config.batch_size)

            if step % config.log_every == 0 or step == total:
                read = meter.read()
                log_metrics(logger, step, {"loss": read["loss"], "images_per_s": read["tokens_per_s"], "lr": lr,
                                           "grad_norm": grad_norm.item()}, "train", step / steps_per_epoch,
                            step * config.batch_size)
                report_progress()
            if step in evaluate_at:
                if evaluate():
                    logger.event("early_stop", step=step, best=best.accuracy)
                    break
                train_mode(model)
                report_progress()
            # One agreed answer: a stop request reaches the ranks at different steps.
            if step < total and distributed.agree(ranks, should_stop())[0]:
                save(f"step-{step}", with_state=True)
                report_progress()  # the row shows where it stopped
                return "cancelled"
    if best.weights is not None:  # a fine-tune ends on its best weights: its final checkpoint and test score
        model.load_state_dict(best.weights)
    if ranks.parallel:  # 0 when the ranks' weights are the same, as averaged gradients keep them
        logger.metric(step, "rank_weight_spread", distributed.weight_spread(model, ranks), "time")
    save("final", with_state=False, at=best.step if best.weights is not None else step)
    with clock.phase("test"):
        logits = image_logits(model, run.test, run.normalise, device)
    metrics = classification_metrics(logits, run.test.labels.numpy())
    log_metrics(logger, step, metrics, "test", step / steps_per_epoch)
    log_reliability(logger, logits, run.test.labels.numpy())
    if not math.isfinite(metrics["loss"]):
        logger.event("note", message="the test loss is not finite: the run diverged (lower the learning rate)")
    clock.log(logger, step, step / steps_per_epoch)
    return "completed"
