"""Forgetting: what fine-tuning costs the encoder, and two ways to limit it.

Probes, measured at each evaluation and logged under split "forgetting":
- `general_mlm_loss`: masked-LM loss on held-out general text (`probe_corpus` validation), through the MLM head the
  base came with (bases from our pretraining runs carry `mlm_head.safetensors`; MiniLM, hub models and presets
  have none, so this probe is skipped with one `note` event). The head itself never trains during fine-tuning:
  it is a fixed reader of the encoder, so the probe measures the encoder alone.
- `general_clm_loss`: for a causal base (GPT-2 style, its LM head tied to the input embeddings), the causal-LM
  loss on the same text, read through the current embeddings as the checkpoint's own LM head would.
- `cka_similarity`: linear CKA between the starting and the current encoder's mean-pooled representations of
  `probe_size` fixed probe passages (1: the same geometry, toward 0: unrelated).
- `prev_task_accuracy` / `prev_task_loss` (sequential fine-tuning, computed in finetune.py).

Mitigations: replay (a share of each batch from the earlier task, or MLM batches on general text) and L2-SP
(a penalty l2sp * sum ||w - w0||^2 pulling the encoder toward its starting weights w0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ptft_core.config import FinetuneConfig
from ptft_core.data import load_texts
from ptft_core.journal import MetricLogger
from ptft_core.models import MaskedLMHead, MLMModel, autocast
from ptft_core.training.lm_data import eval_loss, fixed_batches, mask_tokens, special_mask, text_blocks

PROBE_SEED = 0  # the same probe texts and masks for every run, so runs are comparable
PROBE_BATCH = 32
PROBE_MASK_PROB = 0.15


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) between two representations of the same n examples (n x d1, n x d2)."""
    x = x.astype(np.float64) - x.mean(axis=0)
    y = y.astype(np.float64) - y.mean(axis=0)
    cross = np.linalg.norm(y.T @ x) ** 2
    return float(cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


@torch.no_grad()
def pooled_representations(encoder: nn.Module, batches: list[dict[str, torch.Tensor]],
                           device: torch.device) -> np.ndarray:
    """Mean of the last hidden states over each text's real tokens (an encoder-decoder's encoder states).

    Leaves the encoder in eval mode: the training loop sets its own mode after every evaluation, so a probe
    never decides the mode training continues in."""
    if getattr(encoder.config, "is_encoder_decoder", False):
        encoder = encoder.get_encoder()
    encoder.eval()
    pooled = []
    for batch in batches:
        mask = batch["attention_mask"].to(device)
        with autocast(device):
            hidden = encoder(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).float()
        pooled.append(((hidden.float() * weights).sum(1) / weights.sum(1)).cpu().numpy())
    return np.concatenate(pooled)


class TiedCausalReader(nn.Module):
    """A causal LM's loss through a decoder (a classifier's base model) and its input embeddings, which are the
    LM head of a checkpoint that ties them (GPT-2): the same number the checkpoint's LM would give."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        hidden = self.decoder(input_ids=input_ids).last_hidden_state[:, :-1]
        logits = F.linear(hidden, self.decoder.get_input_embeddings().weight)
        return F.cross_entropy(logits.flatten(0, 1).float(), labels[:, 1:].flatten())


@dataclass
class Probes:
    """The fixed probe set, the starting representations, and the LM view of the encoder (when it has one)."""

    batches: list[dict[str, torch.Tensor]]
    start: np.ndarray | None
    lm: nn.Module | None
    lm_batches: list
    lm_metric: str = "general_mlm_loss"


def build_probes(config: FinetuneConfig, encoder: nn.Module, tokenizer, mlm_head: MaskedLMHead | None,
                 device: torch.device, logger: MetricLogger, causal: bool = False) -> Probes:
    """Call before any training step: the starting representations are taken from `encoder` as it is now.

    The probe set is `probe_size` passages of `max_length` tokens cut from the `probe_corpus` validation text
    (a corpus may hold a few long articles only), the same passages for every run with the same tokenizer.
    `causal`: the base is a causal LM whose head is its tied input embeddings (its LM probe is causal).
    """
    blocks = text_blocks(tokenizer, load_texts([config.probe_corpus], "validation"), config.max_length)
    picked = np.random.default_rng(PROBE_SEED).permutation(len(blocks))[:config.probe_size]
    blocks = blocks[np.sort(picked)]
    batches = [{"input_ids": b, "attention_mask": torch.ones_like(b)} for b in blocks.split(PROBE_BATCH)]
    start = pooled_representations(encoder, batches, device) if config.probe_drift else None
    if not config.probe_mlm:
        return Probes(batches, start, None, [])
    if causal:
        return Probes(batches, start, TiedCausalReader(encoder),
                      fixed_batches("clm", blocks, PROBE_BATCH, tokenizer, PROBE_MASK_PROB, PROBE_SEED),
                      "general_clm_loss")
    if mlm_head is not None:
        return Probes(batches, start, MLMModel(encoder, mlm_head),
                      fixed_batches("mlm", blocks, PROBE_BATCH, tokenizer, PROBE_MASK_PROB, PROBE_SEED))
    logger.event("note", message=f"general_mlm_loss not measured: {config.base!r} has no MLM head "
                                 "(only checkpoints of our pretraining runs carry one)")
    return Probes(batches, start, None, [])


def measure_probes(probes: Probes, encoder: nn.Module, device: torch.device) -> dict[str, float]:
    metrics = {}
    if probes.lm is not None:
        metrics[probes.lm_metric] = eval_loss(probes.lm, probes.lm_batches, device)
    if probes.start is not None:
        metrics["cka_similarity"] = linear_cka(probes.start, pooled_representations(encoder, probes.batches, device))
    return metrics


# --- mitigations ---------------------------------------------------------------------------------------------


class MLMReplay:
    """Random masked blocks of general text (`probe_corpus` train split) replayed into fine-tuning batches."""

    def __init__(self, config: FinetuneConfig, tokenizer, mlm: MLMModel):
        texts = load_texts([config.probe_corpus], "train")
        self.blocks = text_blocks(tokenizer, texts, config.max_length)
        self.tokenizer = tokenizer
        self.mlm = mlm

    def loss(self, n: int, rng: torch.Generator, device: torch.device) -> torch.Tensor:
        blocks = self.blocks[torch.randint(len(self.blocks), (n,), generator=rng)]
        inputs, labels = mask_tokens(blocks, special_mask(blocks, self.tokenizer), PROBE_MASK_PROB,
                                     len(self.tokenizer), self.tokenizer.mask_token_id, rng)
        return self.mlm(inputs.to(device), labels.to(device))


def l2sp_anchor(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The starting weights w0 of the encoder."""
    return {name: p.detach().clone() for name, p in encoder.named_parameters()}


def l2sp_penalty(encoder: nn.Module, anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    """sum ||w - w0||^2 over the encoder's trainable parameters (frozen ones cannot move anyway)."""
    return sum(((p - anchor[name]) ** 2).sum() for name, p in encoder.named_parameters() if p.requires_grad)
