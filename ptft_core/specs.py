"""What the names in a config point at, one owner: model specs (`run:<id>[/<checkpoint>]`, a preset, the built-in
checkpoint, a folder, a hub id) and dataset names (built-in, registered, `hf:<hub id>[:<config>]`).

`check_names` runs when a run is submitted, before anything is written: a name that cannot resolve (a folder
without a model, `../../etc`, a dataset this lab does not know, a run id with the shape of a path) is refused
with the field named, instead of being queued to fail in a worker. Whether a named run exists, and whether its
checkpoint will, is the engine's question (it holds the store). Nothing here imports torch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ptft_core.config import BUILTIN_CHECKPOINT, CHECKPOINT_FIELD, IMAGE_KINDS, IMAGE_MODELS, PRESETS, ConfigError
from ptft_core.data.registry import known_names, label_names, modality
from ptft_core.ids import is_id
from ptft_core.rundir import MODEL_FILES

RUN_SPEC = "run:"  # a model spec naming a run's checkpoint: run:<run_id>[/<checkpoint>]
FINAL_CHECKPOINT = "final"  # what run:<run_id> alone means
_CHECKPOINT_NAME = re.compile(r"final|best|step-\d{1,9}")
# A Hugging Face hub id: `name` or `owner/name`, letters, digits, '-', '_' and '.', at most 96 characters a part
# (the hub's own limit), never a path step ('..').
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?")
HUB_DATASET = "hf:"


def run_reference(spec: str) -> tuple[str, str] | None:
    """`run:<id>/step-100` -> (id, "step-100"), `run:<id>` -> (id, "final"); None for any other model spec."""
    if not spec.startswith(RUN_SPEC):
        return None
    run_id, _, name = spec[len(RUN_SPEC):].partition("/")
    return run_id, name or FINAL_CHECKPOINT


def parent_run(spec: str) -> str | None:
    """The run a `run:<id>[/step-<N>]` model spec descends from (the lineage); None for any other spec."""
    reference = run_reference(spec)
    return reference[0] if reference else None


def _is_hub_id(text: str) -> bool:
    return _HUB_ID.fullmatch(text) is not None and ".." not in text


def check_model_spec(spec: str, field: str) -> None:
    """Refuse a model spec that cannot resolve: ConfigError naming `field`."""
    if spec in PRESETS or spec == BUILTIN_CHECKPOINT or spec in IMAGE_MODELS:
        return
    reference = run_reference(spec)
    if reference is not None:
        run_id, name = reference
        if not is_id(run_id) or not _CHECKPOINT_NAME.fullmatch(name):
            raise ConfigError(f"{field}: {spec[:80]!r} is not run:<run id>[/final|/best|/step-<N>]")
        return
    path = Path(spec).expanduser()
    looks_like_path = spec.startswith((".", "/", "~"))
    if path.is_dir() or looks_like_path:
        if not any((path / file).is_file() for file in MODEL_FILES):
            what = ("holds no model (no config.json, nor an image model's image_model.json)" if path.is_dir()
                    else "is no folder")
            raise ConfigError(f"{field}: {spec[:80]!r} {what}")
        return
    if not _is_hub_id(spec):
        raise ConfigError(f"{field}: {spec[:80]!r} is none of: a preset ({', '.join(PRESETS)}), "
                          f"{BUILTIN_CHECKPOINT}, run:<run id>, a model folder, a Hugging Face hub id")


def check_dataset(name: str, field: str, wanted: str = "text") -> None:
    """Refuse a dataset name this lab cannot load (not built-in, not registered, not `hf:<hub id>[:<config>]`)
    or one of the other modality than the run reads (`wanted`: "text" or "image")."""

    if name.startswith(HUB_DATASET):
        hub_id, _, config = name[len(HUB_DATASET):].partition(":")
        if _is_hub_id(hub_id) and (not config or re.fullmatch(r"[A-Za-z0-9_.-]{1,96}", config)):
            return
        raise ConfigError(f"{field}: {name[:80]!r} is not hf:<hub id>[:<config>]")
    known = known_names()
    if name not in known:
        raise ConfigError(f"{field}: no dataset {name[:80]!r} in this lab (known: {', '.join(known)}); register "
                          "a file on the Data page, or use hf:<hub id>")
    holds = modality(name)
    if holds != wanted:
        raise ConfigError(f"{field}: dataset {name!r} holds {holds} data and this run reads {wanted} data; pick "
                          f"a {wanted} dataset")


def check_classes(dataset: str, classes: list[str], field: str = "classes") -> None:
    """Refuse classes that are not labels of `dataset`, named twice, or fewer than two (nothing to tell apart)."""
    if not classes:
        return
    known = label_names(dataset)
    unknown = [c for c in classes if c not in known]
    if unknown:
        raise ConfigError(f"{field}: {', '.join(map(repr, unknown[:5]))} "
                          f"{'is' if len(unknown) == 1 else 'are'} not a label of {dataset} (its labels: "
                          f"{', '.join(known[:20])}{' ...' if len(known) > 20 else ''})")
    if len(set(classes)) != len(classes):
        raise ConfigError(f"{field}: a class is named twice ({', '.join(classes)})")
    if len(classes) < 2:
        raise ConfigError(f"{field}: a classifier needs at least two classes (got {', '.join(classes)})")


def check_names(config: dict[str, Any]) -> None:
    """Every model spec and dataset name of a (validated) config, checked; ConfigError names the first bad one."""
    check_model_spec(config[CHECKPOINT_FIELD[config["kind"]]], CHECKPOINT_FIELD[config["kind"]])
    wanted = "image" if config["kind"] in IMAGE_KINDS else "text"
    for field in ("dataset", "then_dataset", "probe_corpus"):
        if config.get(field) is not None:
            check_dataset(config[field], field, wanted)
    for field in ("corpus", "datasets"):
        for name in config.get(field) or ():
            check_dataset(name, field, wanted)
    if config.get("classes"):
        check_classes(config["dataset"], config["classes"])
