"""The word-frequency reference lines of pretraining: unigram / bigram cross-entropy on the scored validation
targets, logged by every pretraining run and drawn on its loss charts."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from tiny_runs import tiny_pretrain

from ptft_core import plots
from ptft_core.journal import MemoryLogger
from ptft_core.training import run_pretrain
from ptft_core.training.lm_data import IGNORE
from ptft_core.training.reference import BIGRAM_WEIGHT, reference_losses

VOCAB = 6  # ids 0 (special), 1..5 (words)


def test_unigram_and_bigram_cross_entropy_of_a_known_sequence():
    # Training text: the cycle 1 2 3 4 5 repeated, so each word is 1/5 of the tokens and the next word is
    # certain given the previous one.
    train = torch.tensor([[0] + [1, 2, 3, 4, 5] * 20])
    inputs = torch.tensor([[0, 1, 2, 3, 4, 5]])
    clm = reference_losses("clm", train, [(inputs, inputs, 5)], VOCAB, special_ids=[0])
    unigram = (20 + 1) / (100 + VOCAB)  # add-one, the special token never counted
    assert clm["unigram_loss"] == pytest.approx(-math.log(unigram))
    # Every (prev, next) pair of the text follows the cycle; the first (0 -> 1) was seen once after 0.
    certain = BIGRAM_WEIGHT * 1.0 + (1 - BIGRAM_WEIGHT) * unigram
    assert clm["bigram_loss"] == pytest.approx(-math.log(certain), rel=1e-6)
    assert clm["bigram_loss"] < clm["unigram_loss"]

    # Masked LM scores only the masked positions, with the input just before each as context; a [MASK]
    # context (never seen in training) leaves only the unigram.
    masked = torch.tensor([[0, 1, 9, 3, 4, 5]])  # 9 stands for [MASK] (outside the counted vocabulary)
    labels = torch.full_like(masked, IGNORE)
    labels[0, 2], labels[0, 3] = 2, 3
    mlm = reference_losses("mlm", train, [(masked, labels, 2)], VOCAB, special_ids=[0])
    assert mlm["unigram_loss"] == pytest.approx(-math.log(unigram))
    assert mlm["bigram_loss"] == pytest.approx(-(math.log(certain) + math.log(unigram)) / 2, rel=1e-6)


@pytest.mark.slow
def test_a_pretraining_run_logs_its_reference_at_step_zero(home, tmp_path):
    logger = MemoryLogger()
    assert run_pretrain(tiny_pretrain(max_steps=2), tmp_path / "pre", logger) == "completed"
    reference = [e for e in logger.events if e["type"] == "metric" and e["split"] == "reference"]
    assert sorted(e["name"] for e in reference) == ["bigram_loss", "unigram_loss"]
    assert all(e["step"] == 0 for e in reference)
    values = {e["name"]: e["value"] for e in reference}
    # Both sit between a perfect model and the uniform guess over the 1,000-word vocabulary.
    assert 0 < values["bigram_loss"] < values["unigram_loss"] < math.log(1000)


def test_reference_lines_go_on_the_loss_panel_only():
    frame = pd.concat([pd.DataFrame({"run_id": "a", "split": split, "name": name, "x": [0, 10], "value": values,
                                     "label": "run a"})
                       for split, name, values in (("validation", "loss", [8.0, 6.0]), ("train", "loss", [8.1, 6.2]),
                                                   ("validation", "perplexity", [3000.0, 400.0]))])
    references = pd.DataFrame({"run_id": "a", "split": "reference", "name": ["unigram_loss", "bigram_loss"],
                               "x": 0, "value": [6.8, 5.3], "label": "run a"})
    fig = plots.metric_figure(frame, facet="name", references=references)
    lines = [s for s in fig.layout.shapes if s.y0 == s.y1]
    assert sorted(s.y0 for s in lines) == [5.3, 6.8]
    assert {s.yref for s in lines} == {"y"}  # the first panel (loss), not the perplexity one
    assert sorted(a.text for a in fig.layout.annotations if a.text.startswith(("unigram", "bigram"))) == [
        "bigram 5.30", "unigram 6.80"]
    # Two runs with different tokenizers: each line names its run.
    two = pd.concat([references, references.assign(run_id="b", label="run b", value=[7.1, 5.9])])
    fig = plots.metric_figure(frame, references=two)
    assert {a.text for a in fig.layout.annotations} >= {"unigram 6.80 (run a)", "unigram 7.10 (run b)"}
    # No references, no lines.
    assert not plots.metric_figure(frame, facet="name").layout.shapes


def test_an_image_run_s_majority_class_goes_on_its_accuracy_panels_only():
    frame = pd.concat([pd.DataFrame({"run_id": "a", "split": split, "name": name, "x": [0, 10], "value": values})
                       for split, name, values in (("validation", "loss", [2.3, 0.4]),
                                                   ("validation", "accuracy", [0.1, 0.9]))])
    references = pd.DataFrame({"run_id": "a", "split": "reference", "name": ["accuracy"], "x": 0, "value": [0.11]})
    fig = plots.metric_figure(frame, facet="name", references=references)
    lines = [s for s in fig.layout.shapes if s.y0 == s.y1]
    assert [s.y0 for s in lines] == [0.11] and lines[0].yref == "y2"  # the second panel: accuracy, not loss
    assert "majority class 0.11" in {a.text for a in fig.layout.annotations}
    one = plots.metric_figure(frame[frame["name"] == "accuracy"], references=references)  # one plot, one metric
    assert [s.y0 for s in one.layout.shapes] == [0.11]
    assert not plots.metric_figure(frame[frame["name"] == "loss"], references=references).layout.shapes
