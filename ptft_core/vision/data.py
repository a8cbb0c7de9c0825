"""An image run's data: each split decoded once into a uint8 tensor at the run's size, the normalisation of the
training split, and the augmentation of a training batch (config field `augment`).

Why decode once: the built-in sets are a few MB as uint8 (mnist: 5,000 x 28 x 28 = 3.9 MB), so holding a split
costs less than decoding PNGs at every step; a batch is indexed, augmented and normalised on the fly, on the
run's device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ptft_core.data import label_names, load_split
from ptft_core.data.images import class_subset, decode_split


@dataclass
class Images:
    """uint8 pixels [N, C, S, S] and int64 labels [N] of one split."""

    pixels: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index) -> Images:
        return Images(self.pixels[index], self.labels[index])


def load_images(dataset: str, split: str, size: int, channels: int, classes: list[str] = ()) -> Images:
    """A split at `size` pixels, only the rows of `classes` when some are named (labels renumbered: class_subset)."""
    frame, _ = class_subset(load_split(dataset, split), label_names(dataset), list(classes))
    pixels = decode_split(frame, size, channels)
    return Images(torch.from_numpy(pixels), torch.tensor(frame["label"].to_numpy(dtype=np.int64)))


@dataclass(frozen=True)
class Normalisation:
    """Per-channel mean and standard deviation of the training pixels (0..1): what the model's input is centred
    and scaled by. A fine-tune keeps its base's, as an ImageNet model keeps ImageNet's."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, images: Images) -> Normalisation:
        scaled = images.pixels.double() / 255.0
        mean = scaled.mean(dim=(0, 2, 3))
        std = scaled.std(dim=(0, 2, 3)).clamp_min(1e-3)  # a constant channel is not divided by 0
        return cls(tuple(mean.tolist()), tuple(std.tolist()))

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [N, C, S, S] -> float32 centred and scaled, on the pixels' device."""
        mean = torch.tensor(self.mean, device=pixels.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=pixels.device).view(1, -1, 1, 1)
        return (pixels.float() / 255.0 - mean) / std


def augment(pixels: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """A training batch (uint8 [N, C, S, S]) as `mode` changes it: none; crop (zero-padded by S/8 on each edge,
    cropped back to S at a random offset: a shift of up to S/8 pixels each way); crop_flip (crop, then a mirror
    image with probability 1/2). The draws come from `generator`, so a seed (and a resumed run) repeats them."""
    if mode == "none":
        return pixels
    n, _, side, _ = pixels.shape
    pad = max(1, side // 8)
    padded = torch.nn.functional.pad(pixels, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    out = torch.stack([padded[i, :, y:y + side, x:x + side] for i, (y, x) in enumerate(offsets.tolist())])
    if mode == "crop_flip":
        flip = torch.rand(n, generator=generator) < 0.5
        out = torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)
    return out
