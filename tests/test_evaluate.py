"""Classification metrics against values computed by hand."""

import math

import numpy as np
import pytest

from ptft_core.journal import MemoryLogger
from ptft_core.training.evaluate import (
    classification_metrics,
    cross_entropy,
    expected_calibration_error,
    log_reliability,
    macro_precision_recall_f1,
    reliability,
)


def test_macro_f1_by_hand():
    labels = np.array([0, 0, 1, 1, 1])
    predictions = np.array([0, 1, 1, 1, 0])
    # class 0: tp 1 of 2 predicted, 2 actual -> p = r = f1 = 1/2; class 1: tp 2 of 3 and 3 -> 2/3 each.
    p, r, f1 = macro_precision_recall_f1(predictions, labels)
    assert p == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert r == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert f1 == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_macro_scores_zero_for_a_class_never_predicted():
    labels = np.array([0, 1, 1, 1])
    predictions = np.array([1, 1, 1, 1])
    # class 0: p = 0/0 -> 0, r = 0; class 1: p = 3/4, r = 1, f1 = 6/7.
    p, r, f1 = macro_precision_recall_f1(predictions, labels)
    assert p == pytest.approx(3 / 8)
    assert r == pytest.approx(1 / 2)
    assert f1 == pytest.approx(3 / 7)


def test_ece_by_hand():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.38, 0.62], [0.36, 0.64]])
    labels = np.array([0, 1, 1, 1, 0])
    # bins of width 1/15: 0.9, 0.8 and 0.7 each alone; 0.62 and 0.64 share (0.6, 0.667]: accuracy 1/2, conf 0.63
    expected = (abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.7) + 2 * abs(0.5 - 0.63)) / 5
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)


def test_the_reliability_bins_are_what_ece_weighs():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.38, 0.62], [0.36, 0.64]])
    labels = np.array([0, 1, 1, 1, 0])
    bins = reliability(probs, labels)
    assert bins["bin"].tolist() == [9, 10, 11, 13]  # (0.6, 0.667], (0.667, 0.733], (0.733, 0.8], (0.867, 0.933]
    assert bins["count"].tolist() == [2, 1, 1, 1] and bins["accuracy"].tolist() == [0.5, 1.0, 0.0, 1.0]
    assert bins["confidence"] == pytest.approx([0.63, 0.7, 0.8, 0.9])

    journal = MemoryLogger()
    log_reliability(journal, np.log(probs), labels)
    rows = [(e["step"], e["name"], e["value"]) for e in journal.events if e["split"] == "reliability"]
    assert len(rows) == len(journal.events) == 12
    assert {(step, name) for step, name, _ in rows} == {(b, n) for b in (9, 10, 11, 13)
                                                       for n in ("confidence", "accuracy", "count")}
    assert sum(value for _, name, value in rows if name == "count") == len(labels)


def test_perfectly_calibrated_is_zero():
    probs = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(probs, np.array([0, 1])) == pytest.approx(0.0)


def test_metrics_from_logits():
    logits = np.array([[0.0, math.log(3)], [2.0, 0.0]])
    labels = np.array([1, 1])
    assert cross_entropy(logits, labels) == pytest.approx((-math.log(0.75) + math.log(1 + math.exp(2))) / 2)
    metrics = classification_metrics(logits, labels)
    assert metrics["accuracy"] == 0.5
    assert set(metrics) == {"loss", "accuracy", "precision", "recall", "f1", "ece"}
