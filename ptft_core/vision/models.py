"""Image classifiers from scratch: ResNet and VGG at four sizes, one shape for every strategy.

| preset       | what                                                                      | parameters |
|--------------|---------------------------------------------------------------------------|-----------:|
| resnet-small | CIFAR-style ResNet (He et al. 2016): 3x3 stem, no max-pool, 3 stages of a block, 16-64 wide | 0.08 M |
| resnet18     | ImageNet ResNet-18: 7x7 stride-2 stem, max-pool, 4 stages of 2 basic blocks | 11.2 M |
| resnet34     | the same with 3/4/6/3 blocks                                              | 21.3 M |
| vgg-small    | VGG-style: 3 stages of one 3x3 conv + BN + ReLU and a 2x2 max-pool, 16/32/64 channels | 0.02 M |
| vgg11        | VGG-11 with batch norm (configuration A, Simonyan & Zisserman 2015)       | 9.2 M |
| vgg16        | VGG-16 with batch norm (configuration D)                                  | 14.7 M |

(parameters for 10 classes of grey images.) Every model reads [N, C, H, W] float images and is
`ImageClassifier`: a backbone of `stem` (what comes before the first stage; VGG has none) and `stages` (an
`nn.ModuleList` of `nn.Sequential`, bottom to top), then a head that pools and classifies. That is the shape
`training/strategies.py` finds in every text family (embeddings, a stack of layers, a head), so full, linear
probe, freeze_bottom, gradual unfreezing and discriminative rates work on an image model unchanged: the stem is
group 0, each stage a layer, the head the rest. VGG's head is a global average pool and one linear layer, not the
original three 4,096-wide ones (124 M parameters that a 28-pixel image does not need; the ResNet papers' head, and
what a linear probe reads).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Shape:
    family: str  # "resnet" | "vgg"
    widths: tuple[int, ...]  # channels of each stage
    depths: tuple[int, ...]  # blocks (resnet) or 3x3 convolutions (vgg) of each stage
    imagenet_stem: bool  # resnet: a 7x7 stride-2 convolution and a max-pool before the stages


PRESETS: dict[str, Shape] = {
    "resnet-small": Shape("resnet", (16, 32, 64), (1, 1, 1), False),
    "resnet18": Shape("resnet", (64, 128, 256, 512), (2, 2, 2, 2), True),
    "resnet34": Shape("resnet", (64, 128, 256, 512), (3, 4, 6, 3), True),
    "vgg-small": Shape("vgg", (16, 32, 64), (1, 1, 1), False),
    "vgg11": Shape("vgg", (64, 128, 256, 512, 512), (1, 1, 2, 2, 2), False),
    "vgg16": Shape("vgg", (64, 128, 256, 512, 512), (2, 2, 3, 3, 3), False),
}


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut (a 1x1 convolution where the shape changes)."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut = nn.Sequential()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def _conv_bn_relu(inputs: int, outputs: int) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, 3, 1, 1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True)]


class Backbone(nn.Module):
    """`stem` then `stages`; its output is the last stage's feature map."""

    def __init__(self, shape: Shape, channels: int) -> None:
        super().__init__()
        first = shape.widths[0]
        if shape.family == "resnet":
            if shape.imagenet_stem:
                self.stem = nn.Sequential(nn.Conv2d(channels, first, 7, 2, 3, bias=False), nn.BatchNorm2d(first),
                                          nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
            else:
                self.stem = nn.Sequential(*_conv_bn_relu(channels, first))
            stages, inputs = [], first
            for index, (width, depth) in enumerate(zip(shape.widths, shape.depths, strict=True)):
                blocks = [BasicBlock(inputs if i == 0 else width, width, 2 if index and i == 0 else 1)
                          for i in range(depth)]
                stages.append(nn.Sequential(*blocks))
                inputs = width
        else:  # vgg: no stem (every convolution belongs to a stage); each stage ends in a 2x2 max-pool
            self.stem = nn.Sequential()
            stages, inputs = [], channels
            for width, depth in zip(shape.widths, shape.depths, strict=True):
                layers: list[nn.Module] = []
                for _ in range(depth):
                    layers += _conv_bn_relu(inputs, width)
                    inputs = width
                stages.append(nn.Sequential(*layers, nn.MaxPool2d(2, ceil_mode=True)))
        self.stages = nn.ModuleList(stages)
        self.features = shape.widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x


class ImageClassifier(nn.Module):
    """backbone -> global average pool -> dropout -> linear. `base_model` names the backbone, as in
    `transformers` models, so the strategies and probes find the encoder the same way."""

    def __init__(self, backbone: Backbone, num_labels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(backbone.features, num_labels)

    @property
    def base_model(self) -> Backbone:
        return self.backbone

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The pooled representation a linear probe reads: [N, features]."""
        return self.backbone(pixels).mean(dim=(2, 3))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(pixels)))


def build_classifier(preset: str, num_labels: int, channels: int = 1, dropout: float = 0.0,
                     seed: int | None = None) -> ImageClassifier:
    """A freshly initialised classifier of `preset` (He initialisation for convolutions, as both papers use)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown image model {preset!r}; presets: {', '.join(PRESETS)}")
    if seed is not None:
        torch.manual_seed(seed)
    model = ImageClassifier(Backbone(PRESETS[preset], channels), num_labels, dropout)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return model
