"""Mean pooling for a sequence classifier, in one file that imports only torch and transformers.

The lab reads a sentence-transformers checkpoint (the built-in MiniLM) by the mean of its last hidden states, as it
was trained (models.py: `pooling`); this module is that reader. An exported fine-tune (ptft_core/export.py) carries
this very file as its remote code, its config's `auto_map` naming the class below for its architecture, so
`pipeline("text-classification", model=folder, trust_remote_code=True)` reads the model exactly as the lab trained
and scored it. Nothing here may import the lab: the file must load on its own.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    BertForSequenceClassification,
    DistilBertForSequenceClassification,
    RobertaForSequenceClassification,
    RoFormerForSequenceClassification,
)

POOLING_ATTR = "ptft_pooling"  # the model config's record of what its head reads: "cls" or "mean"


class FirstPosition(nn.Module):
    """Stands in for BERT's pooler under mean pooling: hands the (mean-pooled) first position to the classifier
    as it is, with no dense + tanh that sentence embeddings were never trained through."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states[:, 0]


def mean_pool(model: nn.Module) -> None:
    """Make `model`'s head read the masked mean of the last hidden states: hooks on its base model write that
    mean into the first position, which is what the head of each architecture below reads. A second classifier on
    the same base model reads the same mean."""
    base = model.base_model
    mask: dict[str, torch.Tensor | None] = {}

    def keep_mask(module, args, kwargs):
        mask["attention_mask"] = kwargs.get("attention_mask")

    def write_mean(module, args, output):
        hidden = output[0]
        m = mask.get("attention_mask")
        m = torch.ones(hidden.shape[:2], device=hidden.device) if m is None else m
        m = m.to(hidden.dtype).unsqueeze(-1)
        mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
        pooled = torch.cat([mean.unsqueeze(1), hidden[:, 1:]], dim=1)
        if isinstance(output, tuple):
            return (pooled, *output[1:])
        output["last_hidden_state"] = pooled
        return output

    base.register_forward_pre_hook(keep_mask, with_kwargs=True)
    # BERT pools inside its base model, so its mean goes in before the pooler, which then passes it through.
    if getattr(base, "pooler", None) is not None:
        base.pooler = FirstPosition()
        base.encoder.register_forward_hook(write_mean)
    else:
        base.register_forward_hook(write_mean)
    setattr(model.config, POOLING_ATTR, "mean")


class MeanPooledBertForSequenceClassification(BertForSequenceClassification):
    def __init__(self, config) -> None:
        super().__init__(config)
        mean_pool(self)


class MeanPooledRobertaForSequenceClassification(RobertaForSequenceClassification):
    def __init__(self, config) -> None:
        super().__init__(config)
        mean_pool(self)


class MeanPooledRoFormerForSequenceClassification(RoFormerForSequenceClassification):
    def __init__(self, config) -> None:
        super().__init__(config)
        mean_pool(self)


class MeanPooledDistilBertForSequenceClassification(DistilBertForSequenceClassification):
    def __init__(self, config) -> None:
        super().__init__(config)
        mean_pool(self)


# model_type -> the class that reads it by its mean (the architectures whose head reads the first position)
MEAN_POOLED = {"bert": MeanPooledBertForSequenceClassification, "roberta": MeanPooledRobertaForSequenceClassification,
               "roformer": MeanPooledRoFormerForSequenceClassification,
               "distilbert": MeanPooledDistilBertForSequenceClassification}
