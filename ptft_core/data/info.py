"""What a dataset is, as the lab describes it: the built-in names, the splits, and `DatasetInfo` (a dataset's
meta.json, read). Plain data, imported by the registry, user files and hub datasets alike.

A dataset holds one modality: text (column `text`) or images (column `image`, PNG bytes, see images.py). A run
reads only its own modality: `specs.check_names` refuses the other one when the run is submitted."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TEXT_BUILTINS: tuple[str, ...] = ("wiki", "news", "movies", "amazon", "nyt", "tweets", "sources")
IMAGE_BUILTINS: tuple[str, ...] = ("digits", "mnist")  # data/images.py: IMAGE_SETS
BUILTIN_NAMES: tuple[str, ...] = TEXT_BUILTINS + IMAGE_BUILTINS
MODALITIES: tuple[str, ...] = ("text", "image")
SPLITS: tuple[str, ...] = ("train", "validation", "test")


@dataclass
class DatasetInfo:
    name: str
    kind: str  # "labelled" | "unlabelled"
    description: str
    label_names: list[str]
    splits: dict[str, int]
    label_balance: dict[str, dict[str, int]] = field(default_factory=dict)
    mean_tokens: float | None = None
    source: dict[str, Any] = field(default_factory=dict)
    builtin: bool = False
    modality: str = "text"  # "text" | "image"
    image_size: int | None = None  # an image set's side in pixels (its images are square), None for text
    channels: int | None = None  # an image set's: 1 grey, 3 colour (None: grey, the built-ins)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def total_rows(self) -> int:
        return sum(self.splits.values())

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> DatasetInfo:
        return cls(
            name=meta["name"],
            kind=meta["kind"],
            description=meta.get("description", ""),
            label_names=list(meta.get("label_names") or []),
            splits={split: int(meta["splits"].get(split, 0)) for split in SPLITS},
            label_balance=meta.get("label_balance") or {},
            mean_tokens=meta.get("mean_tokens"),
            source=meta.get("source") or {},
            builtin=bool(meta.get("builtin", meta["name"] in BUILTIN_NAMES)),
            modality=meta.get("modality", "text"),
            image_size=meta.get("image_size"),
            channels=meta.get("channels"),
        )
