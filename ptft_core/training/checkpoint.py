"""Checkpoints: `RUN_DIR/checkpoints/<name>/`, each a `save_pretrained` folder plus what a run needs to go on.

```
checkpoints/step-<N>/   model (save_pretrained) + tokenizer + ptft_config.json + training_state.pt
                        [+ mlm_head.safetensors when the model has an MLM head]
checkpoints/best/       fine-tuning only: the best weights so far on the validation metric (no training state)
checkpoints/final/      pretraining: the last step; fine-tuning: the best checkpoint (what `run:<id>` loads)
```

An image model's folder (`save_image_checkpoint`) holds `model.safetensors`, `image_model.json` (what rebuilds it:
preset, channels, labels, image size, normalisation) and `ptft_config.json` (+ `training_state.pt`) instead.

`training_state.pt` holds the optimizer, the scheduler, the step, the RNG states and each loop's own
position (data order, early stopping). Every folder is written under a temporary name and renamed into place,
so a crash mid-save leaves the previous checkpoint intact, never a half-written one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ptft_core.config import RunConfig, config_to_json
from ptft_core.journal import MetricLogger, fsync
from ptft_core.models import MaskedLMHead, save_mlm_head
from ptft_core.rundir import IMAGE_MODEL_FILE, STATE_FILE, RunDir
from ptft_core.vision.data import Normalisation
from ptft_core.vision.models import ImageClassifier, build_classifier

CONFIG_FILE = "ptft_config.json"


def save_checkpoint(run_dir: Path, name: str, step: int, model, tokenizer, config: RunConfig,
                    logger: MetricLogger, state: dict | None = None, mlm_head: MaskedLMHead | None = None,
                    announce: bool = True, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write checkpoint `name` atomically and, unless it is internal (`announce=False`: fine-tuning's `best`,
    renamed to `final` at the end), announce it with a `checkpoint` event. `state_dict`: weights to write in
    place of the model's own (weights kept from an earlier step, for the same architecture)."""
    def write(folder: Path) -> None:
        model.save_pretrained(folder, state_dict=state_dict)
        tokenizer.save_pretrained(folder)
        if mlm_head is not None:
            save_mlm_head(mlm_head, folder)

    return _write_checkpoint(run_dir, name, step, write, config, logger, state, announce)


def _write_checkpoint(run_dir: Path, name: str, step: int, write_model: Callable[[Path], None], config: RunConfig,
                      logger: MetricLogger, state: dict | None, announce: bool = True) -> Path:
    """Checkpoint `name`: the model (`write_model(folder)`), the config and the training state written under a
    temporary name, synced, and swapped in; announced with a `checkpoint` event unless `announce` is False."""
    target = RunDir(run_dir).checkpoint(name)
    tmp = target.with_name(f".tmp-{name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_model(tmp)
    (tmp / CONFIG_FILE).write_text(config_to_json(config), encoding="utf-8")
    if state is not None:
        torch.save(state, tmp / STATE_FILE)
    for file in tmp.iterdir():
        fsync(file)
    replace_dir(tmp, target)
    if announce:
        logger.event("checkpoint", step=step, path=str(target))
    return target


def replace_dir(source: Path, target: Path) -> None:
    """Move `source` to `target`, replacing an existing `target` without a moment where neither is complete."""
    old = target.with_name(f".old-{target.name}")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    source.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def promote_checkpoint(run_dir: Path, source: str, name: str, step: int, logger: MetricLogger) -> Path:
    """Rename checkpoint `source` to `name` (fine-tuning's best becomes its final); `step`: its weights' step."""
    folder = RunDir(run_dir).checkpoints
    replace_dir(folder / source, folder / name)
    logger.event("checkpoint", step=step, path=str(folder / name))
    return folder / name


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = RunDir(run_dir).step_checkpoints()
    return found[-1][1] if found else None


def prune_step_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` step checkpoints."""
    found = RunDir(run_dir).step_checkpoints()
    for _, path in found[:len(found) - keep]:
        shutil.rmtree(path, ignore_errors=True)


def load_training_state(folder: Path) -> dict:
    return torch.load(Path(folder) / STATE_FILE, weights_only=True)


def load_weights(model: nn.Module, folder: Path) -> None:
    """Load a `save_pretrained` folder's weights into an existing model, in place (tied or shared modules
    stay shared, which `from_pretrained` would not preserve)."""
    files = sorted(Path(folder).glob("model*.safetensors"))
    state = {k: v for file in files for k, v in load_file(str(file)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # A tied weight is saved once (T5's embed_tokens are its shared embedding): a key absent from the file is
    # fine only when its tensor is one that was loaded under another name.
    own = model.state_dict(keep_vars=True)
    loaded = {id(own[k]) for k in state if k in own}
    missing = [k for k in missing if id(own[k]) not in loaded]
    if missing or unexpected:
        raise RuntimeError(f"{folder}: weights do not fit the model: missing {missing[:5]}, unexpected "
                           f"{unexpected[:5]}")


# --- image models ---------------------------------------------------------------------------------------------

WEIGHTS_FILE = "model.safetensors"


def model_record(preset: str, channels: int, label_names: list[str], image_size: int,
                 normalisation: Normalisation) -> dict[str, Any]:
    return {"preset": preset, "channels": channels, "label_names": label_names, "image_size": image_size,
            "mean": list(normalisation.mean), "std": list(normalisation.std)}


def save_image_checkpoint(run_dir: Path, name: str, step: int, model: ImageClassifier, record: dict[str, Any],
                          config: RunConfig, logger: MetricLogger, state: dict | None = None) -> Path:
    """Write an image model's checkpoint `name` atomically and announce it (save_checkpoint's rules)."""
    def write(folder: Path) -> None:
        weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(weights, str(folder / WEIGHTS_FILE))
        (folder / IMAGE_MODEL_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    return _write_checkpoint(run_dir, name, step, write, config, logger, state)


def load_image_classifier(folder: Path, dropout: float = 0.0) -> tuple[ImageClassifier, dict[str, Any]]:
    """The classifier saved in `folder` (weights and batch-norm statistics) and its record."""
    folder = Path(folder)
    record = json.loads((folder / IMAGE_MODEL_FILE).read_text(encoding="utf-8"))
    model = build_classifier(record["preset"], len(record["label_names"]), record["channels"], dropout)
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return model, record
