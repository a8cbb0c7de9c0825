"""Checkpoints: `RUN_DIR/checkpoints/<name>/`, each a `save_pretrained` folder plus what a run needs to go on.

```
checkpoints/step-<N>/   model (save_pretrained) + tokenizer + ptft_config.json + training_state.pt
                        [+ mlm_head.safetensors when the model has an MLM head]
checkpoints/best/       fine-tuning only: the best weights so far on the validation metric (no training state)
checkpoints/final/      pretraining: the last step; fine-tuning: the best checkpoint (what `run:<id>` loads)
```

`training_state.pt` holds the optimizer, the scheduler, the step, the RNG states and each loop's own
position (data order, early stopping). Every folder is written under a temporary name and renamed into place,
so a crash mid-save leaves the previous checkpoint intact, never a half-written one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from ptft_core.config import RunConfig, config_to_json
from ptft_core.journal import MetricLogger, fsync
from ptft_core.models import MaskedLMHead, save_mlm_head
from ptft_core.rundir import STATE_FILE, RunDir

CONFIG_FILE = "ptft_config.json"


def save_checkpoint(run_dir: Path, name: str, step: int, model, tokenizer, config: RunConfig,
                    logger: MetricLogger, state: dict | None = None, mlm_head: MaskedLMHead | None = None,
                    announce: bool = True, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write checkpoint `name` atomically and, unless it is internal (`announce=False`: fine-tuning's `best`,
    renamed to `final` at the end), announce it with a `checkpoint` event. `state_dict`: weights to write in
    place of the model's own (weights kept from an earlier step, for the same architecture)."""
    target = RunDir(run_dir).checkpoint(name)
    tmp = target.with_name(f".tmp-{name}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, state_dict=state_dict)
    tokenizer.save_pretrained(tmp)
    (tmp / CONFIG_FILE).write_text(config_to_json(config), encoding="utf-8")
    if mlm_head is not None:
        save_mlm_head(mlm_head, tmp)
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
