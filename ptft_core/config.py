"""One typed, validated config per run kind: the one source of every field's type, bounds, default and help.

The config is the only thing that crosses from the UI or the CLI to a run: the same JSON is stored in the
run row, in `RUN_DIR/config.json` and in every checkpoint, so "what exactly did this run do" has one answer.

The classes are pydantic dataclasses: they validate on construction (and on `dataclasses.replace`), coerce
what a person writes by hand when its meaning is clear (`lr: 1e-4`, which YAML reads as a string, or
`epochs: '3'`), and refuse the rest with `ConfigError`, one line per problem naming the field:
`optim.lr: must be > 0 (got -1)`, `optim.lrr: unknown field; did you mean 'lr'?`. The forms take labels
(`title`), help (the docstring under each field), bounds and defaults from here (`field_spec`), the CLI prints
them (`describe_fields`), and `json_schema` exports them. Fields are flat, so every config written so far loads
as it is; `group` arranges them the way a user thinks about them (model and data, strategy, optimisation, ...).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import textwrap
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticUndefined

Optimizer = Literal["adamw", "adam", "sgd", "adagrad"]
Schedule = Literal["constant", "linear", "cosine"]
Strategy = Literal["full", "linear_probe", "freeze_bottom", "gradual_unfreeze", "discriminative"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "float32", "bf16"]
# `precision: auto` on a CPU that computes bf16 natively (AVX512-BF16 or AMX) takes bf16, as a GPU that supports it
# does: on this project's CPU the full-split parity check found test accuracy +0.0 points from float32 (3 seeds) at
# 1.6x the steps/s (docs/benchmarks.md, section 5). Elsewhere (emulated bf16 is several times slower) auto is float32.
CPU_AUTO_BF16 = True
Pooling = Literal["auto", "cls", "mean"]
Preset = Literal["tiny", "mini", "small", "base"]
PRESETS: tuple[str, ...] = get_args(Preset)
BUILTIN_CHECKPOINT = "minilm-l6"
Family = Literal["bert", "roformer", "roberta", "distilbert", "xlnet", "gpt2", "t5"]
FAMILIES: tuple[str, ...] = get_args(Family)
Objective = Literal["auto", "mlm", "clm", "span"]
# The one pretraining objective each family's `transformers` classes support here (families.py says why).
FAMILY_OBJECTIVE = {"bert": "mlm", "roformer": "mlm",
                    "roberta": "mlm", "distilbert": "mlm", "xlnet": "mlm", "gpt2": "clm", "t5": "span"}
OBJECTIVE_TITLE = {"mlm": "masked LM", "clm": "causal LM", "span": "span corruption", "auto": "the checkpoint's"}
STRATEGY_HELP = {  # the strategy field's help, and the Fine-tune form's line beside the choice
    "full": "every weight trains",
    "linear_probe": "the encoder is frozen, only the classification head trains",
    "freeze_bottom": "the embeddings and the freeze_layers bottom layers stay frozen",
    "gradual_unfreeze": "starts with the head only and opens one layer group at a time, from the top",
    "discriminative": "every layer trains, lower layers with smaller learning rates (layer_decay)",
}


ImageModel = Literal["resnet-small", "resnet18", "resnet34", "vgg-small", "vgg11", "vgg16"]
IMAGE_MODELS: tuple[str, ...] = get_args(ImageModel)  # vision/models.py: PRESETS, the shapes
Augment = Literal["none", "crop", "crop_flip"]
AUGMENT_HELP = {  # what each augmentation does to a training image (vision/data.py)
    "none": "the image as it is",
    "crop": "padded by an eighth of its side on each edge and cropped back at a random place (random shifts)",
    "crop_flip": "crop, and a mirror image half of the time (not for digits or text: a mirrored 2 is no 2)",
}


class ConfigError(ValueError):
    """A config value is invalid; the message names the field."""


def _listed(value: Any) -> Any:
    """A single name where a list is expected (`corpus: wiki`) means a list of one."""
    return [value] if isinstance(value, str) else value


# Upper bounds shared by several fields; each says why. A bound refuses a typo of a few zeros before it is
# queued, so that no config can eat the machine's memory, disk or weeks of its time.
MAX_NAME = 200  # characters of a run name, a dataset name or a tag: shown in tables, legends and file names
MAX_SPEC = 500  # characters of a model spec: a checkpoint folder's path fits (Linux's PATH_MAX is 4,096)
MAX_NAMES = 20  # datasets in one list: more corpora than the lab has built-in and registered together
MAX_TAGS = 50  # tags on one run: labels to find it by, sent with every run list
MAX_CLASSES = 1_000  # classes an image run keeps: ImageNet's 1,000; a confusion matrix past that reads nothing
MAX_STEPS = 1_000_000  # optimizer steps: a million steps is weeks on one GPU for the presets here
MAX_EPOCHS = 1_000  # passes over a dataset: a thousand passes memorise any labelled dataset here
MAX_BATCH = 1_024  # examples per step: 1,024 sequences of 512 tokens is past one GPU's memory for the base preset
MAX_EVALUATIONS = 1_000  # evaluations per task: each is a point on every curve; a chart reads 1,000 at most
MAX_SAMPLES = 100_000  # examples scored at one evaluation: about a minute of a CPU each time; 0 takes a whole split
MAX_SEED = 2**32 - 1  # numpy's and torch's generators take 32-bit seeds
MAX_PRIORITY = 1_000  # a run's place in the queue: a thousand levels each way order any queue (the store keeps 32 bits)
MAX_NOTES = 20_000  # characters of a run's notes: a page of text, sent with the run's row

Name = Annotated[str, StringConstraints(max_length=MAX_NAME)]
Names = Annotated[list[Name], BeforeValidator(_listed)]
NonBlank = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_SPEC)]
DatasetName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_NAME)]
# Floats are finite: `lr: Infinity` or NaN would be queued and fail (or silently train nothing) in the worker.
_MODEL = ConfigDict(extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False)

# The groups a form or `--help-config` shows the fields in, in this order.
GROUPS = ("model and data", "strategy", "optimisation", "evaluation", "forgetting probes and mitigations",
          "sequential second task", "run")


def _field(group: str, title: str, default: Any = PydanticUndefined, **kwargs: Any) -> Any:
    """A config field in `group`, labelled `title`; its help is the docstring under it. (A list default is
    copied for each config, so it may be written as a plain value.)"""
    return Field(default, title=title, json_schema_extra={"group": group}, **kwargs)


def _config_errors(cls: type) -> type:
    """Construction (and `dataclasses.replace`) raises ConfigError with one readable line per problem."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc, cls)) from None

    cls.__init__ = __init__
    return cls


