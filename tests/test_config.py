"""Configs people write by hand: coercion, one readable line per error naming the field, key=value overrides, the
field listing and JSON Schema, and configs written by earlier versions (fixtures) loading unchanged."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ptft_core import paths
from ptft_core.cli import main
from ptft_core.config import (
    GROUPS,
    ConfigError,
    EvaluateConfig,
    FinetuneConfig,
    ImageFinetuneConfig,
    ImagePretrainConfig,
    OptimConfig,
    PretrainConfig,
    config_from_dict,
    config_to_dict,
    config_to_json,
    describe_fields,
    field_specs,
    json_schema,
    load_config,
)

FIXTURES = Path(__file__).parent / "fixtures" / "configs"


def yaml_file(tmp_path: Path, body: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text("kind: finetune\nbase: minilm-l6\n" + body, encoding="utf-8")
    return path


@pytest.mark.parametrize(("body", "check"), [
    ("optim: {lr: 1e-4}\n", lambda c: c.optim.lr == 1e-4),  # YAML reads 1e-4 (no dot) as a string
    ("optim: {lr: 5e-5}\n", lambda c: c.optim.lr == 5e-5),
    ("epochs: '3'\n", lambda c: c.epochs == 3),
    ("label_fraction: '0.1'\nmax_steps: 40.0\n", lambda c: c.label_fraction == 0.1 and c.max_steps == 40),
    ("tags: baseline\n", lambda c: c.tags == ["baseline"]),  # one name where a list is expected
])
def test_hand_written_values_coerce_when_their_meaning_is_clear(tmp_path, body, check):
    config = load_config(yaml_file(tmp_path, body))
    assert check(config), config
    assert isinstance(config.optim.lr, float) and isinstance(config.epochs, int)


@pytest.mark.parametrize(("body", "message"), [
    ("epochs: three\n", "epochs: must be a whole number (got 'three')"),
    ("epochs: 2.5\n", "epochs: must be a whole number (got 2.5)"),
    ("optim: {lrr: 1e-4}\n", "optim.lrr: unknown field; did you mean 'lr'?"),
    ("optim: {lr: -1}\n", "optim.lr: must be > 0 (got -1)"),
    ("optim: 3\n", "optim: must be a mapping (got 3)"),
    ("label_fracton: 0.1\n", "label_fracton: unknown field; did you mean 'label_fraction'?"),
    ("zzz: 1\n", "zzz: unknown field"),
    ("label_fraction: 0\n", "label_fraction: must be > 0 (got 0)"),
    ("max_length: 1024\n", "max_length: must be <= 512 (got 1024)"),
    ("strategy: frozen\n", "strategy: must be one of 'full', 'linear_probe', 'freeze_bottom', 'gradual_unfreeze' "
                           "or 'discriminative' (got 'frozen')"),
    ("scratch: maybe\n", "scratch: must be true or false (got 'maybe')"),
    ("then_dataset: movies\n", "then_dataset: must differ from dataset (got 'movies' for both)"),
    ("dataset: '  '\n", "dataset: must not be empty (got '  ')"),
    ("epochs: 0\nseed: -1\n", "epochs: must be > 0 (got 0); seed: must be >= 0 (got -1)"),  # every problem at once
])
def test_each_error_names_the_field_and_what_is_wrong(tmp_path, body, message):
    path = yaml_file(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {message}"


def test_errors_of_the_other_kinds():
    with pytest.raises(ConfigError,
                       match=r"^kind: must be one of pretrain, finetune, evaluate, image_pretrain, image_finetune "
                             r"\(got 'train'\)$"):
        config_from_dict({"kind": "train"})
    with pytest.raises(ConfigError, match=r"^model: required \(no default\); datasets: required \(no default\)$"):
        config_from_dict({"kind": "evaluate"})
    with pytest.raises(ConfigError, match=r"^datasets: must have at least 1 item"):
        config_from_dict({"kind": "evaluate", "model": "run:ft-1", "datasets": []})
    with pytest.raises(ConfigError, match=r"^checkpoint_steps: must lie in \(0, max_steps=5\] \(got \[10\]\)$"):
        PretrainConfig(max_steps=5, checkpoint_steps=[10])
    with pytest.raises(ConfigError, match=r"^corpus: must have at least 1 item"):
        PretrainConfig(corpus=[])
    with pytest.raises(ConfigError, match=r"^warmup_ratio: must be < 1 \(got 1\)$"):
        OptimConfig(warmup_ratio=1)
    # dataclasses.replace validates too (the studies and the seeds loop build configs that way)
    with pytest.raises(ConfigError, match=r"^epochs: must be > 0 \(got 0\)$"):
        dataclasses.replace(FinetuneConfig(), epochs=0)


KINDS = (PretrainConfig, FinetuneConfig, EvaluateConfig, ImagePretrainConfig, ImageFinetuneConfig)


@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)
def test_every_field_has_an_upper_bound_that_says_why(cls):
    """A number, a text and a list each have a maximum; a bound above a share's natural 1 is explained in the
    field's help (`At most ...: why`), so a form and `--help-config` tell the user the reason."""
    for spec in field_specs(cls):
        if spec.type in ("choice", "bool"):
            continue
        bounded = spec.max_length if spec.type in ("str", "list", "str or null") else spec.maximum
        assert bounded is not None, f"{cls.__name__}.{spec.name} ({spec.type}) has no upper bound"
        if spec.type in ("int", "float", "float or null") and spec.maximum <= 1:
            continue  # a share or a rate: bounded by what it means
        assert "at most" in spec.help.lower(), f"{cls.__name__}.{spec.name}: the help does not say why {bounded}"


