"""ImageNet weights for the lab's ResNets, from timm's checkpoints: a Hugging Face hub id (`timm/resnet18.a1_in1k`,
where a network exists) or a folder holding one (its `config.json` and `model.safetensors`, downloaded elsewhere).

Why timm's: its ResNet checkpoints are plain safetensors under torchvision's parameter names (conv1, bn1,
layer1.0.conv1, ..., downsample.0, fc) with the normalisation and input size in `config.json`, and they live on the
hub the text side already reads; PyPI's torchvision does not import beside this project's pinned torch, and
neither package ships weights. `torchvision_names` maps those names onto `vision/models.py`'s (stem, stages,
classifier); loading is strict, so a checkpoint of another shape is refused, not half-loaded. Only resnet18 and
resnet34 have an ImageNet layout here: VGG's ImageNet head (three 4,096-wide layers on a 7x7 map) is not the
lab's pooled one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from ptft_core.config import ConfigError
from ptft_core.vision.models import ImageClassifier, build_classifier

TIMM_PRESETS = ("resnet18", "resnet34")  # timm's `architecture` names the lab builds with ImageNet's layout
WEIGHTS, CONFIG = "model.safetensors", "config.json"
_RENAMES = (  # torchvision / timm -> the lab's, applied in order to each key's start
    (re.compile(r"^conv1\."), "backbone.stem.0."),
    (re.compile(r"^bn1\."), "backbone.stem.1."),
    (re.compile(r"^layer(\d)\.(\d+)\.downsample\."), lambda m: f"backbone.stages.{int(m[1]) - 1}.{m[2]}.shortcut."),
    (re.compile(r"^layer(\d)\.(\d+)\."), lambda m: f"backbone.stages.{int(m[1]) - 1}.{m[2]}."),
    (re.compile(r"^fc\."), "classifier."),
)


def torchvision_names(state: dict[str, Any]) -> dict[str, Any]:
    """A ResNet state dict under torchvision's names, renamed to the lab's; a name none of the rules knows stays."""
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in _RENAMES:
            new, count = pattern.subn(replacement, key, count=1)
            if count:
                key = new
                break
        renamed[key] = value
    return renamed


def is_timm_folder(folder: Path) -> bool:
    """Whether `folder` holds a timm checkpoint (its config names an `architecture`)."""
    try:
        return "architecture" in json.loads((Path(folder) / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def hub_folder(spec: str) -> Path:
    """The local folder of hub checkpoint `spec` (downloaded into the Hugging Face cache, or found there
    offline); one clear error when it cannot be had."""
    from huggingface_hub import hf_hub_download  # only where a hub checkpoint is asked for

    try:
        config = hf_hub_download(spec, CONFIG)
        hf_hub_download(spec, WEIGHTS)
    except Exception as exc:  # offline, an unknown repo, a repo without these files: one line for the user
        raise ConfigError(f"base: could not load {spec!r} from the Hugging Face hub (no network?): "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. Offline, start from "
                          "a preset or run:<id> of an image pretraining, or a folder holding the checkpoint's "
                          f"{CONFIG} and {WEIGHTS}") from exc
    return Path(config).parent


def load_timm_resnet(folder: Path) -> tuple[ImageClassifier, dict[str, Any]]:
    """A timm ResNet checkpoint as the lab's classifier (its ImageNet head kept: the source task's head) and the
    fields of its record: preset, channels, label names, input size, normalisation."""
    config = json.loads((Path(folder) / CONFIG).read_text(encoding="utf-8"))
    preset = config.get("architecture")
    if preset not in TIMM_PRESETS:
        raise ConfigError(f"base: {folder}: a timm {preset!r}; the lab loads ImageNet weights into "
                          f"{' and '.join(TIMM_PRESETS)} only")
    classes = int(config.get("num_classes") or 1000)
    pretrained = config.get("pretrained_cfg") or {}
    names = list(config.get("label_names") or [f"class {i}" for i in range(classes)])
    model = build_classifier(preset, classes, 3, 0.0)
    weights, wanted = torchvision_names(load_file(str(Path(folder) / WEIGHTS))), model.state_dict()
    wrong = {"missing": [k for k in wanted if k not in weights], "unexpected": [k for k in weights if k not in wanted],
             "misshapen": [k for k in wanted if k in weights and weights[k].shape != wanted[k].shape]}
    if any(wrong.values()):  # strict: a checkpoint of another shape is refused, not half-loaded
        raise ConfigError(f"base: {folder}: its weights are not a {preset}'s: " + "; ".join(
            f"{len(keys)} {what} (e.g. {keys[0]})" for what, keys in wrong.items() if keys))
    model.load_state_dict(weights)
    size = int((pretrained.get("input_size") or [3, 224, 224])[-1])
    mean = tuple(pretrained.get("mean") or (0.485, 0.456, 0.406))
    std = tuple(pretrained.get("std") or (0.229, 0.224, 0.225))
    return model, {"preset": preset, "channels": 3, "label_names": names, "image_size": size, "mean": list(mean),
                   "std": list(std)}
