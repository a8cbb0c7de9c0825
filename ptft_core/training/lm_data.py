"""Language-model data: text packed into blocks, and each objective's (inputs, labels) from a batch of blocks;
shared by pretraining, the forgetting probe and MLM replay during fine-tuning.

- masked LM (`mlm`): BERT masking of `mask_prob` of the tokens; labels IGNORE except at the masked positions.
- causal LM (`clm`): the block is its own label (the model shifts it: each position predicts the next token).
- span corruption (`span`, T5): `mask_prob` of each block's tokens, in spans of SPAN_LENGTH, each replaced by
  one sentinel `<extra_id_i>` in the input; the labels are the sentinels each followed by its span. Every block
  gets the same number of spans, so a batch needs no padding.
"""

from __future__ import annotations

import torch

from ptft_core.config import ConfigError
from ptft_core.families import SENTINELS
from ptft_core.models import autocast

IGNORE = -100  # label of positions that are not scored
SPAN_LENGTH = 3  # T5's mean corrupted span length


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


def block_markers(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after one text: [CLS] / [SEP] (BERT), <s> / </s>
    (RoBERTa), none / <sep> <cls> (XLNet), none / </s> (T5), none / none (GPT-2). Read from the tokenizer itself,
    so a hub checkpoint's conventions are kept too."""
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start], full[start + len(plain):]
    return [], []


def pack_blocks(token_lists: list[list[int]], block_size: int, head: list[int], tail: list[int],
                separator: int | None = None) -> torch.Tensor:
    """Concatenate every text (each followed by `separator`, if any) and cut the stream into full blocks
    `head ... tail` of `block_size` tokens: no padding, so every position the model computes is a real token.
    The ragged tail of the stream is dropped."""
    ends = [] if separator is None else [separator]
    stream = torch.tensor([t for tokens in token_lists for t in (*tokens, *ends)], dtype=torch.long)
    body = block_size - len(head) - len(tail)
    n = len(stream) // body
    blocks = torch.empty((n, block_size), dtype=torch.long)
    blocks[:, :len(head)] = torch.tensor(head, dtype=torch.long)
    blocks[:, len(head):len(head) + body] = stream[:n * body].view(n, body)
    blocks[:, len(head) + body:] = torch.tensor(tail, dtype=torch.long)
    return blocks


def text_blocks(tokenizer, texts: list[str], block_size: int) -> torch.Tensor:
    """`texts` as blocks in the tokenizer's own framing; a tokenizer with no markers (GPT-2) separates texts with
    its end-of-text token instead, as GPT-2 was trained."""
    head, tail = block_markers(tokenizer)
    separator = tokenizer.eos_token_id if not head and not tail else None
    return pack_blocks(tokenize_plain(tokenizer, texts), block_size, head, tail, separator)


def span_corrupt(blocks: torch.Tensor, head: int, tail: int, noise: float, sentinels: list[int],
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """T5 span corruption of blocks framed by `head` and `tail` special tokens, with the same number k of
    non-overlapping spans of SPAN_LENGTH in every block: the inputs keep the other tokens, sentinel i standing
    in for span i; the labels are sentinel i + span i for each i, then the closing tokens (</s>)."""
    length = blocks.shape[1] - head - tail
    k = max(1, round(length * noise / SPAN_LENGTH))
    keep = length - k * SPAN_LENGTH
    if keep < 1 or k > len(sentinels):
        raise ConfigError(f"mask_prob: {noise} leaves no room for {k} spans of {SPAN_LENGTH} in a block of "
                          f"{length} text tokens (at most {len(sentinels)} spans)")
    sentinel = torch.tensor(sentinels[:k])
    offsets = torch.arange(k)
    inputs, labels = [], []
    for row in blocks:
        # Stars and bars: k sorted draws among keep + k slots place the spans between the kept tokens.
        draws = torch.sort(torch.randperm(keep + k, generator=generator)[:k]).values
        starts = draws + offsets * (SPAN_LENGTH - 1)
        spans = starts[:, None] + torch.arange(SPAN_LENGTH)
        text = row[head:head + length].clone()
        kept = torch.ones(length, dtype=torch.bool)
        kept[spans.flatten()] = False
        kept[starts] = True  # where the sentinel goes
        target = torch.cat([sentinel[:, None], text[spans]], dim=1).flatten()
        text[starts] = sentinel
        closing = row[head + length:]
        inputs.append(torch.cat([row[:head], text[kept], closing]))
        labels.append(torch.cat([target, closing]))
    return torch.stack(inputs), torch.stack(labels)


def sentinel_ids(tokenizer) -> list[int]:
    """T5's <extra_id_i> tokens the tokenizer has, in order."""
    ids = tokenizer.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(SENTINELS)])
    return [i for i in ids if i is not None and i != tokenizer.unk_token_id]


def objective_batch(objective: str, blocks: torch.Tensor, tokenizer, mask_prob: float,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) of one batch of blocks for `objective`."""
    if objective == "clm":
        return blocks, blocks
    if objective == "span":
        head, tail = block_markers(tokenizer)
        return span_corrupt(blocks, len(head), len(tail), mask_prob, sentinel_ids(tokenizer), generator)
    return mask_tokens(blocks, special_mask(blocks, tokenizer), mask_prob, len(tokenizer), tokenizer.mask_token_id,
                       generator)


def scored_tokens(objective: str, labels: torch.Tensor) -> int:
    """How many tokens a batch's loss is the mean over (causal LM: every position but the last of a block)."""
    if objective == "clm":
        return labels[:, 1:].numel()
    return int((labels != IGNORE).sum())


def fixed_batches(objective: str, blocks: torch.Tensor, batch_size: int, tokenizer, mask_prob: float,
                  seed: int) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """Evaluation batches (inputs, labels, scored tokens) drawn once with `seed`: every evaluation scores the
    same positions, so successive evaluations (and runs) are comparable."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for start in range(0, len(blocks), batch_size):
        inputs, labels = objective_batch(objective, blocks[start:start + batch_size], tokenizer, mask_prob,
                                         generator)
        batches.append((inputs, labels, scored_tokens(objective, labels)))
    return batches


@torch.no_grad()
def eval_loss(model, batches, device: torch.device) -> float:
    """Mean loss over every scored token of `batches` (token-weighted, not batch-weighted), in eval mode; the
    modules it read stay in eval mode (the caller sets the mode its training continues in)."""
    model.eval()
    total = torch.zeros((), device=device)
    count = 0
    for inputs, labels, n in batches:
        if n == 0:
            continue
        with autocast(device):
            loss = model(inputs.to(device), labels.to(device))
        total += loss.float() * n
        count += n
    return total.item() / max(count, 1)
