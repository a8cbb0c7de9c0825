"""ImageNet weights for the lab's ResNets from timm's checkpoints: a checkpoint under torchvision's parameter names
(made here, layer by layer, as torchvision lays out ResNet-18) loads into resnet18 strictly and fine-tunes like any
base; one of another shape is refused; a hub id offline is one clear line. No network: the hub's download code
runs against an empty cache in offline mode."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ptft_core import paths
from ptft_core.config import ConfigError, ImageFinetuneConfig
from ptft_core.journal import MemoryLogger
from ptft_core.training import run_image_finetune
from ptft_core.training.checkpoint import load_image_classifier
from ptft_core.vision.pretrained import load_timm_resnet

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def torchvision_resnet18(classes: int = 1000) -> dict[str, torch.Tensor]:
    """Random tensors under torchvision's ResNet-18 names and shapes (conv1, bn1, layer1-4 of two basic blocks, a
    downsample at the first block of layers 2-4, fc)."""
    generator = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}

    def conv(name: str, outputs: int, inputs: int, k: int) -> None:
        state[f"{name}.weight"] = torch.randn(outputs, inputs, k, k, generator=generator) * 0.05

    def bn(name: str, n: int) -> None:
        state.update({f"{name}.weight": torch.rand(n, generator=generator) + 0.5,
                      f"{name}.bias": torch.randn(n, generator=generator) * 0.1,
                      f"{name}.running_mean": torch.randn(n, generator=generator) * 0.1,
                      f"{name}.running_var": torch.rand(n, generator=generator) + 0.5,
                      f"{name}.num_batches_tracked": torch.tensor(1000)})

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inputs = 64
    for layer, width in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            at = f"layer{layer}.{block}"
            conv(f"{at}.conv1", width, inputs if block == 0 else width, 3)
            bn(f"{at}.bn1", width)
            conv(f"{at}.conv2", width, width, 3)
            bn(f"{at}.bn2", width)
            if block == 0 and layer > 1:
                conv(f"{at}.downsample.0", width, inputs, 1)
                bn(f"{at}.downsample.1", width)
        inputs = width
    state["fc.weight"] = torch.randn(classes, 512, generator=generator) * 0.01
    state["fc.bias"] = torch.zeros(classes)
    return state


def timm_folder(folder: Path, architecture: str = "resnet18", state: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state or torchvision_resnet18(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "architecture": architecture, "num_classes": 1000, "num_features": 512,
        "pretrained_cfg": {"input_size": [3, 224, 224], "mean": MEAN, "std": STD}}), encoding="utf-8")
    return folder


def test_a_torchvision_named_resnet18_loads_into_the_lab_s_resnet18_weight_for_weight(tmp_path):
    state = torchvision_resnet18()
    model, record = load_timm_resnet(timm_folder(tmp_path / "timm"))
    mine = model.state_dict()
    assert len(mine) == len(state)  # strict: every tensor has one place
    assert torch.equal(mine["backbone.stem.0.weight"], state["conv1.weight"])
    assert torch.equal(mine["backbone.stages.1.0.shortcut.1.running_var"], state["layer2.0.downsample.1.running_var"])
    assert torch.equal(mine["backbone.stages.3.1.conv2.weight"], state["layer4.1.conv2.weight"])
    assert torch.equal(mine["classifier.weight"], state["fc.weight"])
    assert record["image_size"] == 224 and record["mean"] == MEAN and len(record["label_names"]) == 1000


def test_a_checkpoint_of_another_shape_or_architecture_is_refused(tmp_path):
    # resnet34 has 3-4-6-3 blocks to resnet18's 2-2-2-2: 8 blocks of 12 tensors are not in the file
    with pytest.raises(ConfigError, match=r"not a resnet34's: 96 missing \(e\.g\. backbone\.stages\.0\.2\.conv1\."
                                          r"weight\)$"):
        load_timm_resnet(timm_folder(tmp_path / "a", "resnet34"))
    with pytest.raises(ConfigError, match=r"a timm 'vit_base_patch16_224'; the lab loads ImageNet weights into "
                                          "resnet18 and resnet34 only"):
        load_timm_resnet(timm_folder(tmp_path / "b", "vit_base_patch16_224"))


@pytest.mark.slow
def test_a_fine_tune_starts_from_a_timm_folder_with_its_normalisation_and_no_source_task(home, tmp_path):
    folder = timm_folder(tmp_path / "timm")
    config = ImageFinetuneConfig(base=str(folder), dataset="digits", image_size=32, batch_size=8, max_steps=2,
                                 eval_count=1, precision="float32")
    logger = MemoryLogger()
    assert run_image_finetune(config, tmp_path / "run", logger) == "completed"
    model, record = load_image_classifier(tmp_path / "run" / "checkpoints" / "final")
    assert (record["preset"], record["channels"], record["image_size"]) == ("resnet18", 3, 32)  # grey read as RGB
    assert record["mean"] == MEAN and record["std"] == STD  # ImageNet's, as the base was trained with
    assert not any(e["type"] == "metric" and e["split"] == "forgetting" for e in logger.events)  # no ImageNet here
    with pytest.raises(ConfigError, match="replay_fraction: .*its source task is not in this lab"):
        run_image_finetune(dataclasses.replace(config, replay_fraction=0.2), tmp_path / "r", MemoryLogger())


@pytest.mark.slow
def test_a_hub_id_offline_is_one_clear_error(tmp_path):
    code = ("from ptft_core.training.images import base_folder\n"
            "from ptft_core.config import ConfigError\n"
            "try:\n    base_folder('timm/resnet18.a1_in1k')\n"
            "except ConfigError as exc:\n    print('ERROR', exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=paths.REPO_ROOT,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert "ERROR base: could not load 'timm/resnet18.a1_in1k' from the Hugging Face hub (no network?)" in out.stdout
    assert "a folder holding the checkpoint's config.json and model.safetensors" in out.stdout
