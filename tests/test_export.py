"""A fine-tune used outside its run. Exported as a Hugging Face model folder: real runs through the engine, the CLI's
export, then transformers' own `pipeline` loading the folder, whose predictions must be the lab's (a mean-pooled
classifier through the remote code it carries, a [CLS] one without); the model card says what the run was; what
cannot be exported is refused with the reason. Asked from the command line (`predict`): through the lab service's
predictor, side by side, the same probabilities."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from tiny_runs import tiny_finetune

from ptft_core import inspect
from ptft_core.cli import main
from ptft_core.config import ImagePretrainConfig
from ptft_core.engine import Engine

pytestmark = pytest.mark.slow

TEXTS = ["a fine film, moving and funny", "bad", "the plot never comes together, and the acting is flat",
         "I would watch it again"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A mean-pooled and a [CLS]-pooled tiny fine-tune, and an image pretraining, finished in one lab."""
    from tests.conftest import linked_home

    with pytest.MonkeyPatch.context() as monkeypatch:
        home = linked_home(tmp_path_factory.mktemp("export") / "home")
        monkeypatch.setenv("PTFT_HOME", str(home))
        monkeypatch.setenv("PTFT_GPUS", "none")
        monkeypatch.delenv("PTFT_TRAINER", raising=False)
        with Engine(cpu_slots=1) as engine:
            ids = {"mean": engine.submit(tiny_finetune(pooling="mean", name="tiny-mean")),
                   "cls": engine.submit(tiny_finetune(pooling="cls")),
                   "image": engine.submit(ImagePretrainConfig(dataset="digits", image_size=8, max_steps=2,
                                                              eval_count=1, batch_size=32))}
            engine.start()
            assert set(engine.wait(list(ids.values()), timeout=300).values()) == {"completed"}
        yield home, ids


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pipeline_loads_the_exported_folder_and_predicts_what_the_lab_does(runs, tmp_path, monkeypatch, capsys,
                                                                         pooling):
    from transformers import pipeline

    home, ids = runs
    monkeypatch.setenv("PTFT_HOME", str(home))
    out = tmp_path / f"exported-{pooling}"
    assert main(["runs", "export-model", ids[pooling], "--out", str(out)]) == 0
    assert (out / "ptft_pooling.py").is_file() == (pooling == "mean")
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    classify = pipeline("text-classification", model=str(out), trust_remote_code=pooling == "mean", top_k=None,
                        device="cpu")
    theirs = np.array([[next(s["score"] for s in scores if s["label"] == label) for label in ("negative", "positive")]
                       for scores in classify(TEXTS, truncation=True, max_length=32)])
    ours = inspect.predict(inspect.load_classifier(ids[pooling]), TEXTS, 32)
    assert np.allclose(theirs, ours, atol=1e-5)


def test_the_model_card_says_what_the_run_was_and_how_to_load_it(runs, tmp_path, monkeypatch):
    home, ids = runs
    monkeypatch.setenv("PTFT_HOME", str(home))
    out = tmp_path / "card"
    assert main(["runs", "export-model", ids["mean"], "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification")
    assert "# tiny-mean" in card and f"run `{ids['mean']}`" in card
    assert 'pipeline("text-classification", model="path/to/this/folder", trust_remote_code=True' in card
    assert "- dataset: `amazon`" in card and "- labels: negative, positive" in card
    assert "| accuracy |" in card and "Expected calibration error" in card
    cost = re.search(r"\*\*([\d.]+) ms\*\* a text at batch 1 \(median\), \*\*(\d+) texts/s\*\* at batch 32", card)
    assert cost and float(cost[1]) > 0 and int(cost[2]) > 0  # timed on this machine at export
    rows = [line for line in card.splitlines() if line.startswith("| (")]
    assert rows and sum(int(line.split("|")[2]) for line in rows) == 371  # every amazon test example, binned


def test_what_cannot_be_exported_is_refused_with_the_reason(runs, tmp_path, monkeypatch, capsys):
    home, ids = runs
    monkeypatch.setenv("PTFT_HOME", str(home))
    assert main(["runs", "export-model", ids["image"], "--out", str(tmp_path / "a")]) == 2
    assert "is a run of kind image_pretrain; export writes fine-tuned text classifiers" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    assert main(["runs", "export-model", ids["cls"], "--out", str(tmp_path / "full")]) == 2
    assert "already holds files" in capsys.readouterr().err and (tmp_path / "full" / "x").read_text() == "keep me"
    assert main(["runs", "export-model", "ft-nope", "--out", str(tmp_path / "b")]) == 2


def test_predict_from_the_command_line_puts_runs_side_by_side_through_the_service(runs, tmp_path, monkeypatch,
                                                                                capsys):
    import pandas as pd

    from tests.conftest import stop_lab

    home, ids = runs
    monkeypatch.setenv("PTFT_HOME", str(home))
    out = tmp_path / "predictions.csv"
    try:
        assert main(["predict", ids["mean"], ids["cls"], "--split", "amazon:test", "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert "the runs agree on" in printed and f"tiny-mean ({ids['mean']}): accuracy" in printed
        frame = pd.read_csv(out)
        assert len(frame) == 2 * 371 * 2 and set(frame["true_label"]) == {"negative", "positive"}
        mine = frame[frame["run_id"] == ids["mean"]].sort_values(["row", "label"])
        texts = mine["text"].iloc[::2].tolist()
        # The service's answers are what transformers itself computes from the exported folder.
        from transformers import pipeline

        assert main(["runs", "export-model", ids["mean"], "--out", str(tmp_path / "exported")]) == 0
        classify = pipeline("text-classification", model=str(tmp_path / "exported"), trust_remote_code=True,
                            top_k=None, device="cpu")
        theirs = np.array([[next(s["score"] for s in scores if s["label"] == label)
                            for label in ("negative", "positive")]
                           for scores in classify(texts, truncation=True, max_length=32)])
        assert np.allclose(mine["probability"].to_numpy().reshape(-1, 2), theirs, atol=1e-5)
        assert main(["predict", ids["image"], "--text", "fine"]) == 2
        assert "is a run of kind image_pretrain" in capsys.readouterr().err
        assert main(["predict", "ft-nope", "--text", "fine"]) == 2
        assert "no run 'ft-nope'" in capsys.readouterr().err
    finally:
        stop_lab(home)