@_config_errors
@dataclass(config=_MODEL)
class OptimConfig:
    """Optimizer and schedule, shared by both run kinds."""

    optimizer: Optimizer = _field("optimisation", "Optimizer", "adamw")
    """The optimizer; AdamW is the transformer default."""
    lr: float = _field("optimisation", "Learning rate", 5e-5, gt=0, le=10)
    """Peak learning rate, reached after warmup. At most 10: every optimizer here diverges far below that."""
    schedule: Schedule = _field("optimisation", "Schedule", "linear")
    """How the learning rate moves after warmup: constant, linear decay to 0, or cosine decay."""
    warmup_ratio: float = _field("optimisation", "Warmup (share of steps)", 0.06, ge=0, lt=1)
    """Share of the steps over which the learning rate rises linearly from 0."""
    weight_decay: float = _field("optimisation", "Weight decay", 0.01, ge=0, le=10)
    """Decoupled weight decay (not applied to biases and LayerNorm weights). At most 10: lr x weight_decay is the
    share of every weight removed per step, and above 1 it removes more than the weight."""
    momentum: float = _field("optimisation", "Momentum (SGD)", 0.9, ge=0, lt=1)
    """SGD's momentum; the other optimizers ignore it."""
    grad_clip: float = _field("optimisation", "Gradient clip (0: off)", 1.0, ge=0, le=1e6)
    """Clip the global gradient norm to this value; 0 disables clipping. At most 1e6: a clip above any gradient
    norm a run reaches clips nothing (use 0)."""


