"""A sweep's spec: a base config, the config fields searched and their ranges, the objective, the sampler, the
pruner, how many trials and how many at once. Typed and validated like the run configs (pydantic dataclasses;
`ConfigError` with one line per problem, naming the field).

    name: minilm lr x layer decay
    base: {kind: finetune, base: minilm-l6, dataset: movies, label_fraction: 0.1, strategy: discriminative}
    space:
      optim.lr: {low: 1.0e-5, high: 1.0e-3, log: true}     # a float range (log scale)
      layer_decay: {low: 0.5, high: 1.0}
      batch_size: {low: 8, high: 32, step: 8}              # an int range (the field is an int)
      strategy: [full, discriminative]                     # choices (or {values: [...]})
    objective: {metric: accuracy, direction: maximize}     # a validation metric; direction inferred if left out
    sampler: tpe                                           # random | grid | tpe
    pruner: {type: asha, min_resource: 10, reduction_factor: 3}   # none | median | asha
    n_trials: 12
    parallel: 2
    enqueue: [{optim.lr: 1.0e-4, layer_decay: 0.8}]        # trials to run first, with these values

`base` may also be a run config file, relative to the spec's folder. Every searched name is a field of the
base's run kind (nested ones with a dot: `optim.lr`); a range's bounds and every choice are checked by building
the base config with them, so the config's own bounds speak (`space.label_fraction: high 1.5: label_fraction:
must be <= 1 (got 1.5)`). Nothing here imports Optuna or torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from ptft_core.config import (
    MAX_NAME,
    MAX_SEED,
    MAX_STEPS,
    ConfigError,
    config_class,
    config_from_dict,
    config_to_dict,
    describe_errors,
    field_specs,
    read_config_file,
)

Sampler = Literal["random", "grid", "tpe"]
SAMPLERS: tuple[str, ...] = ("random", "grid", "tpe")
# The validation metrics each kind logs (architecture.md, "Metric events"): what an objective may name.
CLASSIFIER_METRICS = ("accuracy", "loss", "f1", "precision", "recall", "ece")
OBJECTIVE_METRICS = {"pretrain": ("loss", "perplexity"), "finetune": CLASSIFIER_METRICS,
                     "image_pretrain": CLASSIFIER_METRICS, "image_finetune": CLASSIFIER_METRICS}
LOWER_IS_BETTER = ("loss", "perplexity", "ece")
NOT_SEARCHED = ("kind", "name", "tags")  # what a trial's identity is made of, not a setting
MAX_TRIALS = 1000  # trials of one sweep: a thousand fine-tunes is weeks of this machine
MAX_SEARCHED = 20  # fields searched at once: more than any sampler here can tell apart in MAX_TRIALS trials
MAX_CHOICES = 100  # values of one choice: a grid of them is already past MAX_TRIALS with two fields
_MODEL = ConfigDict(extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False)


def _choices(value: Any) -> Any:
    """`strategy: [full, discriminative]` is short for `{values: [full, discriminative]}`."""
    return {"values": value} if isinstance(value, list) else value


def _pruner(value: Any) -> Any:
    """`pruner: asha` is short for `{type: asha}`."""
    return {"type": value} if isinstance(value, str) else value


@dataclass(config=_MODEL)
class Param:
    """One searched field: a range (`low`, `high`, optional `log` scale and `step`) or a list of `values`."""

    low: float | None = None
    """Lowest value (inclusive)."""
    high: float | None = None
    """Highest value (inclusive)."""
    log: bool = False
    """Sample on a log scale (needs low > 0)."""
    step: float | None = None
    """Grid spacing of the range (an int field's default: 1); the grid sampler needs it on a float range."""
    values: list[Any] | None = Field(None, max_length=MAX_CHOICES)
    """The choices, instead of a range; at most 100."""

    @property
    def is_choice(self) -> bool:
        return self.values is not None


@dataclass(config=_MODEL)
class Objective:
    """What a trial is judged by: one validation metric, and whether lower or higher is better."""

    metric: str = Field("loss", max_length=40)
    """A validation metric of the base's kind (fine-tune: accuracy, loss, f1, precision, recall, ece; pretrain:
    loss, perplexity)."""
    direction: Literal["minimize", "maximize"] | None = None
    """None: minimize for loss, perplexity and ece, maximize for the others."""
    summary: Literal["best", "last"] = "best"
    """A finished trial's value: its best validation value (a fine-tune keeps its best checkpoint), or the last."""

    @property
    def maximize(self) -> bool:
        return (self.direction or ("minimize" if self.metric in LOWER_IS_BETTER else "maximize")) == "maximize"


@dataclass(config=_MODEL)
class PrunerSpec:
    """The early-stopping rule for bad trials, applied at each validation step (step 0 excluded: every trial
    starts from the same point)."""

    type: Literal["none", "median", "asha"] = "asha"
    """none; median: stop a trial worse than the median of the others at the same step; asha: asynchronous
    successive halving (a trial goes on past each rung only if it is in the top 1/reduction_factor there)."""
    min_resource: int | None = Field(None, ge=1, le=MAX_STEPS)
    """asha: the step of the first rung (rungs at min_resource x reduction_factor^k); None: Optuna's estimate."""
    reduction_factor: int = Field(3, ge=2, le=100)
    """asha: 1 / the share of trials going on past each rung; at most 100 (one trial in a hundred goes on)."""
    startup_trials: int = Field(2, ge=0, le=MAX_TRIALS)
    """median: trials that finish before it prunes any."""
    warmup_steps: int = Field(0, ge=0, le=MAX_STEPS)
    """median: no pruning before this step."""


@dataclass(config=_MODEL)
class SweepSpec:
    """A sweep: base config x search space, judged by the objective, sampled and pruned by Optuna."""

    base: dict[str, Any]
    """The run config every trial starts from (a fine-tune or a pretraining)."""
    space: dict[str, Annotated[Param, BeforeValidator(_choices)]] = Field(min_length=1, max_length=MAX_SEARCHED)
    """Config field (dotted: optim.lr) -> its range or choices; at most 20 fields."""
    name: str = Field("", max_length=MAX_NAME)
    """A readable name (default: the searched fields)."""
    objective: Objective = Field(default_factory=Objective)
    """The validation metric trials are judged by."""
    sampler: Sampler = "tpe"
    """random, grid (every combination of choices / stepped ranges, once) or tpe (Bayesian, Optuna's TPE)."""
    pruner: Annotated[PrunerSpec, BeforeValidator(_pruner)] = Field(default_factory=PrunerSpec)
    """Early stopping of bad trials."""
    n_trials: int = Field(20, ge=1, le=MAX_TRIALS)
    """Trials in all (a grid stops at its size)."""
    parallel: int = Field(2, ge=1, le=64)
    """Trials running at once (the engine's slots still bound it)."""
    seed: int = Field(0, ge=0, le=MAX_SEED)
    """Seeds the sampler (the trials' own seed is the base config's, unless searched)."""
    enqueue: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_TRIALS)
    """Trials to run first, in this order, each with these values of searched fields (a field left out is
    sampled): a known-good config to start from, or another sweep's trials rerun (`bench.sweep_bench` reruns a
    sweep's trials without pruning this way). They count towards n_trials."""

    @model_validator(mode="after")
    def _check(self) -> SweepSpec:
        problems = check_spec(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- what the driver needs -----------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.base["kind"]

    @property
    def maximize(self) -> bool:
        return self.objective.maximize

    def grid(self) -> dict[str, list[Any]]:
        """Every searched field's values on the grid (choices, or the stepped range)."""
        return {name: param_grid(p, _is_int(self.kind, name)) for name, p in self.space.items()}

    @property
    def trials(self) -> int:
        """n_trials, or the grid's size if that is smaller."""
        if self.sampler != "grid":
            return self.n_trials
        return min(self.n_trials, math.prod(len(v) for v in self.grid().values()))

    def trial_config(self, params: dict[str, Any]) -> dict[str, Any]:
        """The base config with the sampled values set (as plain data, validated by the engine at submit)."""
        return with_values(self.base, params)

    def label(self) -> str:
        return self.name or " x ".join(self.space)


# --- checking ----------------------------------------------------------------------------------------------------


def _field_types(kind: str) -> dict[str, str]:
    """Dotted field name -> its type name (float, int, choice, bool, str, list, 'float or null', ...)."""
    return {spec.name: spec.type for spec in field_specs(config_class(kind))}


def _is_int(kind: str, name: str) -> bool:
    return _field_types(kind).get(name, "").startswith("int")


def with_values(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(base))
    for name, value in values.items():
        node = out
        *parents, last = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def param_grid(param: Param, is_int: bool) -> list[Any]:
    if param.is_choice:
        return list(param.values or [])
    if param.step is None and not is_int:
        return []  # a continuous range has no grid (check_spec says so for the grid sampler)
    step = param.step or 1
    count = int(math.floor((param.high - param.low) / step + 1e-9)) + 1
    values = [param.low + i * step for i in range(count)]
    return [int(round(v)) for v in values] if is_int else [round(v, 12) for v in values]


def check_spec(spec: SweepSpec) -> list[str]:
    """Every problem of a spec whose parts are well typed: the base, each searched field, the objective."""
    try:
        base = config_to_dict(config_from_dict(spec.base))
    except ConfigError as exc:
        return [f"base: {exc}"]
    if base["kind"] not in OBJECTIVE_METRICS:
        return [f"base.kind: a sweep tunes a training run ({', '.join(OBJECTIVE_METRICS)}), not {base['kind']}"]
    spec.base = base
    problems = []
    types = _field_types(base["kind"])
    for name, param in spec.space.items():
        problems += [f"space.{name}: {p}" for p in _check_param(spec, name, param, types)]
    if not problems:
        problems += _check_enqueued(spec)
    metrics = OBJECTIVE_METRICS[base["kind"]]
    if spec.objective.metric not in metrics:
        problems.append(f"objective.metric: a {base['kind']} run's validation metrics are {', '.join(metrics)} "
                        f"(got {spec.objective.metric!r})")
    return problems


def _check_param(spec: SweepSpec, name: str, param: Param, types: dict[str, str]) -> list[str]:
    kind = spec.base["kind"]
    if name not in types:
        groups = {n.split(".")[0] for n in types if "." in n}
        if name in groups:
            return [f"a group of fields; search its fields ({', '.join(n for n in types if n.startswith(name + '.'))})"]
        close = difflib.get_close_matches(name, list(types), n=1, cutoff=0.6)
        return [f"unknown field of a {kind} config" + (f"; did you mean {close[0]!r}?" if close else "")]
    if name.split(".")[-1] in NOT_SEARCHED:
        return [f"not a setting to search ({', '.join(NOT_SEARCHED)} name and label the trials)"]
    field_type = types[name]
    if param.is_choice:
        if param.low is not None or param.high is not None or param.log or param.step is not None:
            return ["give either values or a range (low, high), not both"]
        if not param.values:
            return ["values: give at least one choice"]
        odd = [v for v in param.values if not (v is None or isinstance(v, bool | int | float | str))]
        if odd:
            return [f"values: choices are numbers, text, true/false or null (got {json.dumps(odd)})"]
        if len({json.dumps(v) for v in param.values}) < len(param.values):
            return [f"values: {json.dumps(param.values)} repeats a choice"]
        checks = [(f"value {json.dumps(v)}", v) for v in param.values]
    else:
        if field_type not in ("int", "float", "int or null", "float or null"):
            return [f"a {field_type} field takes values: [...], not a range"]
        if param.low is None or param.high is None:
            return ["a range needs low and high (or give values: [...])"]
        if not param.low < param.high:
            return [f"low must be < high (got low={param.low:g}, high={param.high:g})"]
        if param.log and param.low <= 0:
            return [f"a log range needs low > 0 (got low={param.low:g})"]
        if param.log and param.step is not None:
            return ["a log range takes no step"]
        if param.step is not None and param.step <= 0:
            return [f"step must be > 0 (got {param.step:g})"]
        is_int = field_type.startswith("int")
        numbers = [param.low, param.high] + ([param.step] if param.step is not None else [])
        if is_int and any(float(v) != int(v) for v in numbers):
            return [f"{name} is a whole number: low, high and step must be too"]
        if is_int:
            param.low, param.high = int(param.low), int(param.high)
            param.step = int(param.step) if param.step is not None else None
        checks = [("low", param.low), ("high", param.high)]
    if spec.sampler == "grid" and not param_grid(param, field_type.startswith("int")):
        return ["the grid sampler needs choices, an int range or a float range with a step"]
    problems = []
    for what, value in checks:  # the config's own validator says what a value may be
        try:
            config_from_dict(with_values(spec.base, {name: value}))
        except ConfigError as exc:
            problems.append(f"{what}: {exc}")
    return problems


def _check_enqueued(spec: SweepSpec) -> list[str]:
    """Each enqueued trial names searched fields only, with values the search could have drawn."""
    if len(spec.enqueue) > spec.trials:
        return [f"enqueue: {len(spec.enqueue)} trials, more than the sweep's {spec.trials}"]
    problems = []
    for i, values in enumerate(spec.enqueue):
        for name, value in values.items():
            where = f"enqueue[{i}].{name}"
            param = spec.space.get(name)
            if param is None:
                problems.append(f"{where}: not a searched field (the space has {', '.join(spec.space)})")
            elif param.is_choice and value not in param.values:
                problems.append(f"{where}: {json.dumps(value)} is not one of {json.dumps(param.values)}")
            elif not param.is_choice and (isinstance(value, bool) or not isinstance(value, int | float)
                                          or not param.low <= value <= param.high):
                problems.append(f"{where}: {json.dumps(value)} is outside the range [{param.low:g}, {param.high:g}]")
    return problems


# --- reading and writing -----------------------------------------------------------------------------------------


def spec_from_dict(data: Any, folder: Path | None = None) -> SweepSpec:
    """A validated spec from plain data (YAML, JSON, a form); `base` given as a file is read relative to
    `folder`. ConfigError names every field at fault."""
    if not isinstance(data, dict):
        raise ConfigError(f"a sweep spec must be a mapping, got {type(data).__name__}")
    if isinstance(data.get("base"), str):
        path = Path(data["base"])
        if not path.is_absolute() and folder is not None and (folder / path).is_file():
            path = folder / path
        data = {**data, "base": read_config_file(path)}
    try:
        return TypeAdapter(SweepSpec).validate_python(data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, SweepSpec)) from None


def load_spec(path: str | Path) -> SweepSpec:
    """A sweep spec file (.yaml, .yml or .json); ConfigError names the file and the field."""
    path = Path(path)
    data = read_config_file(path)
    try:
        return spec_from_dict(data, path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def spec_to_dict(spec: SweepSpec) -> dict[str, Any]:
    return dataclasses.asdict(spec)
