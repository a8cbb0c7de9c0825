"""Study templates: the plan types and the registry of the eight studies, plus the building blocks their plans share.

A study is one module of this package (`STUDY_MODULES`) holding its plan function, registered with
`@template(name, title, question, description, expectation)`, and its report function, registered with
`@report_for(name)` into the same `Template`. The study modules import this one, so the registry imports them only
when first asked (`load_studies`, called by `get_template`, `list_templates`, `build_runs` and `TEMPLATES`).

A plan is a list of planned runs: a planned run is a validated config plus what the report groups it by (`labels`:
arm, seed, label fraction...) and its lineage: `base_from` names the planned run (and optionally the `step-<N>`
checkpoint of it) whose checkpoint becomes this run's `base` (fine-tune) or `model` (further pretraining, and
the classifier an `evaluate` run scores). The driver (driver.py) submits the whole plan and the engine starts a
run once its checkpoint exists; the report reads the runs back by their keys.

Presets: `quick` finishes in about 15 minutes on a 2-core CPU that the lab has to itself (fewer seeds, fewer
steps; the report says what the preset cut), `full` is meant for a GPU. `tiny=True` (`--tiny-for-tests`)
keeps a plan's shape (every arm kind and every lineage link) but thins its grids to two levels per factor and
makes every run a few steps of a tiny model with one seed: the CI form, about 50 runs for all eight studies.

Time estimates live in costs.py. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ptft_core.config import (
    BUILTIN_CHECKPOINT,
    PRESETS,
    ConfigError,
    EvaluateConfig,
    FinetuneConfig,
    ImageFinetuneConfig,
    ImagePretrainConfig,
    OptimConfig,
    PretrainConfig,
    RunConfig,
    config_from_dict,
    config_to_dict,
)
from ptft_core.studies.costs import dataset_shape

if TYPE_CHECKING:
    from ptft_core.studies.driver import StudyData
    from ptft_core.studies.report import Findings

# ptft_core.studies.<name>: registers the template <name>
STUDY_MODULES = ("pretraining_helps", "how_much_pretraining", "further_pretraining", "finetune_strategy",
                 "forgetting", "domain_shift", "pretraining_objective", "image_transfer")
STUDY_PRESETS = ("quick", "full")
SENTIMENT_DOMAINS = ("movies", "amazon", "nyt", "tweets")


# --- plan types -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseFrom:
    """Lineage: this run starts from planned run `key`'s checkpoint (`checkpoint` None: its final one)."""

    key: str
    checkpoint: str | None = None  # "step-<N>"

    def spec(self, run_id: str) -> str:
        return f"run:{run_id}" + (f"/{self.checkpoint}" if self.checkpoint else "")


@dataclass
class PlannedRun:
    key: str  # unique within the study; the run carries it as tag `study-key:<key>`
    config: RunConfig
    labels: dict[str, Any] = field(default_factory=dict)
    base_from: BaseFrom | None = None
    priority: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "config": config_to_dict(self.config), "labels": dict(self.labels),
                "base_from": dataclasses.asdict(self.base_from) if self.base_from else None,
                "priority": self.priority}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlannedRun:
        base = data.get("base_from")
        # A version-1 plan's "cross_eval" list (evaluations done beside the engine) is not read: those scores
        # are already on the fine-tunes' own rows.
        return cls(data["key"], config_from_dict(data["config"]), dict(data.get("labels") or {}),
                   BaseFrom(**base) if base else None, int(data.get("priority") or 0))


# --- the registry -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    name: str
    title: str
    question: str
    description: str
    expectation: str  # what the literature leads one to expect; the report compares the data against it
    build: Callable[[str, bool], list[PlannedRun]]  # (preset, tiny) -> the plan
    report: Callable[[StudyData, Findings], None] | None = None  # set by @report_for, in the same study module


_REGISTERED: dict[str, Template] = {}  # filled as the study modules are imported


def template(name: str, title: str, question: str, description: str, expectation: str):
    """Registers the decorated plan function as template `name`."""
    def register(build: Callable[[str, bool], list[PlannedRun]]):
        _REGISTERED[name] = Template(name, title, question, description, expectation, build)
        return build
    return register