@_config_errors
@dataclass(config=_MODEL)
class PretrainConfig:
    """Language-model pretraining: from scratch (`model` is a preset of a `family`) or further pretraining (`model`
    is a checkpoint), with the family's objective: masked LM, causal LM or T5's span corruption."""

    kind: Literal["pretrain"] = _field("run", "Kind", "pretrain")
    """The run kind."""
    name: Name = _field("run", "Run name", "")
    """A readable name (the forms make one from the choices when it is empty); at most 200 characters."""
    model: NonBlank = _field("model and data", "Model", "tiny")
    """A preset (tiny: 2 layers x 128; mini: 4 x 256; small: 4 x 512; base: 12 x 768) trains from scratch with a
    WordPiece vocabulary learned from the corpus; anything else is a checkpoint to continue: minilm-l6, a Hugging
    Face folder or hub id, or run:<run_id> (optionally run:<run_id>/step-<N>). At most 500 characters: a folder's
    path fits."""
    family: Family = _field("model and data", "Family", "bert")
    """Architecture of a from-scratch preset: bert, roberta, distilbert, xlnet (masked LM), gpt2 (causal LM) or t5
    (span corruption), each with its own kind of tokenizer trained on the corpus; a checkpoint keeps its own."""
    objective: Objective = _field("model and data", "Objective", "auto")
    """What the model learns to predict: mlm (masked tokens), clm (the next token), span (T5's corrupted spans).
    auto: the family's (recorded as such), or a checkpoint's own. Each family trains with the one its
    `transformers` classes support."""
    corpus: Names = _field("model and data", "Corpus", ["wiki", "news"], min_length=1, max_length=MAX_NAMES)
    """Datasets whose text is pretrained on (labels are ignored); at most 20."""
    vocab_size: int = _field("model and data", "Vocabulary size", 8000, ge=256, le=100_000)
    """Vocabulary of a from-scratch run's tokenizer (a checkpoint keeps its own). At most 100,000: more than the
    built-in corpora hold distinct words, and the embedding and output layers grow with it."""
    block_size: int = _field("model and data", "Block size (tokens)", 128, ge=8, le=512)
    """Tokens per training block (texts are concatenated and cut into blocks). At most 512: the position
    embeddings of the presets."""
    mask_prob: float = _field("model and data", "Masking rate", 0.15, gt=0, lt=1)
    """Share of tokens masked for masked LM (BERT: 0.15), or corrupted in spans of 3 for span corruption (T5:
    0.15); causal LM predicts every token."""
    freeze_encoder: bool = _field("strategy", "Train the MLM head only", False)
    """Keep the encoder fixed and train the MLM head only: gives a checkpoint that ships without a head (MiniLM)
    a reader, so its general-text MLM loss can be probed during fine-tuning without the encoder having changed."""
    batch_size: int = _field("optimisation", "Batch size", 32, gt=0, le=MAX_BATCH)
    """Blocks per optimizer step. At most 1,024: 1,024 blocks of 512 tokens are past one GPU's memory for the
    base preset."""
    max_steps: int = _field("optimisation", "Steps", 300, gt=0, le=MAX_STEPS)
    """Optimizer steps of the run. At most a million: weeks on one GPU for the presets here."""
    optim: OptimConfig = _field("optimisation", "Optimizer",
                                default_factory=lambda: OptimConfig(lr=1e-3, warmup_ratio=0.05))
    """Optimizer and learning-rate schedule."""
    log_every: int = _field("evaluation", "Log every (steps)", 10, gt=0, le=MAX_STEPS)
    """Steps between training-loss log lines. At most a million, the most steps a run has."""
    eval_every: int = _field("evaluation", "Evaluate every (steps)", 0, ge=0, le=MAX_STEPS)
    """Steps between evaluations; 0: eval_count evaluations spread evenly over the run (every run also
    evaluates once before its first step). At most a million steps, and at most 1,000 evaluations in all
    (max_steps / eval_every): each is a validation pass and a point on every curve."""
    eval_count: int = _field("evaluation", "Evaluations", 10, gt=0, le=MAX_EVALUATIONS)
    """Evaluations per run when eval_every is 0, besides the one before the first step. At most 1,000: each is a
    point on every curve, and a chart reads 1,000 at most."""
    eval_blocks: int = _field("evaluation", "Validation blocks", 64, gt=0, le=10_000)
    """Validation blocks scored at each evaluation. At most 10,000 (1.3 million tokens at the default block
    size): more than the built-in corpora's validation text, minutes of a CPU at every evaluation."""
    checkpoint_steps: list[Annotated[int, Field(gt=0, le=MAX_STEPS)]] = _field(
        "evaluation", "Extra checkpoints (steps)", [], max_length=100)
    """Steps at which to keep a checkpoint besides the last one (e.g. to fine-tune from run:<id>/step-<N>). At
    most 100: each is a whole copy of the model on disk (440 MB for the base preset)."""
    seed: int = _field("run", "Seed", 0, ge=0, le=MAX_SEED)
    """Seeds the initialisation, masking and data order. At most 2**32 - 1: numpy and torch take 32-bit seeds."""
    device: Device = _field("run", "Device", "auto")
    """Where to train; auto: a GPU when there is one."""
    precision: Precision = _field("run", "Precision", "auto")
    """Compute dtype: auto: bf16 where the device computes it natively (a GPU that supports it, a CPU with
    AVX512-BF16 or AMX), float32 elsewhere; float32; bf16 (autocast, weights kept in float32; on a CPU without
    AVX512-BF16 or AMX it is emulated and slow)."""
    ranks: int = _field("run", "Data-parallel processes", 1, ge=1, le=8)
    """Processes under torchrun (CPU, or a GPU each): each trains on its rows of every batch, gradients
    averaged, so the run is the same run spread out; 1: one process. At most 8: the GPUs of one node."""
    tags: Names = _field("run", "Tags", [], max_length=MAX_TAGS)
    """Free labels to find and group runs by; at most 50, of 200 characters each (they travel with every run
    list)."""

    @model_validator(mode="after")
    def _steps_in_range(self) -> PretrainConfig:
        bad = [s for s in self.checkpoint_steps if not 0 < s <= self.max_steps]
        if bad:
            raise ValueError(f"checkpoint_steps: must lie in (0, max_steps={self.max_steps}] (got {bad[:5]})")
        evaluations = self.max_steps // self.eval_every if self.eval_every else 0
        if evaluations > MAX_EVALUATIONS:
            least = -(-self.max_steps // MAX_EVALUATIONS)
            raise ValueError(f"eval_every: {evaluations:,} evaluations in {self.max_steps:,} steps; at most "
                             f"{MAX_EVALUATIONS:,} (eval_every >= {least})")
        return self

    @model_validator(mode="after")
    def _objective_of_the_family(self) -> PretrainConfig:
        if self.from_scratch:
            own = FAMILY_OBJECTIVE[self.family]
            if self.objective not in ("auto", own):
                raise ValueError(f"objective: {self.family} trains with {own} here, not {self.objective}")
            self.objective = own  # recorded, so runs can be grouped by it
        if self.freeze_encoder and self.objective in ("clm", "span"):
            raise ValueError(f"freeze_encoder: only for masked LM (an MLM head to train); {self.objective} "
                             "trains the whole model")
        return self

    @property
    def from_scratch(self) -> bool:
        return self.model in PRESETS


@_config_errors
@dataclass(config=_MODEL)
class FinetuneConfig:
    """Sequence-classification fine-tuning, optionally followed by a second task (sequential fine-tuning)."""

    kind: Literal["finetune"] = _field("run", "Kind", "finetune")
    """The run kind."""
    name: Name = _field("run", "Run name", "")
    """A readable name (the forms make one from the choices when it is empty); at most 200 characters."""
    base: NonBlank = _field("model and data", "Start from", BUILTIN_CHECKPOINT)
    """The checkpoint to fine-tune: minilm-l6, a preset (random weights of `family`), a Hugging Face
    folder or hub id, or run:<run_id>[/step-<N>] (an earlier run's checkpoint). At most 500 characters: a folder's
    path fits."""
    family: Family = _field("model and data", "Family (preset)", "bert")
    """Architecture when `base` is a preset (random weights): bert uses the built-in bert-base-uncased tokenizer;
    the other families train their own kind of tokenizer on the dataset's training text."""
    scratch: bool = _field("model and data", "Scratch baseline", False)
    """Keep the base's architecture and tokenizer but re-initialise its weights: the fair baseline, what the same
    model learns without its pretraining."""
    dataset: DatasetName = _field("model and data", "Dataset", "movies")
    """A labelled dataset (built-in, registered on the Data page, or hf:<hub id>); at most 200 characters."""
    max_length: int = _field("model and data", "Max length (tokens)", 128, ge=8, le=512)
    """Texts are truncated to this many tokens. At most 512: the position embeddings of BERT-like models."""
    label_fraction: float = _field("model and data", "Label fraction", 1.0, gt=0, le=1)
    """Share of the training labels used (a stratified sample): low-resource runs."""
    pooling: Pooling = _field("model and data", "Pooling", "auto")
    """What the classification head reads. cls: the architecture's own pooling ([CLS] through BERT's pooler, the
    [CLS] head of RoBERTa and RoFormer, GPT-2's last token); mean: the mean of the last hidden states over the
    text's tokens (bert, roberta, roformer, distilbert), the feature sentence-transformers models were trained
    to give; auto: mean for a sentence-transformers checkpoint (the built-in MiniLM), the pooling a checkpoint of
    this lab recorded (a fine-tune's own; a further pretraining's base's, so MiniLM further pretrained is still
    read by its mean), cls otherwise. The run's notes say which it used."""
    strategy: Strategy = _field("strategy", "Strategy", "full", description="What trains. " + "; ".join(
        f"{name}: {what}" for name, what in STRATEGY_HELP.items()) + ".")
    freeze_layers: int = _field("strategy", "Frozen layers (k)", 0, ge=0, le=100)
    """freeze_bottom: the embeddings and this many bottom layers stay frozen (0: the embeddings only). At most
    100: deeper than any model here (the base preset has 12 layers)."""
    unfreeze_every_steps: int = _field("strategy", "Unfreeze every N steps", 0, ge=0, le=MAX_STEPS)
    """gradual_unfreeze: steps between opening layer groups; 0: one more group per epoch. At most a million, the
    most steps a run has."""
    layer_decay: float = _field("strategy", "Layer lr decay", 0.8, gt=0, le=1)
    """discriminative: the learning rate of a layer is lr x layer_decay ** (its depth from the top)."""
    epochs: int = _field("optimisation", "Epochs", 2, gt=0, le=MAX_EPOCHS)
    """Passes over the (label-fraction) training examples of the first task. At most 1,000: a thousand passes
    memorise any labelled dataset here."""
    max_steps: int = _field("optimisation", "Max steps (0: all epochs)", 0, ge=0, le=MAX_STEPS)
    """A cap on the optimizer steps of each task; 0 runs all epochs. At most a million: weeks on one GPU."""
    batch_size: int = _field("optimisation", "Batch size", 32, gt=0, le=MAX_BATCH)
    """Examples per optimizer step (replayed examples included). At most 1,024: 1,024 texts of 512 tokens are
    past one GPU's memory for the base preset."""
    optim: OptimConfig = _field("optimisation", "Optimizer", default_factory=OptimConfig)
    """Optimizer and learning-rate schedule."""
    dropout: float | None = _field("optimisation", "Dropout", None, ge=0, lt=1)
    """Dropout of the encoder and head; None keeps the checkpoint's."""
    eval_every: int = _field("evaluation", "Evaluate every (steps)", 0, ge=0, le=MAX_STEPS)
    """Steps between evaluations (and at each epoch end); 0: eval_count evaluations spread evenly over each task.
    Every run also evaluates once before its first step (step 0). At most a million, the most steps a run has."""
    eval_count: int = _field("evaluation", "Evaluations per task", 10, gt=0, le=MAX_EVALUATIONS)
    """Evaluations per task when eval_every is 0, besides the one before the first step. At most 1,000: each is a
    point on every curve, and a chart reads 1,000 at most."""
    eval_val_samples: int = _field("evaluation", "Validation examples per evaluation (0: all)", 256, ge=0,
                                   le=MAX_SAMPLES)
    """Validation examples scored at each evaluation: a fixed stratified sample, the same examples at every
    evaluation and for every seed (so curves and seeds compare on one set; about +-2.5 accuracy points of sampling
    error at 256); 0: the whole split. It picks the best checkpoint; the test split is always scored whole, once,
    with that checkpoint. At most 100,000: about a minute of a CPU at every evaluation."""
    eval_train_samples: int = _field("evaluation", "Train examples per probe", 256, ge=0, le=MAX_SAMPLES)
    """A fixed sample of the training split, scored with the probes (probe_every): the overfitting curves. At most
    100,000: about a minute of a CPU at every probe."""
    probe_every: int = _field("evaluation", "Probes every (evaluations)", 5, ge=1, le=10_000)
    """The train sample and the forgetting probes are scored at every probe_every-th evaluation (step 0 is the
    first) and at each task's last; 1: at every evaluation. They cost as much as the validation sample or more and
    change slowly: with the default 10 evaluations, 5 gives three points (start, middle, end). At most 10,000:
    sparser than that, turn the probes off (probe_mlm, probe_drift, eval_train_samples 0) instead."""
    log_every: int = _field("evaluation", "Log every (steps)", 10, gt=0, le=MAX_STEPS)
    """Steps between training-loss log lines. At most a million, the most steps a run has."""
    early_stopping_patience: int = _field("evaluation", "Early-stop patience (0: off)", 0, ge=0,
                                          le=MAX_EVALUATIONS)
    """Evaluations without a new best before a task stops; 0 disables early stopping. At most 1,000, the most
    evaluations a task has."""
    early_stopping_metric: Literal["accuracy", "f1", "loss"] = _field("evaluation", "Early-stop metric", "accuracy")
    """The validation metric that picks the best checkpoint (and early stopping)."""
    probe_mlm: bool = _field("forgetting probes and mitigations", "MLM probe", True)
    """At each evaluation, the masked-LM loss on held-out probe_corpus text, when the model has an MLM head."""
    probe_drift: bool = _field("forgetting probes and mitigations", "Drift probe (CKA)", True)
    """At each evaluation, linear CKA between the starting and the current encoder on a fixed probe set."""
    probe_corpus: Name = _field("forgetting probes and mitigations", "Probe corpus", "wiki")
    """The dataset whose text the probes read; at most 200 characters."""
    probe_size: int = _field("forgetting probes and mitigations", "Probe texts", 128, gt=1, le=10_000)
    """Texts in the probe set. At most 10,000: the drift probe keeps two feature matrices of that many rows, and
    the probes are scored at every probe_every-th evaluation."""
    replay_fraction: float = _field("forgetting probes and mitigations", "Replay fraction", 0.0, ge=0, lt=1)
    """Share of each batch replayed from replay_source."""
    replay_source: Literal["task", "mlm"] = _field("forgetting probes and mitigations", "Replay source", "task")
    """task: the earlier task (sequential runs); mlm: masked-LM batches of the pretraining text."""
    l2sp: float = _field("forgetting probes and mitigations", "L2-SP strength", 0.0, ge=0, le=1e4)
    """Strength of the L2-SP penalty pulling the encoder toward its starting weights. At most 10,000: far past
    the strength that holds the encoder in place (a linear probe does that exactly)."""
    then_dataset: Name | None = _field("sequential second task", "Then fine-tune on", None)
    """After dataset, fine-tune on this one (a head per task, one shared encoder), evaluating the first task
    all along (the forgetting split); at most 200 characters."""
    then_epochs: int = _field("sequential second task", "Epochs on the second task", 1, gt=0, le=MAX_EPOCHS)
    """Passes over the second task's training examples. At most 1,000, as epochs."""
    seed: int = _field("run", "Seed", 0, ge=0, le=MAX_SEED)
    """Seeds the head's initialisation, the label sample and the data order. At most 2**32 - 1: numpy and torch
    take 32-bit seeds."""
    device: Device = _field("run", "Device", "auto")
    """Where to train; auto: a GPU when there is one."""
    precision: Precision = _field("run", "Precision", "auto")
    """Compute dtype: auto: bf16 where the device computes it natively (a GPU that supports it, a CPU with
    AVX512-BF16 or AMX), float32 elsewhere; float32; bf16 (autocast, weights kept in float32; on a CPU without
    AVX512-BF16 or AMX it is emulated and slow)."""
    ranks: int = _field("run", "Data-parallel processes", 1, ge=1, le=8)
    """Above 1, the run trains under torchrun in this many processes (on CPU, or one GPU each), each on its
    share of every batch with the gradients averaged: the same run, spread out. At most 8: the GPUs of one
    node."""
    tags: Names = _field("run", "Tags", [], max_length=MAX_TAGS)
    """Free labels to find and group runs by; at most 50, of 200 characters each (they travel with every run
    list)."""

    @model_validator(mode="after")
    def _second_task_differs(self) -> FinetuneConfig:
        if self.then_dataset is not None and self.then_dataset == self.dataset:
            raise ValueError(f"then_dataset: must differ from dataset (got {self.then_dataset!r} for both)")
        return self


@_config_errors
@dataclass(config=_MODEL)
class ImagePretrainConfig:
    """Supervised image pretraining: a ResNet or VGG from scratch, trained to classify a source image set (the
    ImageNet recipe at this lab's size); its checkpoint is what an image fine-tune starts from."""

    kind: Literal["image_pretrain"] = _field("run", "Kind", "image_pretrain")
    """The run kind."""
    name: Name = _field("run", "Run name", "")
    """A readable name (the forms make one from the choices when it is empty); at most 200 characters."""
    model: ImageModel = _field("model and data", "Model", "resnet-small")
    """The architecture, from random weights: resnet-small and vgg-small (3 stages, 16-64 channels: train on 2
    CPU cores in a minute), resnet18, resnet34, vgg11, vgg16 (the ImageNet shapes, with batch norm; VGG with a
    pooled linear head)."""
    dataset: DatasetName = _field("model and data", "Dataset", "mnist")
    """A labelled image set (built-in mnist or digits, or one registered on the Data page); at most 200
    characters."""
    classes: Names = _field("model and data", "Classes (empty: all)", [], max_length=MAX_CLASSES)
    """Train and score on these classes of the dataset only (their label names, e.g. 0 to 4 of mnist), as a set of
    their own: one output per class, in the dataset's order. Empty: every class. At most 1,000: ImageNet's count."""
    image_size: int = _field("model and data", "Image size (pixels, 0: the set's own)", 0, ge=0, le=224)
    """Images are resized to this many pixels a side; 0 keeps the set's own size (mnist 28, digits 8; a set of
    mixed sizes needs one given). At most 224: ImageNet's input, and the largest side the lab stores (256) leaves
    room for a crop."""
    augment: Augment = _field("model and data", "Augmentation", "crop", description="What each training image "
                              "goes through. " + "; ".join(f"{k}: {v}" for k, v in AUGMENT_HELP.items()) + ".")
    epochs: int = _field("optimisation", "Epochs", 3, gt=0, le=MAX_EPOCHS)
    """Passes over the training split. At most 1,000: a thousand passes memorise any labelled dataset here."""
    max_steps: int = _field("optimisation", "Max steps (0: all epochs)", 0, ge=0, le=MAX_STEPS)
    """A cap on the optimizer steps; 0 runs all epochs. At most a million: weeks on one GPU."""
    batch_size: int = _field("optimisation", "Batch size", 64, gt=0, le=MAX_BATCH)
    """Images per optimizer step. At most 1,024: 1,024 images of 224 pixels through resnet34 are past one GPU's
    memory."""
    optim: OptimConfig = _field("optimisation", "Optimizer",
                                default_factory=lambda: OptimConfig(lr=2e-3, weight_decay=0.05, warmup_ratio=0.05))
    """Optimizer and learning-rate schedule."""
    dropout: float = _field("optimisation", "Dropout (head)", 0.0, ge=0, lt=1)
    """Dropout before the classification layer (convolutions regularise through batch norm, as in ResNet)."""
    eval_every: int = _field("evaluation", "Evaluate every (steps)", 0, ge=0, le=MAX_STEPS)
    """Steps between evaluations; 0: eval_count evaluations spread evenly over the run (every run also evaluates
    once before its first step). At most a million, the most steps a run has."""
    eval_count: int = _field("evaluation", "Evaluations", 10, gt=0, le=MAX_EVALUATIONS)
    """Evaluations when eval_every is 0, besides the one before the first step. At most 1,000: each is a point on
    every curve, and a chart reads 1,000 at most."""
    log_every: int = _field("evaluation", "Log every (steps)", 10, gt=0, le=MAX_STEPS)
    """Steps between training-loss log lines. At most a million, the most steps a run has."""
    seed: int = _field("run", "Seed", 0, ge=0, le=MAX_SEED)
    """Seeds the initialisation, the data order and the augmentation. At most 2**32 - 1: numpy and torch take
    32-bit seeds."""
    device: Device = _field("run", "Device", "auto")
    """Where to train; auto: a GPU when there is one."""
    precision: Precision = _field("run", "Precision", "auto")
    """Compute dtype: auto: bf16 where the device computes it natively, float32 elsewhere; float32; bf16
    (autocast, weights kept in float32)."""
    ranks: int = _field("run", "Data-parallel processes", 1, ge=1, le=8)
    """Processes under torchrun (CPU, or a GPU each): each trains on its images of every batch, gradients
    averaged (batch norm's running statistics averaged before every evaluation and checkpoint), so the run is the
    same run spread out; 1: one process. At most 8: the GPUs of one node."""
    tags: Names = _field("run", "Tags", [], max_length=MAX_TAGS)
    """Free labels to find and group runs by; at most 50, of 200 characters each (they travel with every run
    list)."""


@_config_errors
@dataclass(config=_MODEL)
class ImageFinetuneConfig:
    """Image fine-tuning: an image pretraining's checkpoint (or a ResNet/VGG from random weights, the scratch
    baseline) trained on a target image set with the text side's strategies, while its source task is scored all
    along (the forgetting split) and, if asked, replayed."""

    kind: Literal["image_finetune"] = _field("run", "Kind", "image_finetune")
    """The run kind."""
    name: Name = _field("run", "Run name", "")
    """A readable name (the forms make one from the choices when it is empty); at most 200 characters."""
    base: NonBlank = _field("model and data", "Start from", "resnet-small")
    """run:<run_id>[/step-<N>] of an image pretraining (or image fine-tune), or a folder holding one; or a model
    preset (resnet-small, resnet18, ..., vgg16) from random weights. At most 500 characters: a folder's path fits."""
    scratch: bool = _field("model and data", "Scratch baseline", False)
    """Keep the base's architecture, input size and normalisation but re-initialise its weights: what the same
    model learns without its pretraining."""
    dataset: DatasetName = _field("model and data", "Dataset", "digits")
    """The target: a labelled image set (built-in or registered on the Data page); at most 200 characters."""
    classes: Names = _field("model and data", "Classes (empty: all)", [], max_length=MAX_CLASSES)
    """Train and score on these classes of the dataset only (their label names, e.g. 5 to 9 of mnist), as a set of
    their own: one output per class, in the dataset's order. Empty: every class. At most 1,000: ImageNet's count."""
    image_size: int = _field("model and data", "Image size (pixels, 0: the base's)", 0, ge=0, le=224)
    """Images are resized to this many pixels a side; 0 takes the pretrained base's input size (a preset base: the
    set's own). At most 224: ImageNet's input, and the largest side the lab stores (256) leaves room for a crop."""
    label_fraction: float = _field("model and data", "Label fraction", 1.0, gt=0, le=1)
    """Share of the target's training labels used (a stratified sample): low-resource runs."""
    augment: Augment = _field("model and data", "Augmentation", "crop", description="What each training image "
                              "goes through. " + "; ".join(f"{k}: {v}" for k, v in AUGMENT_HELP.items()) + ".")
    strategy: Strategy = _field("strategy", "Strategy", "full", description="What trains (the stem is the "
                                "embeddings, each stage a layer). " + "; ".join(
                                    f"{name}: {what}" for name, what in STRATEGY_HELP.items()) + ".")
    freeze_layers: int = _field("strategy", "Frozen stages (k)", 0, ge=0, le=100)
    """freeze_bottom: the stem and this many bottom stages stay frozen (0: the stem only). At most 100: deeper than
    any model here (resnet34 has 4 stages)."""
    unfreeze_every_steps: int = _field("strategy", "Unfreeze every N steps", 0, ge=0, le=MAX_STEPS)
    """gradual_unfreeze: steps between opening stages; 0: one more per epoch. At most a million, the most steps a
    run has."""
    layer_decay: float = _field("strategy", "Layer lr decay", 0.8, gt=0, le=1)
    """discriminative: the learning rate of a stage is lr x layer_decay ** (its depth from the top)."""
    epochs: int = _field("optimisation", "Epochs", 5, gt=0, le=MAX_EPOCHS)
    """Passes over the (label-fraction) training images. At most 1,000: a thousand passes memorise any labelled
    dataset here."""
    max_steps: int = _field("optimisation", "Max steps (0: all epochs)", 0, ge=0, le=MAX_STEPS)
    """A cap on the optimizer steps; 0 runs all epochs. At most a million: weeks on one GPU."""
    batch_size: int = _field("optimisation", "Batch size", 32, gt=0, le=MAX_BATCH)
    """Images per optimizer step, replayed ones included. At most 1,024: 1,024 images of 224 pixels through
    resnet34 are past one GPU's memory."""
    optim: OptimConfig = _field("optimisation", "Optimizer",
                                default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=0.05, warmup_ratio=0.05))
    """Optimizer and learning-rate schedule."""
    dropout: float = _field("optimisation", "Dropout (head)", 0.0, ge=0, lt=1)
    """Dropout before the classification layer."""
    eval_every: int = _field("evaluation", "Evaluate every (steps)", 0, ge=0, le=MAX_STEPS)
    """Steps between evaluations; 0: eval_count evaluations spread evenly over the run (every run also evaluates
    once before its first step). At most a million, the most steps a run has."""
    eval_count: int = _field("evaluation", "Evaluations", 10, gt=0, le=MAX_EVALUATIONS)
    """Evaluations when eval_every is 0, besides the one before the first step. At most 1,000: each is a point on
    every curve, and a chart reads 1,000 at most."""
    early_stopping_patience: int = _field("evaluation", "Early-stop patience (0: off)", 0, ge=0,
                                          le=MAX_EVALUATIONS)
    """Evaluations without a new best validation accuracy before the run stops; 0: it trains all its steps. Either
    way its final checkpoint (and the test score) is the best one's, as a text fine-tune's. At most 1,000, the most
    evaluations a run has."""
    log_every: int = _field("evaluation", "Log every (steps)", 10, gt=0, le=MAX_STEPS)
    """Steps between training-loss log lines. At most a million, the most steps a run has."""
    replay_fraction: float = _field("forgetting probes and mitigations", "Replay fraction", 0.0, ge=0, lt=1)
    """Share of each batch drawn from the base's source set and scored with its source head (rehearsal): what
    holds the source task while the target trains. Needs a pretrained base (run:<id>)."""
    l2sp: float = _field("forgetting probes and mitigations", "L2-SP strength", 0.0, ge=0, le=1e4)
    """Strength of the L2-SP penalty pulling the backbone toward its starting weights. At most 10,000: far past
    the strength that holds the backbone in place (a linear probe does that exactly)."""
    seed: int = _field("run", "Seed", 0, ge=0, le=MAX_SEED)
    """Seeds the head's initialisation, the label sample, the data order and the augmentation. At most
    2**32 - 1: numpy and torch take 32-bit seeds."""
    device: Device = _field("run", "Device", "auto")
    """Where to train; auto: a GPU when there is one."""
    precision: Precision = _field("run", "Precision", "auto")
    """Compute dtype: auto: bf16 where the device computes it natively, float32 elsewhere; float32; bf16
    (autocast, weights kept in float32)."""
    ranks: int = _field("run", "Data-parallel processes", 1, ge=1, le=8)
    """Processes under torchrun (CPU, or a GPU each): each trains on its images of every batch, gradients
    averaged (batch norm's running statistics averaged before every evaluation and checkpoint), so the run is the
    same run spread out; 1: one process. At most 8: the GPUs of one node."""
    tags: Names = _field("run", "Tags", [], max_length=MAX_TAGS)
    """Free labels to find and group runs by; at most 50, of 200 characters each (they travel with every run
    list)."""


