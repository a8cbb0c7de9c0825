"""What word frequencies alone score: the unigram and bigram cross-entropy of a pretraining run's validation
targets, computed from its own tokenizer, its own training blocks and the very positions its validation loss
scores. A model whose validation loss sits on the unigram line has learned which words are frequent and
nothing else; one below the bigram line uses more than the previous token.

- unigram: add-one counts of the training tokens (special tokens left out: they are never a target here);
- bigram: λ·c(prev, w)/c(prev) + (1 − λ)·unigram(w), λ = BIGRAM_WEIGHT, `prev` being the token the model sees
  just before the target (a masked LM's input there may itself be [MASK]: that context was never counted, so
  the estimate falls back to the unigram, as a model with no other clue would).

Logged once per run at step 0 (split "reference": `unigram_loss`, `bigram_loss`, in nats like the loss), and
drawn as horizontal lines on every pretraining loss chart (plots.reference_lines).
"""

from __future__ import annotations

import torch

from ptft_core.training.lm_data import IGNORE

BIGRAM_WEIGHT = 0.7  # interpolation weight of the bigram estimate; the rest is the unigram's


def _targets(objective: str, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(context token, target token) of every position a batch's loss scores."""
    if objective == "clm":  # each position predicts the next one
        return inputs[:, :-1].flatten(), labels[:, 1:].flatten()
    if objective == "span":  # the decoder reads the labels shifted right: its context is the previous label
        previous = torch.cat([torch.full_like(labels[:, :1], -1), labels[:, :-1]], dim=1)
        return previous.flatten(), labels.flatten()
    scored = labels != IGNORE  # masked LM: the masked positions, read after the input just before them
    previous = torch.cat([torch.full_like(inputs[:, :1], -1), inputs[:, :-1]], dim=1)
    return previous[scored], labels[scored]


def reference_losses(objective: str, train_blocks: torch.Tensor, val_batches: list, vocab_size: int,
                     special_ids: list[int]) -> dict[str, float]:
    """{"unigram_loss", "bigram_loss"}: the mean cross-entropy (nats) of the n-gram estimates on the scored
    positions of `val_batches` (lm_data.fixed_batches), counted on `train_blocks`."""
    tokens = train_blocks.flatten()
    counts = torch.bincount(tokens, minlength=vocab_size).double()
    counts[torch.tensor(special_ids, dtype=torch.long)] = 0
    unigram = (counts + 1) / (counts.sum() + vocab_size)

    # Bigram counts as sorted unique keys prev * V + next (a dense V x V table would be 64M cells at 8k).
    pairs = train_blocks[:, :-1].flatten() * vocab_size + train_blocks[:, 1:].flatten()
    keys, pair_counts = torch.unique(pairs, return_counts=True)
    context_counts = torch.bincount(train_blocks[:, :-1].flatten(), minlength=vocab_size).double()

    contexts, targets = zip(*(_targets(objective, inputs, labels) for inputs, labels, _ in val_batches), strict=True)
    context, target = torch.cat(contexts), torch.cat(targets)
    keep = (target >= 0) & (target < vocab_size)
    context, target = context[keep], target[keep]
    p_unigram = unigram[target]

    known = (context >= 0) & (context < vocab_size)
    query = torch.where(known, context, 0) * vocab_size + target
    where = torch.searchsorted(keys, query).clamp(max=len(keys) - 1)
    pair = torch.where((keys[where] == query) & known, pair_counts[where], 0).double()
    seen = torch.where(known, context_counts[torch.where(known, context, 0)], 0)
    p_bigram = torch.where(seen > 0, BIGRAM_WEIGHT * pair / seen.clamp(min=1) + (1 - BIGRAM_WEIGHT) * p_unigram,
                           p_unigram)
    return {"unigram_loss": float(-p_unigram.log().mean()), "bigram_loss": float(-p_bigram.log().mean())}
