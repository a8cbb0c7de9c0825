"""Cross-domain evaluation, a run kind of its own (`evaluate`): a fine-tuned classifier scored on other datasets'
test splits, in a worker like any training run (same device pool, same journal, same recovery).

Each dataset is one "step": its metrics go to the journal as split `transfer`, names `<metric>@<dataset>` at
step i (1..n), with a `progress` event after it, so the Runs page shows how far the run is and a cancel lands
between datasets. Nothing is checkpointed: an evaluation that stops is retried, not resumed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ptft_core.config import EVALUATE_SPLIT, ConfigError, EvaluateConfig, FinetuneConfig, config_from_dict
from ptft_core.data import label_names
from ptft_core.families import load_classifier
from ptft_core.journal import MetricLogger
from ptft_core.models import pick_device, resolve_checkpoint
from ptft_core.training.checkpoint import CONFIG_FILE
from ptft_core.training.finetune import classify, tokenize_split

DEFAULT_MAX_LENGTH = 128  # a folder that does not say how its fine-tune truncated


def trained_config(checkpoint: Path) -> FinetuneConfig | None:
    """The fine-tune config a ptft checkpoint was saved with (None for a foreign folder)."""
    path = checkpoint / CONFIG_FILE
    if not path.is_file():
        return None
    config = config_from_dict(json.loads(path.read_text(encoding="utf-8")))
    if not isinstance(config, FinetuneConfig):
        raise ConfigError(f"model: {checkpoint} is a {config.kind} checkpoint, not a fine-tuned classifier")
    return config


def run_evaluate(config: EvaluateConfig, run_dir: Path, logger: MetricLogger, *,
                 should_stop: Callable[[], bool] = lambda: False, resume: bool = False,
                 device: str | None = None) -> str:
    checkpoint = Path(resolve_checkpoint(config.model))
    trained = trained_config(checkpoint)
    labels = label_names(trained.then_dataset or trained.dataset) if trained else label_names(config.datasets[0])
    # Every dataset is checked before the model loads: a mismatch fails the run at once, with nothing written.
    for dataset in config.datasets:
        if label_names(dataset) != labels:
            raise ConfigError(f"datasets: {dataset}'s labels {label_names(dataset)} are not the classifier's "
                              f"{labels}")
    max_length = config.max_length or (trained.max_length if trained else DEFAULT_MAX_LENGTH)
    torch_device = pick_device(device or config.device)
    model, tokenizer = load_classifier(str(checkpoint), labels)
    model.to(torch_device)
    total = len(config.datasets)
    logger.event("progress", step=0, total_steps=total)
    for step, dataset in enumerate(config.datasets, start=1):
        if should_stop():
            return "cancelled"
        examples = tokenize_split(tokenizer, dataset, "test", max_length)
        for name, value in classify(model, examples, tokenizer.pad_token_id, torch_device).items():
            logger.metric(step, f"{name}@{dataset}", value, EVALUATE_SPLIT)
        logger.event("progress", step=step, total_steps=total)
    return "completed"
