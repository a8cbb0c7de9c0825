"""What the Inspect page computes with models: attention maps, test-split predictions, confusion matrices, the
most confident mistakes, and the class probabilities of a typed text.

torch and transformers are imported inside the functions that need them, so importing this module (as the
dashboard does on every page load) stays light; the first call pays the import.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ptft_core.config import IMAGE_MODELS, PRESETS

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
    from ptft_core.models import resolve_checkpoint  # torch: only where a model is loaded

    return load_classifier_at(resolve_checkpoint(f"run:{run_id}"))


def load_classifier_at(path: str, attention_maps: bool = True) -> Loaded:
    """A saved classifier (a fine-tune's checkpoint folder) in eval mode on CPU, read the way it was trained (its
    config's pooling: a mean-pooled classifier has no pooler weights to read [CLS] with). `attention_maps`: the
    eager attention, which returns its weights (Inspect); without, the fused kernel (SDPA), faster to predict."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ptft_core.models import POOLING_ATTR, set_pooling  # torch: only where a model is loaded

    model = AutoModelForSequenceClassification.from_pretrained(path, **(EAGER if attention_maps else {}))
    set_pooling(model, getattr(model.config, POOLING_ATTR, None) or "cls")
    model.eval()
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


def predict(loaded: Loaded, texts: list[str], max_length: int, batch_size: int = PREDICT_BATCH,
            bf16: bool = False) -> np.ndarray:
    """Class probabilities [texts, labels], batched by length so little padding is computed; `bf16`: autocast
    (weights kept in float32)."""
    import torch

    order = np.argsort([len(t) for t in texts], kind="stable")
    probs = np.zeros((len(texts), len(loaded.labels)), dtype=np.float32)
    precision = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.inference_mode(), precision:
        for start in range(0, len(texts), batch_size):
            index = order[start:start + batch_size]
            batch = loaded.tokenizer([texts[i] for i in index], truncation=True, max_length=max_length,
                                     padding=True, return_tensors="pt")
            probs[index] = torch.softmax(loaded.model(**batch).logits.float(), dim=-1).numpy()
    return probs


def model_megabytes(model: Any) -> float:
    """A model's weights and buffers in memory, MB."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())) / 2**20


COST_PRECISIONS = ("float32", "bf16", "int8")  # int8: dynamic quantisation of the linear layers (torch.ao)


def inference_cost(loaded: Loaded, texts: list[str], max_length: int,
                   precisions: Sequence[str] = COST_PRECISIONS) -> list[dict[str, Any]]:
    """What predicting costs on this machine's CPU, per precision: the latency of one text at batch 1 (p50, p95 over
    `texts`), and texts/s at batch 32 (the texts sorted by length, as `predict` does); the model's weights in memory
    (float32). The bf16 arm autocasts; int8 quantises a copy of the model's linear layers."""
    import copy
    import statistics
    import time

    import torch

    memory_mb = model_megabytes(loaded.model)
    rows = []
    for precision in precisions:
        model = (torch.ao.quantization.quantize_dynamic(copy.deepcopy(loaded.model), {torch.nn.Linear},
                                                        dtype=torch.qint8) if precision == "int8" else loaded.model)
        arm = Loaded(model, loaded.tokenizer, loaded.labels)
        latencies = []
        for text in texts:
            began = time.perf_counter()
            predict(arm, [text], max_length, batch_size=1, bf16=precision == "bf16")
            latencies.append(1000 * (time.perf_counter() - began))
        began = time.perf_counter()
        predict(arm, texts, max_length, batch_size=32, bf16=precision == "bf16")
        rows.append({"precision": precision, "texts": len(texts), "p50_ms": statistics.median(latencies),
                     "p95_ms": float(np.percentile(latencies, 95)),
                     "texts_per_s": len(texts) / (time.perf_counter() - began), "memory_mb": memory_mb})
    return rows


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


# --- image models ----------------------------------------------------------------------------------------------