EVALUATE_SPLIT = "transfer"  # an evaluate run's metrics: split "transfer", names "<metric>@<dataset>"
# A classifier's test reliability diagram: split "reliability", one step per confidence bin, names confidence,
# accuracy, count (training/evaluate.py: log_reliability).
RELIABILITY_SPLIT = "reliability"


@_config_errors
@dataclass(config=_MODEL)
class EvaluateConfig:
    """Scores a fine-tuned classifier on other datasets' test splits: cross-domain evaluation, a run of its own on
    the same workers and device pool as training (it waits for its model's checkpoint like any dependent run)."""

    kind: Literal["evaluate"] = _field("run", "Kind", "evaluate")
    """The run kind."""
    name: Name = _field("run", "Run name", "")
    """A readable name (the forms make one from the choices when it is empty); at most 200 characters."""
    model: NonBlank = _field("model and data", "Classifier")
    """The fine-tuned classifier to score: run:<run_id> (a fine-tune's final, best checkpoint) or a Hugging Face
    folder holding a sequence classifier. At most 500 characters: a folder's path fits."""
    datasets: Names = _field("model and data", "Datasets", min_length=1, max_length=MAX_NAMES)
    """Labelled datasets whose test split is scored; their label names must be the classifier's; at most 20."""
    max_length: int = _field("model and data", "Max length (tokens, 0: the model's run)", 0, ge=0, le=512)
    """Texts are truncated to this many tokens; 0 takes the fine-tune's own max_length (128 for a folder). At most
    512: the position embeddings of BERT-like models."""
    device: Device = _field("run", "Device", "auto")
    """Where to evaluate; auto: a GPU when there is one."""
    seed: int = _field("run", "Seed", 0, ge=0, le=MAX_SEED)
    """Unused by the scores (evaluation is deterministic); kept so seeds group like other runs. At most 2**32 - 1,
    as a training run's."""
    tags: Names = _field("run", "Tags", [], max_length=MAX_TAGS)
    """Free labels to find and group runs by; at most 50, of 200 characters each (they travel with every run
    list)."""


