"""The arena's arithmetic over predictions (long rows of run_id, row, label, probability), by hand."""

from __future__ import annotations

import math

import pandas as pd

from ptft_core import arena, plots


def predictions(runs: dict[str, list[float]]) -> pd.DataFrame:
    """Each run's probability of "positive" per text (two labels)."""
    rows = []
    for run_id, positive in runs.items():
        for row, p in enumerate(positive):
            rows += [{"run_id": run_id, "row": row, "label": "negative", "probability": 1 - p},
                     {"run_id": run_id, "row": row, "label": "positive", "probability": p}]
    return pd.DataFrame(rows)


def test_answers_agreement_and_the_surest_disagreements_first():
    frame = predictions({"pre": [0.9, 0.2, 0.6, 0.95], "scr": [0.3, 0.1, 0.45, 0.99]})
    top = arena.answers(frame)
    assert top[top["run_id"] == "pre"]["label"].tolist() == ["positive", "negative", "positive", "positive"]
    assert top[top["run_id"] == "scr"]["confidence"].tolist() == [0.7, 0.9, 0.55, 0.99]
    assert arena.agreement(frame) == 0.5  # texts 1 and 3
    table = arena.disagreements(frame, ["t0", "t1", "t2", "t3"], ["positive", "negative", "negative", "positive"],
                                "pre", "scr")
    # text 0: 0.9 vs 0.7 (the lower 0.7), text 2: 0.6 vs 0.55 (0.55): the surer disagreement first
    assert table["text"].tolist() == ["t0", "t2"] and table["right"].tolist() == ["first", "second"]
    assert list(table.columns) == ["row", "text", "true label", "first", "first confidence", "second",
                                   "second confidence", "right"]
    assert "true label" not in arena.disagreements(frame, ["a"] * 4, None, "pre", "scr")
    assert math.isnan(arena.agreement(frame.iloc[0:0]))


def test_the_predictions_figure_has_a_bar_group_per_run():
    frame = predictions({"pre": [0.9], "scr": [0.3]}).assign(run=lambda f: f["run_id"])
    fig = plots.predictions_figure(frame, title="one text")
    assert [t.name for t in fig.data] == ["pre", "scr"] and list(fig.data[0].text) == ["10%", "90%"]
    assert fig.layout.barmode == "group"