@pytest.mark.parametrize(("data", "message"), [
    ({"kind": "finetune", "epochs": 10**9}, "epochs: must be <= 1000 (got 1000000000)"),
    ({"kind": "finetune", "batch_size": 10**7}, "batch_size: must be <= 1024 (got 10000000)"),
    ({"kind": "finetune", "eval_count": 10**12}, "eval_count: must be <= 1000 (got 1000000000000)"),
    ({"kind": "finetune", "probe_size": 10**9}, "probe_size: must be <= 10000 (got 1000000000)"),
    ({"kind": "pretrain", "max_steps": 10**15, "eval_every": 1}, "max_steps: must be <= 1e+06 (got 1000000000000000)"),
    ({"kind": "pretrain", "max_steps": 10**6, "eval_every": 1},
     "eval_every: 1,000,000 evaluations in 1,000,000 steps; at most 1,000 (eval_every >= 1000)"),
    ({"kind": "pretrain", "max_steps": 10**6, "checkpoint_steps": list(range(1, 50_001))},
     "checkpoint_steps: must have at most 100 items"),
    ({"kind": "finetune", "optim": {"lr": float("inf")}}, "optim.lr: must be a finite number (got Infinity)"),
    ({"kind": "finetune", "optim": {"lr": "NaN"}}, "optim.lr: must be a finite number (got 'NaN')"),
    ({"kind": "finetune", "seed": 2**40}, "seed: must be <= 4.29497e+09 (got 1099511627776)"),
    ({"kind": "finetune", "tags": [str(i) for i in range(51)]}, "tags: must have at most 50 items"),
])
def test_absurd_values_are_refused_with_the_bound(data, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert str(info.value).startswith(message), str(info.value)[:300]


def test_an_error_quotes_only_a_short_prefix_of_a_huge_value():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"kind": "finetune", "name": "x" * 5_000_000})
    text = str(info.value)
    assert text.startswith("name: must have at most 200 characters (got 'xxx") and len(text) < 200
    assert text.endswith("... (5,000,002 characters))")


