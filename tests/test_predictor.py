"""The predictor process on its own (the lab contract's `predict` is tested in test_lab_contract.py): a burst
beyond the waiting places is refused at once while the others are answered in turn; a request past its time stops
the predictor and the next one starts a fresh one."""

from __future__ import annotations

import threading

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from ptft_core.lab import Refused
from ptft_core.models import train_wordpiece
from ptft_core.predictor import Predictor

pytestmark = pytest.mark.slow

TEXTS = ["a fine film, moving and funny", "bad", "the plot never comes together", "I would watch it again"]
CORPUS = TEXTS * 10 + ["the film", "the plot was good", "an actor", "it was bad and slow"]


def real_classifier(folder, seed: int = 0) -> None:
    """A 1-layer BERT with its own WordPiece vocabulary, two labels, random weights (drawn with `seed`): a real
    model in seconds."""
    torch.manual_seed(seed)
    tokenizer = train_wordpiece(CORPUS, vocab_size=200)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, id2label={0: "negative", 1: "positive"},
                        label2id={"negative": 0, "positive": 1})
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def test_a_burst_is_answered_or_refused_at_once_and_a_stuck_request_restarts_the_predictor(tmp_path):
    folder = tmp_path / "model"
    real_classifier(folder)
    predictor = Predictor(tmp_path / "predictor.log", max_waiting=1)
    try:
        answers: list = []
        threads = [threading.Thread(target=lambda: answers.append(predictor.predict(str(folder), TEXTS, 32)["probs"]))
                   for _ in range(2)]  # one in the predictor, one waiting: both answered, one after the other
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(answers) == 2 and answers[0] == answers[1]
        for _ in range(2):  # the place in the predictor and the one waiting place, taken
            predictor._places.acquire()
        with pytest.raises(Refused, match="the predictor is busy"):
            predictor.predict(str(folder), TEXTS, 32)
        for _ in range(2):
            predictor._places.release()
        assert predictor.predict(str(folder), TEXTS, 32)["probs"] == answers[0]
    finally:
        predictor.close()
    stuck = Predictor(tmp_path / "predictor.log", timeout=0.001)  # no start answers in a millisecond
    try:
        with pytest.raises(Refused, match="took longer than 0 s"):
            stuck.predict(str(folder), TEXTS, 32)
        stuck.timeout = 120.0
        assert stuck.predict(str(folder), TEXTS, 32)["probs"] == answers[0]  # a fresh predictor, the same answer
    finally:
        stuck.close()