RunConfig = PretrainConfig | FinetuneConfig | EvaluateConfig | ImagePretrainConfig | ImageFinetuneConfig
_KINDS: dict[str, type] = {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "evaluate": EvaluateConfig,
                           "image_pretrain": ImagePretrainConfig, "image_finetune": ImageFinetuneConfig}
CHECKPOINT_FIELD = {"pretrain": "model", "finetune": "base", "evaluate": "model",  # what each kind starts from
                    "image_pretrain": "model", "image_finetune": "base"}
KINDS: tuple[str, ...] = tuple(_KINDS)
IMAGE_KINDS = ("image_pretrain", "image_finetune")  # the kinds whose datasets hold images (specs.check_names)


def check_run_labels(priority: int = 0, tags: Any = (), name: str | None = None, notes: str | None = None) -> None:
    """The labels a run gets besides its config (queue priority, tags, name, notes), bounded as the config's own
    fields are; ConfigError names the first one out of bounds."""
    tags = list(tags)
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > MAX_PRIORITY:
        raise ConfigError(f"priority: must be a whole number in [-{MAX_PRIORITY:,}, {MAX_PRIORITY:,}] "
                          f"(got {shown(priority)})")
    if len(tags) > MAX_TAGS or any(not isinstance(t, str) or len(t) > MAX_NAME for t in tags):
        raise ConfigError(f"tags: at most {MAX_TAGS} texts of at most {MAX_NAME} characters (got {shown(tags)})")
    if name is not None and len(name) > MAX_NAME:
        raise ConfigError(f"name: must have at most {MAX_NAME} characters (got {shown(name)})")
    if notes is not None and len(notes) > MAX_NOTES:
        raise ConfigError(f"notes: must have at most {MAX_NOTES:,} characters (got {shown(notes)})")


