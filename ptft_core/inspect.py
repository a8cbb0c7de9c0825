"""What the Inspect page computes with models: attention maps, test-split predictions, confusion matrices, the
most confident mistakes, and the class probabilities of a typed text.

torch and transformers are imported inside the functions that need them, so importing this module (as the
dashboard does on every page load) stays light; the first call pays the import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ptft_core.config import PRESETS

PREDICT_BATCH = 64
ATTENTION_MAX_TOKENS = 48  # longer sentences are truncated: a readable heatmap has few rows
INIT_SEED = 0  # random-init bases (presets, scratch baselines) are drawn with this seed: the same map each time
EAGER = {"attn_implementation": "eager"}  # only the eager attention returns its weights (SDPA does not)


@dataclass
class Loaded:
    """A model ready for inference, its tokenizer and, for a classifier, its label names."""

    model: Any
    tokenizer: Any
    labels: list[str]


def load_classifier(run_id: str) -> Loaded:
    """The final checkpoint of a fine-tuning run (its last task's head), in eval mode on CPU."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ptft_core.models import resolve_checkpoint  # torch: only where a model is loaded

    path = resolve_checkpoint(f"run:{run_id}")
    model = AutoModelForSequenceClassification.from_pretrained(path, **EAGER).eval()
    labels = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
    return Loaded(model, AutoTokenizer.from_pretrained(path), labels)


def load_base_encoder(base: str, scratch: bool, family: str = "bert", dataset: str | None = None) -> Loaded:
    """The encoder a fine-tuning run started from: its `base` checkpoint, or for a preset or a scratch
    baseline, that architecture freshly initialised (seed INIT_SEED), as the run itself began."""
    import torch
    from transformers import AutoConfig, AutoModel

    from ptft_core.families import preset_parts  # torch: only where a model is loaded
    from ptft_core.models import load_tokenizer, resolve_checkpoint  # torch: only where a model is loaded

    if base in PRESETS:
        config, tokenizer = preset_parts(base, family, dataset)
        path = None
    else:
        path = resolve_checkpoint(base)
        tokenizer = load_tokenizer(base)
        config = AutoConfig.from_pretrained(path)
    if path is None or scratch:
        torch.manual_seed(INIT_SEED)
        model = AutoModel.from_config(config, **EAGER)
    else:
        model = AutoModel.from_pretrained(path, **EAGER)
    return Loaded(model.eval(), tokenizer, [])


def attention(loaded: Loaded, text: str) -> tuple[list[str], np.ndarray]:
    """The tokens of `text` and the attention weights of every layer and head: [layers, heads, tokens, tokens]."""
    import torch

    encoded = loaded.tokenizer(text, truncation=True, max_length=ATTENTION_MAX_TOKENS, return_tensors="pt")
    model = loaded.model
    if getattr(model.config, "is_encoder_decoder", False):  # T5: its encoder's self-attention over the text
        model = model.base_model.get_encoder()
    with torch.no_grad():
        out = model(**encoded, output_attentions=True)
    tokens = loaded.tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    return tokens, torch.stack(out.attentions)[:, 0].float().numpy()


def predict(loaded: Loaded, texts: list[str], max_length: int) -> np.ndarray:
    """Class probabilities [texts, labels], batched by length so little padding is computed."""
    import torch

    order = np.argsort([len(t) for t in texts], kind="stable")
    probs = np.zeros((len(texts), len(loaded.labels)), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(texts), PREDICT_BATCH):
            index = order[start:start + PREDICT_BATCH]
            batch = loaded.tokenizer([texts[i] for i in index], truncation=True, max_length=max_length,
                                     padding=True, return_tensors="pt")
            probs[index] = torch.softmax(loaded.model(**batch).logits.float(), dim=-1).numpy()
    return probs


def classify(loaded: Loaded, text: str, max_length: int) -> dict[str, float]:
    """label -> probability of one text."""
    return dict(zip(loaded.labels, predict(loaded, [text], max_length)[0].tolist(), strict=True))


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_labels: int) -> np.ndarray:
    """Counts [true label, predicted label]."""
    matrix = np.zeros((num_labels, num_labels), dtype=int)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def confident_mistakes(texts: list[str], labels: np.ndarray, probs: np.ndarray, label_names: list[str],
                       n: int = 10) -> pd.DataFrame:
    """The `n` wrong predictions the model was surest of: text, true, predicted, confidence."""
    predictions = probs.argmax(axis=1)
    wrong = np.flatnonzero(predictions != labels)
    confidence = probs[wrong, predictions[wrong]]
    top = wrong[np.argsort(-confidence, kind="stable")[:n]]
    return pd.DataFrame({
        "text": [texts[i] for i in top],
        "true": [label_names[labels[i]] for i in top],
        "predicted": [label_names[predictions[i]] for i in top],
        "confidence": probs[top, predictions[top]],
    })
