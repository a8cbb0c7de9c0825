"""Classification metrics as pure numpy functions of logits and labels (no model, no torch)."""

from __future__ import annotations

import numpy as np

ECE_BINS = 15


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def macro_precision_recall_f1(predictions: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """Unweighted means over the classes that occur in labels or predictions; 0 where a ratio is 0/0
    (scikit-learn's macro average with zero_division=0)."""
    precisions, recalls, f1s = [], [], []
    for c in np.union1d(labels, predictions):
        tp = np.sum((predictions == c) & (labels == c))
        predicted, actual = np.sum(predictions == c), np.sum(labels == c)
        p = tp / predicted if predicted else 0.0
        r = tp / actual if actual else 0.0
        precisions.append(p)
        recalls.append(r)
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    return float(np.mean(precisions)), float(np.mean(recalls)), float(np.mean(f1s))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Top-label ECE: confidences in `n_bins` equal-width bins (lo, hi]; the mean |accuracy - confidence| of the
    bins, weighted by their share of the examples."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """loss, accuracy, macro precision / recall / F1 and 15-bin ECE."""
    logits = logits.astype(np.float64)
    predictions = logits.argmax(axis=1)
    precision, recall, f1 = macro_precision_recall_f1(predictions, labels)
    return {
        "loss": cross_entropy(logits, labels),
        "accuracy": float((predictions == labels).mean()),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "ece": expected_calibration_error(softmax(logits), labels),
    }
