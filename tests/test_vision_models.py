"""The image models: the published shapes, any input size, and the layer groups every strategy works on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ptft_core.config import FinetuneConfig
from ptft_core.training.strategies import apply_strategy, head_parameters, layer_groups
from ptft_core.vision.models import PRESETS, build_classifier


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnets_have_the_published_parameter_counts():
    # torchvision's resnet18 / resnet34 (ImageNet: 3 channels, 1,000 classes): 11,689,512 and 21,797,672.
    assert count(build_classifier("resnet18", 1000, channels=3)) == 11_689_512
    assert count(build_classifier("resnet34", 1000, channels=3)) == 21_797_672


@pytest.mark.parametrize("preset, convolutions", [("vgg11", 8), ("vgg16", 13), ("vgg-small", 3)])
def test_vggs_have_their_configuration_s_convolutions(preset, convolutions):
    model = build_classifier(preset, 10)
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules()) == convolutions
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == len(PRESETS[preset].widths)


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("side, channels", [(8, 1), (28, 1), (32, 3)])
def test_every_preset_reads_any_size_and_mode(preset, side, channels):
    model = build_classifier(preset, 7, channels=channels, seed=0).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, channels, side, side))
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    assert model.features(torch.rand(2, channels, side, side)).shape == (2, PRESETS[preset].widths[-1])


def test_a_seed_gives_the_same_weights_and_another_seed_others():
    one, same, other = (build_classifier("resnet-small", 10, seed=s).state_dict() for s in (1, 1, 2))
    assert all(torch.equal(one[k], same[k]) for k in one)
    assert not torch.equal(one["backbone.stem.0.weight"], other["backbone.stem.0.weight"])


@pytest.mark.parametrize("preset", ["resnet-small", "vgg-small", "resnet18"])
def test_the_groups_are_stem_stages_head_and_freeze_bottom_freezes_them_bit_for_bit(preset):
    model = build_classifier(preset, 10, seed=0)
    groups = layer_groups(model)
    assert len(groups) == len(PRESETS[preset].widths) + 2
    assert {name.split(".")[1] for name, _ in groups[0]} <= {"stem"}  # VGG has no stem: an empty group 0
    assert all(name.startswith(f"backbone.stages.{i}.") for i, group in enumerate(groups[1:-1]) for name, _ in group)
    assert [name for name, _ in groups[-1]] == [name for name, _ in head_parameters(model)]
    assert [name for name, _ in groups[-1]] == ["classifier.weight", "classifier.bias"]

    trainable = apply_strategy(model, FinetuneConfig(strategy="freeze_bottom", freeze_layers=1))
    frozen = {name: p.detach().clone() for group in groups[:2] for name, p in group}
    head_before = model.classifier.weight.detach().clone()
    assert trainable == count(model) - sum(p.numel() for p in frozen.values())
    model.train()  # batch norm in training mode: its running statistics move, its weights only by the optimizer
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(torch.rand(4, 1, 16, 16)), torch.tensor([0, 1, 2, 3])).backward()
        optimizer.step()
    weights = dict(model.named_parameters())
    assert all(torch.equal(weights[name], before) for name, before in frozen.items())
    assert not torch.equal(weights["classifier.weight"], head_before)  # the rest trained
