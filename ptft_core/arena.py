"""The arena's arithmetic over predictions (`Lab.predict`'s long rows: run_id, row, label, probability), pure
pandas: each run's answer per text, where two runs disagree, how often they agree; and the two reads both the Arena
page and the `predict` CLI make (predictions of many texts, a labelled split). Nothing here loads a model."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ptft_core.lab import MAX_DATASET_ROWS, MAX_PREDICT_TEXTS, Lab


def predict_all(lab: Lab, run_ids: Sequence[str], texts: Sequence[str], max_length: int = 0) -> pd.DataFrame:
    """`lab.predict` over any number of texts, in calls of its bound (MAX_PREDICT_TEXTS), rows numbered across
    them."""
    texts = list(texts)
    return pd.concat([lab.predict(list(run_ids), texts[start:start + MAX_PREDICT_TEXTS], max_length)
                      .assign(row=lambda f, s=start: f["row"] + s)
                      for start in range(0, len(texts), MAX_PREDICT_TEXTS)], ignore_index=True)


def labelled_split(lab: Lab, dataset: str, split: str) -> tuple[list[str], list[str]]:
    """(the texts, their true label names) of a dataset's split, its first MAX_DATASET_ROWS rows."""
    rows = lab.dataset_rows(dataset, split, MAX_DATASET_ROWS)
    names = next(d.label_names for d in lab.datasets() if d.name == dataset)
    return rows["text"].tolist(), [names[int(i)] for i in rows["label"]]


def answers(predictions: pd.DataFrame) -> pd.DataFrame:
    """Each run's answer per text: run_id, row, label (its most probable), confidence (that probability)."""
    if predictions.empty:
        return pd.DataFrame(columns=["run_id", "row", "label", "confidence"])
    top = predictions.loc[predictions.groupby(["run_id", "row"], sort=False)["probability"].idxmax()]
    return top.rename(columns={"probability": "confidence"}).reset_index(drop=True)


def agreement(predictions: pd.DataFrame) -> float:
    """The share of texts on which every run gives the same label (1.0 for one run)."""
    top = answers(predictions)
    return float((top.groupby("row")["label"].nunique() == 1).mean()) if len(top) else float("nan")


def disagreements(predictions: pd.DataFrame, texts: Sequence[str], truth: Sequence[str] | None, first: str,
                  second: str) -> pd.DataFrame:
    """The texts on which runs `first` and `second` give different labels, the most confident disagreement first
    (by the lower of the two confidences: both sure and still apart): text, true label (when known), each run's
    label and confidence, and which of them is right."""
    top = answers(predictions).set_index(["run_id", "row"])
    a, b = top.loc[first], top.loc[second]
    apart = a.index[a["label"] != b.reindex(a.index)["label"]]
    table = pd.DataFrame({"row": apart, "text": [texts[i] for i in apart],
                          "first": a.loc[apart, "label"].values, "first confidence": a.loc[apart, "confidence"].values,
                          "second": b.loc[apart, "label"].values,
                          "second confidence": b.loc[apart, "confidence"].values})
    if truth is not None:
        table.insert(2, "true label", [truth[i] for i in apart])
        table["right"] = ["first" if t == x else "second" if t == y else "neither"
                          for t, x, y in zip(table["true label"], table["first"], table["second"], strict=True)]
    order = table[["first confidence", "second confidence"]].min(axis=1).sort_values(ascending=False, kind="stable")
    return table.loc[order.index].reset_index(drop=True)
