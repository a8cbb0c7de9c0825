"""Masked-LM pretraining throughput: ptft's masked-only head against `BertForMaskedLM`, which scores every position
against the whole vocabulary. Same preset, tokenizer, blocks, masking, optimizer and steps, in one process; the
validation loss after the same tokens is reported for both, so speed is not bought with quality.

    python -m bench.mlm_bench [--steps 60] [--presets tiny,mini] [--vocab 8000,30522]

Vocabulary 30522 uses the bert-base-uncased WordPiece of `minilm-l6`; any other size trains a WordPiece on the
corpus, as a from-scratch run does.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import BertForMaskedLM

from ptft_core.data import load_texts
from ptft_core.families import preset_config, scratch_lm
from ptft_core.models import autocast, load_tokenizer, train_wordpiece
from ptft_core.training.lm_data import mask_tokens, special_mask, text_blocks

BATCH, BLOCK, LR, SEED = 32, 128, 1e-3, 0
CORPUS = ["wiki", "news"]


def blocks_for(tokenizer, split: str) -> torch.Tensor:
    return text_blocks(tokenizer, load_texts(CORPUS, split), BLOCK)


def masked(tokenizer, blocks: torch.Tensor, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [mask_tokens(b, special_mask(b, tokenizer), 0.15, len(tokenizer), tokenizer.mask_token_id, g)
            for b in blocks.split(BATCH) if len(b) == BATCH]


def train(loss_fn, model: torch.nn.Module, batches, val_batches, device) -> tuple[float, float]:
    """(seconds for the training steps, validation loss after them): one loop for both models."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    model.to(device).train()
    start = time.perf_counter()
    for inputs, labels in batches:
        with autocast(device):
            loss = loss_fn(model, inputs.to(device), labels.to(device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        val = [loss_fn(model, i.to(device), lab.to(device)).item() for i, lab in val_batches]
    return seconds, sum(val) / len(val)


def ours_loss(model, inputs, labels):
    return model(inputs, labels)


def full_vocab_loss(model, inputs, labels):
    return model(input_ids=inputs, labels=labels).loss


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--presets", default="tiny,mini")
    parser.add_argument("--vocab", default="8000,30522")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    result = {}
    print(f"{'preset':6s} {'vocab':>6s} {'ptft tok/s':>11s} {'BertForMaskedLM tok/s':>22s} {'ratio':>6s} "
          f"{'val loss ptft / HF':>19s}")
    for vocab in [int(v) for v in args.vocab.split(",")]:
        if vocab == 30522:
            tokenizer = load_tokenizer("minilm-l6")
        else:
            tokenizer = train_wordpiece(load_texts(CORPUS, "train"), vocab)
        train_blocks = blocks_for(tokenizer, "train")
        order = torch.randperm(len(train_blocks), generator=torch.Generator().manual_seed(SEED))
        batches = masked(tokenizer, train_blocks[order], SEED)
        batches = (batches * (args.steps // max(len(batches), 1) + 1))[:args.steps]
        val_batches = masked(tokenizer, blocks_for(tokenizer, "validation")[:4 * BATCH], 1234)
        tokens = args.steps * BATCH * BLOCK
        for preset in args.presets.split(","):
            torch.manual_seed(SEED)
            ours_s, ours_val = train(ours_loss, scratch_lm("bert", preset, tokenizer), batches, val_batches, device)
            torch.manual_seed(SEED)
            full = BertForMaskedLM(preset_config("bert", preset, tokenizer))
            full_s, full_val = train(full_vocab_loss, full, batches, val_batches, device)
            row = {"ptft_tokens_per_s": tokens / ours_s, "full_vocab_tokens_per_s": tokens / full_s,
                   "ratio": full_s / ours_s, "val_loss_ptft": ours_val, "val_loss_full_vocab": full_val,
                   "vocab": len(tokenizer)}
            result[f"{preset}-{len(tokenizer)}"] = row
            print(f"{preset:6s} {len(tokenizer):6d} {row['ptft_tokens_per_s']:11.0f} "
                  f"{row['full_vocab_tokens_per_s']:22.0f} {row['ratio']:5.2f}x {ours_val:9.3f} / {full_val:.3f}")
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"mlm-{args.device}.json").write_text(json.dumps({"args": vars(args), "rows": result}, indent=2))
    return result


if __name__ == "__main__":
    main()