@dataclass
class LoadedImages:
    """An image classifier ready for inference (eval mode, CPU, float32), its record (preset, size, channels,
    normalisation) and its label names."""

    model: Any
    record: dict[str, Any]
    labels: list[str]

    def normalised(self, pixels: np.ndarray) -> Any:
        """uint8 images [N, C, S, S] -> the model's float input."""
        import torch

        from ptft_core.vision.data import Normalisation  # torch: only where a model is loaded

        normalise = Normalisation(tuple(self.record["mean"]), tuple(self.record["std"]))
        return normalise(torch.as_tensor(pixels))


def load_image_run(run_id: str) -> LoadedImages:
    """The final checkpoint of an image run."""
    from ptft_core.models import resolve_checkpoint  # torch: only where a model is loaded
    from ptft_core.training.checkpoint import load_image_classifier  # torch: only where a model is loaded

    model, record = load_image_classifier(resolve_checkpoint(f"run:{run_id}"))
    return LoadedImages(model.eval(), record, record["label_names"])


def load_image_start(config: dict[str, Any], tuned: LoadedImages) -> LoadedImages:
    """What an image run started from, with the head it had: for a fine-tune of a pretrained base, that base with
    its own (source) head; for a preset, a scratch baseline or a pretraining, `tuned`'s architecture freshly
    initialised (seed INIT_SEED, as a run's random start), read with `tuned`'s labels and normalisation."""
    from ptft_core.training.images import load_base  # torch: only where a model is loaded
    from ptft_core.vision.models import build_classifier  # torch: only where a model is loaded

    spec = config.get("base") or config["model"]
    if spec not in IMAGE_MODELS and not config.get("scratch"):
        model, record, _ = load_base(spec)
        return LoadedImages(model.eval(), record, record["label_names"])
    record = tuned.record
    model = build_classifier(record["preset"], len(tuned.labels), record["channels"], seed=INIT_SEED)
    return LoadedImages(model.eval(), record, tuned.labels)


def image_filters(loaded: LoadedImages) -> np.ndarray:
    """The first convolution's filters [K, C, kh, kw]: what the network looks for in the pixels themselves."""
    import torch

    first = next(m for m in loaded.model.modules() if isinstance(m, torch.nn.Conv2d))
    return first.weight.detach().float().numpy()


def predict_images(loaded: LoadedImages, pixels: np.ndarray) -> np.ndarray:
    """Class probabilities [N, labels] of uint8 images [N, C, S, S]."""
    import torch

    with torch.no_grad():
        out = [torch.softmax(loaded.model(loaded.normalised(pixels[i:i + 256])), dim=-1) for i in
               range(0, len(pixels), 256)]
    return torch.cat(out).numpy() if out else np.zeros((0, len(loaded.labels)), dtype=np.float32)


def grad_cam(loaded: LoadedImages, image: np.ndarray, target: int | None = None) -> tuple[np.ndarray, int, float]:
    """Grad-CAM (Selvaraju et al. 2017) of one uint8 image [C, S, S] at the last stage: the class's gradient,
    averaged over each feature map, weighs the maps; their positive sum, upsampled to S x S and scaled to 0..1,
    is where the evidence for the class lies. `target`: the class explained (default: the predicted one).
    Returns (map [S, S], class, its probability)."""
    import torch

    model = loaded.model
    kept: dict[str, torch.Tensor] = {}
    hook = model.backbone.stages[-1].register_forward_hook(lambda _m, _i, out: kept.update(maps=out))
    try:
        with torch.enable_grad():
            logits = model(loaded.normalised(image[None]))
            probs = torch.softmax(logits.float(), dim=-1)[0].detach()
            target = int(probs.argmax()) if target is None else target
            maps = kept["maps"]
            (gradient,) = torch.autograd.grad(logits[0, target], maps)
    finally:
        hook.remove()
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * maps).sum(dim=1, keepdim=True)).detach()
    cam = torch.nn.functional.interpolate(cam, size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    peak = float(cam.max())
    return (cam / peak).numpy() if peak > 0 else cam.numpy(), target, float(probs[target])