def test_the_cli_exits_2_with_the_field_named_and_no_traceback(tmp_path):
    path = yaml_file(tmp_path, "optim: {lrr: 1e-4}\n")
    done = subprocess.run([sys.executable, "-m", "ptft_core", "run", str(path)], capture_output=True, text=True,
                          timeout=120, cwd=paths.REPO_ROOT)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: {path}: optim.lrr: unknown field; did you mean 'lr'?"


def test_overrides_on_the_command_line(tmp_path, capsys):
    path = yaml_file(tmp_path, "optim: {lr: 5e-5, warmup_ratio: 0.1}\nepochs: 1\n")
    config = load_config(path, ["optim.lr=1e-4", "seed=3", "tags=[a, b]", "dropout=null", "then_dataset=tweets"])
    assert (config.optim.lr, config.optim.warmup_ratio, config.seed, config.tags, config.dropout,
            config.then_dataset, config.epochs) == (1e-4, 0.1, 3, ["a", "b"], None, "tweets", 1)
    with pytest.raises(ConfigError, match="optim.lrr: unknown field; did you mean 'lr'"):
        load_config(path, ["optim.lrr=1e-4"])
    with pytest.raises(ConfigError, match="epochs: must be a whole number"):
        load_config(path, ["epochs=three"])
    assert main(["run", str(path), "seed"]) == 2  # neither a file nor key=value
    assert "no such config file" in capsys.readouterr().err
    assert main(["run", "seed=3"]) == 2
    assert "name at least one config file" in capsys.readouterr().err


def test_help_config_lists_every_field_with_type_default_and_help(capsys):
    assert main(["run", "--help-config", "finetune"]) == 0
    out = capsys.readouterr().out
    for spec in field_specs(FinetuneConfig):
        assert f"  {spec.name} (" in out, spec.name
        assert spec.help, f"{spec.name} has no help"
    assert "  optim.lr (float, > 0, <= 10) = 5e-05" in out and "  label_fraction (float, > 0, <= 1) = 1.0" in out
    assert [line for line in out.splitlines() if line in GROUPS] == list(GROUPS)  # grouped, in order
    assert "  model (str, at most 500 characters) = 'tiny'" in describe_fields("pretrain")


