"""Classification metrics as pure numpy functions of logits and labels (no model, no torch), and the test split's
reliability diagram written to a run's journal."""

from __future__ import annotations

import numpy as np

from ptft_core.config import RELIABILITY_SPLIT

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


def reliability(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """The top-label reliability diagram: confidences (the top class's probability) in `n_bins` equal-width bins
    (lo, hi]; for each bin that holds an example its index, example count, mean confidence and accuracy. A
    calibrated model's accuracy equals its confidence in every bin."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    present = np.unique(bins)
    return {"bin": present, "count": np.array([np.sum(bins == b) for b in present]),
            "confidence": np.array([confidence[bins == b].mean() for b in present]),
            "accuracy": np.array([correct[bins == b].mean() for b in present])}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Top-label ECE: the mean |accuracy - confidence| of the reliability bins, weighted by their share of the
    examples."""
    bins = reliability(probs, labels, n_bins)
    return float(np.sum(bins["count"] / len(labels) * np.abs(bins["accuracy"] - bins["confidence"])))


def log_reliability(logger, logits: np.ndarray, labels: np.ndarray, split: str = RELIABILITY_SPLIT) -> None:
    """The test split's reliability diagram into the journal: split "reliability", one step per confidence bin
    (its index, 0..ECE_BINS-1), metrics `confidence`, `accuracy` and `count`: what Compare draws beside ECE."""
    bins = reliability(softmax(logits.astype(np.float64)), labels)
    for index, count, confidence, accuracy in zip(*(bins[k] for k in ("bin", "count", "confidence", "accuracy")),
                                                  strict=True):
        for name, value in (("confidence", confidence), ("accuracy", accuracy), ("count", count)):
            logger.metric(int(index), name, float(value), split)


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
