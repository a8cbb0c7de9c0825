"""One typed, validated config per run kind.

The config is the only thing that crosses from the UI or the CLI to a run: the same JSON is stored in the
run row, in `RUN_DIR/config.json` and in every checkpoint, so "what exactly did this run do" has one answer.
Validation happens in `__post_init__`, before any work, and raises `ConfigError` with a message that names
the field.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

Optimizer = Literal["adamw", "adam", "sgd", "adagrad"]
Schedule = Literal["constant", "linear", "cosine"]
Strategy = Literal["full", "linear_probe", "freeze_bottom", "gradual_unfreeze", "discriminative"]
Device = Literal["auto", "cpu", "cuda"]
Preset = Literal["tiny", "mini", "small", "base"]
PRESETS: tuple[str, ...] = get_args(Preset)
BUILTIN_CHECKPOINT = "minilm-l6"


class ConfigError(ValueError):
    """A config value is invalid; the message names the field."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_literals(config: Any) -> None:
    """Reject values outside a field's `Literal[...]` choices, naming the field and the choices."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        choices = get_args(hints[f.name]) if typing.get_origin(hints[f.name]) is Literal else ()
        value = getattr(config, f.name)
        if choices and value not in choices:
            raise ConfigError(f"{f.name}: {value!r} is not one of {', '.join(map(str, choices))}")


@dataclass
class OptimConfig:
    """Optimizer and schedule, shared by both run kinds."""

    optimizer: Optimizer = "adamw"
    lr: float = 5e-5
    schedule: Schedule = "linear"
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    momentum: float = 0.9  # SGD only
    grad_clip: float = 1.0  # 0 disables clipping

    def __post_init__(self) -> None:
        _check_literals(self)
        _require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _require(0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        _require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _require(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        _require(self.grad_clip >= 0, f"grad_clip must be >= 0 (0 disables), got {self.grad_clip}")


@dataclass
class PretrainConfig:
    """Masked-LM pretraining: from scratch (`model` is a preset) or further pretraining (`model` is a checkpoint).

    `model`: a preset (`tiny`, `mini`, `small`, `base`) trains from scratch with a WordPiece tokenizer trained on
    `corpus`; anything else is a checkpoint: `minilm-l6`, a Hugging Face folder or hub id, or `run:<run_id>`
    (optionally `run:<run_id>/step-<N>`).
    """

    kind: Literal["pretrain"] = "pretrain"
    name: str = ""
    model: str = "tiny"
    corpus: list[str] = field(default_factory=lambda: ["wiki", "news"])
    vocab_size: int = 8000
    block_size: int = 128
    mask_prob: float = 0.15
    # Train the MLM head only, the encoder fixed: gives a checkpoint that ships without a head (MiniLM) a reader,
    # so its general-text MLM loss can be probed during fine-tuning without the encoder having changed.
    freeze_encoder: bool = False
    batch_size: int = 32
    max_steps: int = 300
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, warmup_ratio=0.05))
    log_every: int = 10
    eval_every: int = 0  # steps between evaluations; 0: `eval_count` evaluations spread evenly over the run
    eval_count: int = 10  # evaluations per run when eval_every is 0 (besides the one before the first step)
    eval_blocks: int = 64  # validation blocks scored at each evaluation
    checkpoint_steps: list[int] = field(default_factory=list)  # extra checkpoints; the last step is always saved
    seed: int = 0
    device: Device = "auto"
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.optim, dict):
            self.optim = OptimConfig(**self.optim)
        _check_literals(self)
        _require(bool(self.model.strip()), "model must name a preset or a checkpoint")
        _require(bool(self.corpus), "corpus must name at least one dataset")
        _require(256 <= self.vocab_size <= 100_000, f"vocab_size must be in [256, 100000], got {self.vocab_size}")
        _require(8 <= self.block_size <= 512, f"block_size must be in [8, 512], got {self.block_size}")
        _require(0 < self.mask_prob < 1, f"mask_prob must be in (0, 1), got {self.mask_prob}")
        _require(self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size}")
        _require(self.max_steps > 0, f"max_steps must be > 0, got {self.max_steps}")
        _require(self.log_every > 0, f"log_every must be > 0, got {self.log_every}")
        _require(self.eval_every >= 0, f"eval_every must be >= 0 (0: eval_count evaluations), got {self.eval_every}")
        _require(self.eval_count > 0, f"eval_count must be > 0, got {self.eval_count}")
        _require(self.eval_blocks > 0, f"eval_blocks must be > 0, got {self.eval_blocks}")
        bad = [s for s in self.checkpoint_steps if not 0 < s <= self.max_steps]
        _require(not bad, f"checkpoint_steps must lie in (0, max_steps={self.max_steps}], got {bad}")

    @property
    def from_scratch(self) -> bool:
        return self.model in PRESETS


@dataclass
class FinetuneConfig:
    """Sequence-classification fine-tuning, optionally followed by a second task (sequential fine-tuning).

    `base`: `minilm-l6`, a preset (random init, bert-base tokenizer), a folder or hub id, or `run:<id>[/step-<N>]`.
    `scratch`: keep the base's architecture and tokenizer but re-initialise its weights (the fair baseline).
    """

    kind: Literal["finetune"] = "finetune"
    name: str = ""
    base: str = BUILTIN_CHECKPOINT
    scratch: bool = False
    dataset: str = "movies"
    max_length: int = 128
    label_fraction: float = 1.0
    epochs: int = 2
    max_steps: int = 0  # 0: run all epochs
    batch_size: int = 32
    strategy: Strategy = "full"
    freeze_layers: int = 0  # freeze_bottom: embeddings + this many bottom layers stay frozen
    unfreeze_every_steps: int = 0  # gradual_unfreeze: 0 opens one layer group per epoch
    layer_decay: float = 0.8  # discriminative: lr of layer l = lr * layer_decay ** (depth from the top)
    optim: OptimConfig = field(default_factory=OptimConfig)
    dropout: float | None = None  # None keeps the checkpoint's dropout
    # Every run evaluates once before its first step (step 0), then on this schedule, per task.
    eval_every: int = 0  # steps between evaluations (and at each epoch end); 0: `eval_count` spread evenly
    eval_count: int = 10  # evaluations per task when eval_every is 0
    eval_val_samples: int = 0  # validation examples scored at each evaluation (a fixed stratified sample); 0: all
    log_every: int = 10
    early_stopping_patience: int = 0  # evaluations without improvement before stopping; 0 disables
    early_stopping_metric: Literal["accuracy", "f1", "loss"] = "accuracy"
    eval_train_samples: int = 512  # train-split sample scored at each evaluation (overfitting curves)
    # Forgetting probes, evaluated at each evaluation.
    probe_mlm: bool = True  # general-text MLM loss on held-out `probe_corpus`, when the model has an MLM head
    probe_drift: bool = True  # linear CKA between the starting and the current encoder on a fixed probe set
    probe_corpus: str = "wiki"
    probe_size: int = 128
    # Sequential fine-tuning: after `dataset`, fine-tune on `then_dataset`, evaluating the first task all along.
    then_dataset: str | None = None
    then_epochs: int = 1
    replay_fraction: float = 0.0  # share of each batch replayed from the earlier task (or MLM batches)
    replay_source: Literal["task", "mlm"] = "task"
    l2sp: float = 0.0  # strength of the L2-SP penalty toward the starting weights
    seed: int = 0
    device: Device = "auto"
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.optim, dict):
            self.optim = OptimConfig(**self.optim)
        _check_literals(self)
        _require(bool(self.base.strip()), "base must name a checkpoint or preset")
        _require(bool(self.dataset.strip()), "dataset must name a dataset")
        _require(8 <= self.max_length <= 512, f"max_length must be in [8, 512], got {self.max_length}")
        _require(0 < self.label_fraction <= 1, f"label_fraction must be in (0, 1], got {self.label_fraction}")
        _require(self.epochs > 0, f"epochs must be > 0, got {self.epochs}")
        _require(self.max_steps >= 0, f"max_steps must be >= 0 (0 runs all epochs), got {self.max_steps}")
        _require(self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size}")
        _require(self.freeze_layers >= 0, f"freeze_layers must be >= 0, got {self.freeze_layers}")
        _require(self.unfreeze_every_steps >= 0, "unfreeze_every_steps must be >= 0")
        _require(0 < self.layer_decay <= 1, f"layer_decay must be in (0, 1], got {self.layer_decay}")
        _require(self.dropout is None or 0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        _require(self.log_every > 0, f"log_every must be > 0, got {self.log_every}")
        _require(self.eval_every >= 0, f"eval_every must be >= 0 (0: eval_count evaluations), got {self.eval_every}")
        _require(self.eval_count > 0, f"eval_count must be > 0, got {self.eval_count}")
        _require(self.eval_val_samples >= 0, f"eval_val_samples must be >= 0 (0: all), got {self.eval_val_samples}")
        _require(self.early_stopping_patience >= 0, "early_stopping_patience must be >= 0")
        _require(self.eval_train_samples >= 0, "eval_train_samples must be >= 0")
        _require(self.probe_size > 1, f"probe_size must be > 1, got {self.probe_size}")
        _require(self.then_epochs > 0, f"then_epochs must be > 0, got {self.then_epochs}")
        _require(0 <= self.replay_fraction < 1, f"replay_fraction must be in [0, 1), got {self.replay_fraction}")
        _require(self.l2sp >= 0, f"l2sp must be >= 0, got {self.l2sp}")
        _require(
            self.then_dataset is None or self.then_dataset != self.dataset,
            "then_dataset must differ from dataset",
        )


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


RunConfig = PretrainConfig | FinetuneConfig
_KINDS: dict[str, type] = {"pretrain": PretrainConfig, "finetune": FinetuneConfig}


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build a config from plain data; unknown keys and wrong kinds are errors, not silently dropped."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping, got {type(data).__name__}")
    kind = data.get("kind")
    if kind not in _KINDS:
        raise ConfigError(f"kind: {kind!r} is not one of {', '.join(_KINDS)}")
    cls = _KINDS[kind]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown field(s) for {kind}: {', '.join(unknown)}")
    optim = data.get("optim")
    if optim is not None:
        if not isinstance(optim, dict):
            raise ConfigError("optim must be a mapping")
        optim_unknown = sorted(set(optim) - {f.name for f in dataclasses.fields(OptimConfig)})
        if optim_unknown:
            raise ConfigError(f"unknown field(s) in optim: {', '.join(optim_unknown)}")
    try:
        return cls(**data)
    except TypeError as exc:  # a wrong type that the dataclass itself rejects
        raise ConfigError(str(exc)) from exc


def load_config(path: str | Path) -> RunConfig:
    """Load a config from a `.json`, `.yaml` or `.yml` file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # JSON and YAML raise different types; both mean "unreadable"
        raise ConfigError(f"{path}: cannot parse: {exc}") from exc
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    return asdict(config)


def config_to_json(config: RunConfig) -> str:
    return json.dumps(config_to_dict(config), sort_keys=True)


def with_seed(config: RunConfig, seed: int) -> RunConfig:
    """The same config with another seed (several seeds launch several runs)."""
    return dataclasses.replace(config, seed=seed, name=f"{config.name or config.kind}-s{seed}")
