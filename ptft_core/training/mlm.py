"""Masked-LM data: packing text into blocks and BERT masking; shared by pretraining, the forgetting probe and
MLM replay during fine-tuning."""

from __future__ import annotations

import torch

from ptft_core.models import MLMModel, autocast

IGNORE = -100  # label of positions that are not scored


def mask_tokens(input_ids: torch.Tensor, special_mask: torch.Tensor, mask_prob: float, vocab_size: int,
                mask_id: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: select `mask_prob` of the non-special positions; of those, 80% become [MASK], 10% a random
    token, 10% stay as they are. Returns (inputs, labels) with labels IGNORE wherever nothing is predicted."""
    selected = (torch.rand(input_ids.shape, generator=generator) < mask_prob) & ~special_mask
    action = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    inputs = input_ids.clone()
    inputs[selected & (action < 0.8)] = mask_id
    randomised = selected & (action >= 0.8) & (action < 0.9)
    inputs[randomised] = random_ids[randomised]
    labels = torch.where(selected, input_ids, IGNORE)
    return inputs, labels


def special_mask(input_ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """Positions holding a special token ([CLS], [SEP], [PAD], [UNK], ...): never masked."""
    return torch.isin(input_ids, torch.tensor(tokenizer.all_special_ids))


def tokenize_plain(tokenizer, texts: list[str]) -> list[list[int]]:
    # verbose=False: whole articles exceed model_max_length; they are cut into blocks afterwards, on purpose.
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


def pack_blocks(token_lists: list[list[int]], block_size: int, cls_id: int, sep_id: int) -> torch.Tensor:
    """Concatenate every text and cut the stream into full blocks `[CLS] ... [SEP]` of `block_size` tokens:
    no padding, so every position the model computes is a real token. The ragged tail is dropped."""
    stream = torch.tensor([t for tokens in token_lists for t in tokens], dtype=torch.long)
    body = block_size - 2
    n = len(stream) // body
    blocks = torch.empty((n, block_size), dtype=torch.long)
    blocks[:, 0] = cls_id
    blocks[:, 1:-1] = stream[:n * body].view(n, body)
    blocks[:, -1] = sep_id
    return blocks


def masked_batches(batches: list[tuple[torch.Tensor, torch.Tensor | None]], tokenizer, mask_prob: float,
                   seed: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """(input_ids, attention_mask) batches masked once with `seed` into (inputs, labels, attention_mask): every
    evaluation scores the same positions, so successive evaluations (and runs) are comparable."""
    masking = torch.Generator().manual_seed(seed)
    masked = []
    for input_ids, attention_mask in batches:
        inputs, labels = mask_tokens(input_ids, special_mask(input_ids, tokenizer), mask_prob, len(tokenizer),
                                     tokenizer.mask_token_id, masking)
        masked.append((inputs, labels, attention_mask))
    return masked


@torch.no_grad()
def mlm_eval_loss(model: MLMModel, batches, device: torch.device) -> float:
    """Mean loss over every masked token of `batches` (token-weighted, not batch-weighted)."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=device)
    count = 0
    for inputs, labels, attention_mask in batches:
        n = int((labels != IGNORE).sum())
        if n == 0:
            continue
        with autocast(device):
            loss = model(inputs.to(device), labels.to(device),
                         None if attention_mask is None else attention_mask.to(device))
        total += loss.float() * n
        count += n
    model.train(was_training)
    return total.item() / max(count, 1)