# --- errors ----------------------------------------------------------------------------------------------------------


_PHRASES = {  # pydantic's error type -> what is wrong, in the words of the field's reader
    "int_parsing": "must be a whole number", "int_type": "must be a whole number",
    "int_from_float": "must be a whole number", "float_parsing": "must be a number", "float_type": "must be a number",
    "bool_parsing": "must be true or false", "bool_type": "must be true or false", "string_type": "must be text",
    "string_too_short": "must not be empty", "list_type": "must be a list", "dataclass_type": "must be a mapping",
    "dataclass_exact_type": "must be a mapping", "finite_number": "must be a finite number",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


SHOWN_CHARS = 60  # of a bad value quoted in an error: enough to recognise it, never a 5 MB echo


def shown(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text):,} characters)"


def _fields_at(cls: type, path: tuple[Any, ...]) -> list[str]:
    """The field names of the (nested) config class at `path` below `cls`."""
    for part in path:
        nested = cls.__pydantic_fields__.get(part) if isinstance(part, str) else None
        if nested is None or not dataclasses.is_dataclass(nested.annotation):
            return []
        cls = nested.annotation
    return list(cls.__pydantic_fields__)


def describe_errors(exc: ValidationError, cls: type) -> str:
    """`field: what is wrong (got VALUE)`, one line per problem, unknown fields with the closest valid name."""
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        where = ".".join(str(p) for p in loc)
        kind, ctx = error["type"], error.get("ctx") or {}
        if kind in ("unexpected_keyword_argument", "extra_forbidden"):
            close = difflib.get_close_matches(str(loc[-1]), _fields_at(cls, loc[:-1]), n=1, cutoff=0.6)
            lines.append(f"{where}: unknown field" + (f"; did you mean {close[0]!r}?" if close else ""))
            continue
        if kind in ("missing", "missing_argument"):
            lines.append(f"{where}: required (no default)")
            continue
        if kind == "value_error":  # a cross-field check: its message already names the field
            lines.append(str(ctx.get("error", error["msg"])))
            continue
        if kind in _BOUNDS:
            what = f"must be {_BOUNDS[kind]} {ctx[next(iter(ctx))]:g}"
        elif kind == "literal_error":
            what = f"must be one of {ctx.get('expected', '')}"
        elif kind == "too_short":
            what = f"must have at least {ctx.get('min_length', 1)} item(s)"
        elif kind == "too_long":
            what = f"must have at most {ctx.get('max_length')} items"
        elif kind == "string_too_long":
            what = f"must have at most {ctx.get('max_length')} characters"
        else:
            what = _PHRASES.get(kind, error["msg"].replace("Input should be", "must be"))
        lines.append(f"{where or cls.__name__}: {what} (got {shown(error.get('input'))})")
    return "; ".join(lines)