def report_for(name: str):
    """Registers the decorated function as the report of template `name` (registered above it)."""
    def register(report: Callable[[StudyData, Findings], None]):
        _REGISTERED[name] = dataclasses.replace(_REGISTERED[name], report=report)
        return report
    return register


@functools.cache
def load_studies() -> dict[str, Template]:
    """Every template by name, in `STUDY_MODULES` order; imports the study modules (once)."""
    for module in STUDY_MODULES:
        importlib.import_module(f"{__package__}.{module}")
    return {name: _REGISTERED[name] for name in STUDY_MODULES}


def __getattr__(name: str) -> Any:
    if name == "TEMPLATES":  # the registry, read as a module attribute: loaded on first use
        return load_studies()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_template(name: str) -> Template:
    templates = load_studies()
    if name not in templates:
        raise ConfigError(f"study: {name!r} is not one of {', '.join(templates)}")
    return templates[name]


def list_templates() -> list[Template]:
    return list(load_studies().values())


def build_runs(name: str, preset: str, tiny: bool = False) -> list[PlannedRun]:
    """The planned runs of template `name` under `preset`; validated (every base_from names an earlier key)."""
    if preset not in STUDY_PRESETS:
        raise ConfigError(f"preset: {preset!r} is not one of {', '.join(STUDY_PRESETS)}")
    runs = get_template(name).build(preset, tiny)
    if tiny:
        runs = shrink_for_tests(runs)
    seen: set[str] = set()
    for run in runs:
        if run.key in seen:
            raise ConfigError(f"study {name}: duplicate run key {run.key!r}")
        if run.base_from is not None and run.base_from.key not in seen:
            raise ConfigError(f"study {name}: {run.key!r} starts from {run.base_from.key!r}, planned after it")
        seen.add(run.key)
    return runs


# --- shared building blocks -------------------------------------------------------------------------------------


def seeds(preset: str, quick: int, full: int) -> tuple[int, ...]:
    return tuple(range(quick if preset == "quick" else full))


@dataclass(frozen=True)
class Budget:
    """The one training-budget rule every arm of a study follows, in optimizer steps: `epochs` passes over the
    arm's labelled examples, but never fewer than `min_steps` (an 85-example arm trains many epochs, not 12
    steps) nor more than `max_steps`; early stopping on validation accuracy (`patience` evaluations without a
    new best) ends an arm that has reached its plateau, and the best checkpoint is the one tested."""

    epochs: int
    min_steps: int
    max_steps: int
    patience: int = 3

    def steps(self, examples: int, batch_size: int) -> int:
        return min(self.max_steps, max(self.min_steps, self.epochs * math.ceil(examples / batch_size)))

    def fields(self, dataset: str, label_fraction: float, batch_size: int) -> dict[str, Any]:
        """epochs / max_steps / early_stopping_patience of a fine-tune on `label_fraction` of `dataset`."""
        examples = max(1, round(label_fraction * train_rows(dataset)))
        steps = self.steps(examples, batch_size)
        return {"epochs": math.ceil(steps / math.ceil(examples / batch_size)), "max_steps": steps,
                "early_stopping_patience": self.patience}


# The budget of a label-budget fine-tune on movies, shared by the studies that compare arms at 1-10 % labels.
FINETUNE_BUDGET = {"quick": Budget(epochs=2, min_steps=50, max_steps=70),
                   "full": Budget(epochs=3, min_steps=300, max_steps=2000, patience=4)}


def train_rows(dataset: str) -> int:

    return dataset_shape(dataset)[0].get("train", 0)


# Evaluation during training: a fixed validation sample (the full test split scores the best checkpoint at the
# end). Quick: 5 evaluations (and step 0) of 160 validation and 32 train examples: on the 2-core CPU a quick run
# measured startup 9 s, training 0.5 s a step, evaluation 73 examples/s, test 10 s, so evaluating the whole
# validation split ten times would cost more than the training itself. Studies score the train sample and the
# probes at every evaluation (probe_every=1): their overfitting and forgetting curves are what some of them report.
QUICK_EVAL = dict(eval_every=0, eval_count=5, eval_val_samples=160, eval_train_samples=32, probe_every=1)
FULL_EVAL = dict(eval_every=0, eval_count=10, eval_val_samples=0, eval_train_samples=512, probe_every=1)