def test_json_schema_carries_types_bounds_defaults_help_and_groups(capsys):
    assert main(["run", "--config-schema", "pretrain"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema == json_schema("pretrain")
    props = json_schema("finetune")["properties"]
    defaults = config_to_dict(FinetuneConfig())
    for name, prop in props.items():
        if name != "optim":
            assert prop.get("default") == defaults[name], name
        assert prop.get("description") and prop.get("group") in GROUPS, name
    assert props["label_fraction"]["exclusiveMinimum"] == 0 and props["label_fraction"]["maximum"] == 1
    assert props["strategy"]["enum"][0] == "full"
    assert json_schema("finetune")["additionalProperties"] is False  # unknown keys are refused


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_configs_written_by_earlier_versions_load(fixture):
    """Run rows and checkpoints' ptft_config.json of earlier versions (2026-11-22: before eval_count,
    eval_val_samples and freeze_encoder existed; 2026-12-01: the dataclass version, before family and objective):
    each loads, keeps every value it stored, and the fields added since take their defaults."""
    stored = json.loads((FIXTURES / fixture).read_text())
    config = config_from_dict(stored)
    again = config_to_dict(config)
    assert {k: again[k] for k in stored} == stored
    assert config_from_dict(json.loads(config_to_json(config))) == config
    # Defaults of a config with the same model: a default can depend on it (a preset's objective is its family's).
    defaults = config_to_dict(type(config)(**{k: stored[k] for k in ("model",) if k in stored}))
    assert {k: v for k, v in again.items() if k not in stored} == {k: defaults[k] for k in again if k not in stored}


PARENT_EXAMPLE = {"finetune_from_causal.yaml": "pretrain_causal_tiny.yaml",  # base: run:<id of a run of it>
                  "image_finetune_digits.yaml": "image_pretrain_mnist.yaml"}


@pytest.mark.slow
@pytest.mark.parametrize("example", sorted(p.name for p in (paths.REPO_ROOT / "configs").glob("*.yaml")))
def test_every_example_config_loads_and_trains(example, tmp_path):
    """Each file in configs/ as a user runs it, cut to two steps per task by overrides (its checkpoint steps and
    evaluation samples with it): real models, real data, real steps."""
    from ptft_core.journal import MemoryLogger
    from ptft_core.training import run_evaluate, run_finetune, run_image_finetune, run_image_pretrain, run_pretrain

    path = paths.REPO_ROOT / "configs" / example
    kind = load_config(path).kind
    logger = MemoryLogger()
    if kind == "evaluate":  # it scores a fine-tune: a two-step one of the first example, as a folder
        tuned = load_config(paths.REPO_ROOT / "configs" / "finetune_full.yaml", ["max_steps=2", "probe_size=8",
                                                                                      "eval_val_samples=32"])
        assert run_finetune(tuned, tmp_path / "ft", MemoryLogger()) == "completed"
        config = load_config(path, [f"model={tmp_path / 'ft' / 'checkpoints' / 'final'}"])
        assert run_evaluate(config, tmp_path / "ev", logger) == "completed"
        assert {e["name"] for e in logger.events if e["type"] == "metric"} >= {"accuracy@amazon", "accuracy@tweets"}
        return
    overrides = ["max_steps=2", "eval_every=1"] + {
        "pretrain": ["checkpoint_steps=[1]"], "image_pretrain": [], "image_finetune": [],
        "finetune": ["eval_train_samples=8", "eval_val_samples=32", "probe_size=8"]}[kind]
    trainers = {"pretrain": run_pretrain, "finetune": run_finetune, "image_pretrain": run_image_pretrain,
                "image_finetune": run_image_finetune}
    if example in PARENT_EXAMPLE:  # it fine-tunes a run's checkpoint: a two-step run of its parent example
        parent_path = paths.REPO_ROOT / "configs" / PARENT_EXAMPLE[example]
        parent = load_config(parent_path, ["max_steps=2"] + (["checkpoint_steps=[]"]
                                                             if load_config(parent_path).kind == "pretrain" else []))
        assert trainers[parent.kind](parent, tmp_path / "parent", MemoryLogger()) == "completed"
        overrides.append(f"base={tmp_path / 'parent' / 'checkpoints' / 'final'}")
    config = load_config(path, overrides)
    assert trainers[kind](config, tmp_path, logger) == "completed"
    assert max(e["step"] for e in logger.events if e["type"] == "metric") >= 2


def test_task_steps_count_what_replay_leaves_of_each_batch():
    """One count for the trainer, the form and the cost model: replay takes part of each batch, so an epoch of
    the current task needs more steps (the form and the cost model once counted whole batches)."""
    from ptft_core.config import task_steps
    from ptft_core.ui import finetune_steps

    plain = FinetuneConfig(batch_size=32, epochs=2)
    assert task_steps(plain, 0, 100) == (4, 8)
    mlm = dataclasses.replace(plain, replay_fraction=0.5, replay_source="mlm")
    assert task_steps(mlm, 0, 100) == (7, 14)  # 16 of each 32 are replayed MLM blocks
    sequential = dataclasses.replace(plain, then_dataset="amazon", then_epochs=1, replay_fraction=0.25)
    assert task_steps(sequential, 0, 100) == (4, 8)  # the first task has nothing to replay yet
    assert task_steps(sequential, 1, 100) == (5, 5)  # 24 current examples a batch
    assert task_steps(dataclasses.replace(mlm, max_steps=10), 0, 100) == (7, 10)
    fields = {"batch_size": 32, "epochs": 2, "then_epochs": 1, "max_steps": 0, "replay_fraction": 0.25,
              "replay_source": "task", "dataset": "movies", "base": None}
    assert finetune_steps(fields, 100, 100) == 8 + 5