# --- the fields, for forms, the CLI and the API ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """What a form (or `--help-config`) needs to know of one field."""

    name: str
    title: str
    help: str
    group: str
    default: Any
    type: str  # int, float, bool, str, choice, list, 'float or null', config
    choices: tuple[Any, ...] = ()
    minimum: float | None = None  # inclusive bounds, as a number input takes them
    maximum: float | None = None
    bounds: str = ""  # as written: "> 0", "in [8, 512]"
    max_length: int | None = None  # of a text (characters) or a list (items)


def _type_name(annotation: Any) -> tuple[str, tuple[Any, ...]]:
    if get_origin(annotation) is Literal:
        return "choice", get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        return "config", ()
    if annotation in (int, float, bool, str):
        return annotation.__name__, ()
    if get_origin(annotation) is list:
        return "list", ()
    optional = [get_args(a)[0] if get_origin(a) is Annotated else a for a in get_args(annotation)
                if a is not type(None)]
    if len(optional) == 1 and optional[0] in (int, float, str):
        return f"{optional[0].__name__} or null", ()
    return str(annotation), ()


def field_spec(cls: type, name: str) -> FieldSpec:
    info = cls.__pydantic_fields__[name]
    kind, choices = _type_name(info.annotation)
    default = info.get_default(call_default_factory=True)
    low = high = length = None
    signs = []
    for constraint in [*info.metadata, *_inner_metadata(info.annotation)]:
        if getattr(constraint, "max_length", None) is not None and length is None:
            length = constraint.max_length
            signs.append(f"at most {length:,} {'items' if kind == 'list' else 'characters'}")
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            value = getattr(constraint, attr, None)
            if value is None:
                continue
            signs.append(f"{sign} {value:,}" if isinstance(value, int) else f"{sign} {value:g}")
            step = 1 if kind == "int" else 0  # an exclusive bound on an integer is the next integer
            if attr in ("gt", "ge"):
                low = value + (step if attr == "gt" else 0)
            else:
                high = value - (step if attr == "lt" else 0)
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return FieldSpec(name, info.title or name, " ".join((info.description or "").split()), str(extra.get("group", "")),
                     default, kind, tuple(choices), low, high, ", ".join(signs), length)