def ft_config(preset: str, budget: Budget | None = None, **fields: Any) -> FinetuneConfig:
    """A fine-tune config with the preset's evaluation schedule and, given a budget, its step budget for the
    config's dataset and label fraction. Probes are off unless a study needs them."""
    base = dict(max_length=64, batch_size=16, log_every=5, probe_drift=False, probe_mlm=False, probe_size=64,
                optim=OptimConfig(lr=1e-4, warmup_ratio=0.1), **QUICK_EVAL)
    if preset == "full":
        base.update(max_length=128, batch_size=32, log_every=10, probe_size=128,
                    optim=OptimConfig(lr=5e-5, warmup_ratio=0.06), **FULL_EVAL)
    merged = {**base, **fields}
    if budget is not None:
        merged.update(budget.fields(merged.get("dataset", "movies"), merged.get("label_fraction", 1.0),
                                    merged["batch_size"]))
    return FinetuneConfig(**merged)


def pt_config(preset: str, **fields: Any) -> PretrainConfig:
    base = dict(block_size=64, batch_size=16, log_every=5, eval_every=0, eval_count=6, eval_blocks=32)
    if preset == "full":
        base.update(block_size=128, batch_size=32, log_every=10, eval_count=10, eval_blocks=64)
    return PretrainConfig(**{**base, **fields})


def run_name(*parts: Any) -> str:
    return "-".join(str(p) for p in parts if p not in (None, ""))


def pct(fraction: float) -> str:
    return f"{fraction * 100:g}%"


# --- the CI form -------------------------------------------------------------------------------------------------


def shrink_for_tests(runs: list[PlannedRun]) -> list[PlannedRun]:
    """Same plan shape, seconds per run: seed 0 only, a tiny model instead of MiniLM, a few steps, max_length 32
    (an image run: its own model, 3 steps and one evaluation).

    Step checkpoints of a pretraining run become steps 1, 2, ... in order (the final one stays the last
    step), and the runs that start from them follow."""
    runs = [r for r in runs if r.labels.get("seed", 0) == 0]
    remap: dict[str, dict[str, str]] = {}
    out = []
    for run in runs:
        c = run.config
        labels = dict(run.labels)
        if isinstance(c, EvaluateConfig):
            config = c  # max_length 0 follows its fine-tune's, already shrunk
        elif isinstance(c, ImagePretrainConfig | ImageFinetuneConfig):  # resnet-small is small already
            config = dataclasses.replace(c, max_steps=3, eval_every=0, eval_count=1, log_every=1)
        elif isinstance(c, PretrainConfig):
            ckpts = sorted(c.checkpoint_steps)
            new_steps = list(range(1, len(ckpts) + 1))
            max_steps = max(3, len(ckpts) + 1)
            remap[run.key] = {f"step-{old}": f"step-{new}" for old, new in zip(ckpts, new_steps, strict=True)}
            config = dataclasses.replace(
                c, model="tiny" if c.model not in PRESETS else c.model, vocab_size=1000, block_size=32, batch_size=8,
                max_steps=max_steps, checkpoint_steps=new_steps, log_every=1, eval_every=2, eval_blocks=4)
        else:
            config = dataclasses.replace(
                c, base="tiny" if c.base == BUILTIN_CHECKPOINT else c.base, max_length=32, batch_size=8,
                label_fraction=min(c.label_fraction, 0.05), epochs=1, then_epochs=1, max_steps=3, eval_every=2,
                log_every=1, eval_train_samples=16, probe_size=8,
                unfreeze_every_steps=1 if c.unfreeze_every_steps else 0,
                freeze_layers=min(c.freeze_layers, 1))
        base_from = run.base_from
        if base_from is not None and base_from.checkpoint:
            new = remap.get(base_from.key, {}).get(base_from.checkpoint, base_from.checkpoint)
            base_from = BaseFrom(base_from.key, new)
        if "pretrain_tokens" in labels and base_from is not None:
            source = next(r.config for r in out if r.key == base_from.key)
            step = int(base_from.checkpoint[5:]) if base_from.checkpoint else source.max_steps
            step = 0 if labels.get("pretrain_step") == 0 else step
            labels.update(pretrain_step=step, pretrain_tokens=step * source.batch_size * source.block_size)
        out.append(dataclasses.replace(run, config=config, labels=labels, base_from=base_from))
    return out