def _inner_metadata(annotation: Any) -> list[Any]:
    """The constraints inside an Annotated type (a text's length), or of an optional one."""
    if get_origin(annotation) is Annotated:
        return list(annotation.__metadata__)
    if type(None) not in get_args(annotation):
        return []
    return [m for arg in get_args(annotation) if get_origin(arg) is Annotated for m in arg.__metadata__]


def field_specs(cls: type) -> Iterator[FieldSpec]:
    """Every field of `cls`, nested configs flattened as `optim.lr`, in GROUPS order."""
    specs = []
    for name in cls.__pydantic_fields__:
        spec = field_spec(cls, name)
        if spec.type == "config":
            nested = cls.__pydantic_fields__[name].annotation
            parent_default = spec.default
            for inner in field_specs(nested):
                specs.append(dataclasses.replace(inner, name=f"{name}.{inner.name}",
                                                 default=getattr(parent_default, inner.name)))
        else:
            specs.append(spec)
    return iter(sorted(specs, key=lambda s: GROUPS.index(s.group) if s.group in GROUPS else len(GROUPS)))


def describe_fields(kind: str) -> str:
    """Every field of a run kind with its type, default, bounds and help, by group: `run --help-config KIND`."""
    cls = config_class(kind)
    out, group = [f"{kind} config fields (YAML/JSON keys; on the command line: key=value, optim.lr=1e-4)"], None
    for spec in field_specs(cls):
        if spec.group != group:
            group = spec.group
            out.append(f"\n{group}")
        kind_text = spec.type + (f": {' | '.join(map(str, spec.choices))}" if spec.choices else "")
        bounds = f", {spec.bounds}" if spec.bounds else ""
        default = "(required)" if spec.default is PydanticUndefined else f"= {shown(spec.default)}"
        out.append(f"  {spec.name} ({kind_text}{bounds}) {default}")
        out.extend(textwrap.wrap(spec.help, 110, initial_indent="      ", subsequent_indent="      "))
    return "\n".join(out)


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a run kind's config (types, bounds, defaults, titles, help, groups)."""
    return TypeAdapter(config_class(kind)).json_schema()


# --- loading and saving ------------------------------------------------------------------------------------------


def config_class(kind: Any) -> type:
    if kind not in _KINDS:
        raise ConfigError(f"kind: must be one of {', '.join(_KINDS)} (got {shown(kind)})")
    return _KINDS[kind]


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build a config from plain data (a YAML/JSON file, a stored run row, a form); ConfigError names the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping, got {type(data).__name__}")
    cls = config_class(data.get("kind"))
    if "optim" in data and not isinstance(data["optim"], dict | OptimConfig):
        raise ConfigError(f"optim: must be a mapping (got {shown(data['optim'])})")
    return cls(**data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`optim.lr=1e-4` -> (["optim", "lr"], "1e-4" read as YAML: numbers, lists, null and booleans as written)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key=value, e.g. optim.lr=1e-4")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def with_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`data` with `key=value` overrides applied (nested keys with dots); validation happens when it is built."""
    out = json.loads(json.dumps(data, default=str))
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {part} is not a mapping")
        node[path[-1]] = value
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The plain data of a `.json`, `.yaml` or `.yml` config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        return json.loads(text)
    except Exception as exc:  # JSON and YAML raise different types; both mean "unreadable"
        raise ConfigError(f"{path}: cannot parse: {exc}") from exc


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load a config file, with optional `key=value` overrides; ConfigError names the file and the field."""
    data = read_config_file(path)
    try:
        return config_from_dict(with_overrides(data, overrides) if overrides and isinstance(data, dict) else data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"optim": {"lr": 1e-3}}` -> `{"optim.lr": 1e-3}`."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    return asdict(config)


def config_to_json(config: RunConfig) -> str:
    return json.dumps(config_to_dict(config), sort_keys=True)


def with_seed(config: RunConfig, seed: int) -> RunConfig:
    """The same config with another seed (several seeds launch several runs)."""
    return dataclasses.replace(config, seed=seed, name=f"{config.name or config.kind}-s{seed}")


# --- the evaluation schedule ---------------------------------------------------------------------------------------


def eval_steps(total_steps: int, every: int, count: int, steps_per_epoch: int = 0) -> frozenset[int]:
    """The steps (1..total_steps, counted within one task) after which a run evaluates; the last is always one.

    `every` > 0: every `every` steps and at each epoch end (`steps_per_epoch`). `every` == 0: `count`
    evaluations spread evenly, so a 27-step run and a 2,000-step run both draw readable curves. The evaluation
    before the first step (step 0) is the loops' own, outside this schedule.
    """
    if total_steps <= 0:
        return frozenset()
    if every:
        steps = set(range(every, total_steps + 1, every))
        if steps_per_epoch:
            steps |= set(range(steps_per_epoch, total_steps + 1, steps_per_epoch))
    else:
        steps = {max(1, round(i * total_steps / count)) for i in range(1, count + 1)}
    return frozenset(steps | {total_steps})


def replay_sizes(batch_size: int, fraction: float) -> tuple[int, int]:
    """(current-task, replayed) examples per batch: at least one replayed when fraction > 0, and at least one
    current-task example always."""
    if fraction == 0:
        return batch_size, 0
    replayed = min(batch_size - 1, max(1, round(batch_size * fraction)))
    return batch_size - replayed, replayed


def task_steps(config: FinetuneConfig, task: int, examples: int) -> tuple[int, int]:
    """(steps per epoch, optimizer steps) of a fine-tune's task `task` (0: `dataset`, 1: `then_dataset`) on
    `examples` training examples, before any early stop: the one count the trainer, the form and the cost model
    share. Replay takes part of each batch (from the first task in the second, or MLM blocks in any), so an epoch
    of the current task takes more steps; `max_steps` caps each task."""
    replaying = config.replay_source == "mlm" or task > 0
    batch, _ = replay_sizes(config.batch_size, config.replay_fraction if replaying else 0.0)
    per_epoch = math.ceil(examples / batch)
    steps = per_epoch * (config.epochs if task == 0 else config.then_epochs)
    return per_epoch, min(steps, config.max_steps) if config.max_steps else steps


def probe_steps(eval_at: frozenset[int], every: int) -> frozenset[int]:
    """The evaluation steps (step 0 included) at which a fine-tune also scores its train sample and probes: every
    `every`-th evaluation, step 0 counted first, and the last one."""
    ordered = [0, *sorted(eval_at)]
    return frozenset(step for i, step in enumerate(ordered) if i % every == 0 or step == ordered[-1])
