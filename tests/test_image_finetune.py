"""Image fine-tuning: a pretrained backbone under a new head, its source task scored with the base's own head, each
strategy freezing what it says bit for bit, replay and L2-SP changing the run, and a fine-tune queued on its
pretraining's checkpoint through the engine (real models: mnist -> digits)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from ptft_core.config import ConfigError, ImageFinetuneConfig, ImagePretrainConfig, OptimConfig
from ptft_core.engine import Engine
from ptft_core.journal import MemoryLogger
from ptft_core.training import run_image_finetune, run_image_pretrain
from ptft_core.training.checkpoint import load_image_classifier
from tests.conftest import linked_home

pytestmark = pytest.mark.slow

SOURCE = ImagePretrainConfig(dataset="mnist", max_steps=30, eval_count=1, batch_size=64, precision="float32")
# One evaluation (at the last step) besides step 0: the final checkpoint, the best one's, holds the last weights.
TINY = ImageFinetuneConfig(dataset="digits", max_steps=4, eval_count=1, batch_size=32, log_every=2,
                           precision="float32")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, dict]:
    """A 30-step resnet-small pretrained on mnist (its final folder) and its metrics, made once for the module."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        home = linked_home(tmp_path_factory.mktemp("base") / "home")
        monkeypatch.setenv("PTFT_HOME", str(home))
        logger = MemoryLogger()
        assert run_image_pretrain(SOURCE, home / "source", logger) == "completed"
    last = {(e["split"], e["name"]): e["value"] for e in logger.events if e["type"] == "metric"}
    return home / "source" / "checkpoints" / "final", last


def tune(tmp_path: Path, base: Path | str, name: str = "run", **changes) -> tuple[MemoryLogger, dict]:
    logger = MemoryLogger()
    config = dataclasses.replace(TINY, base=str(base), **changes)
    assert run_image_finetune(config, tmp_path / name, logger) == "completed"
    return logger, load_image_classifier(tmp_path / name / "checkpoints" / "final")[0].state_dict()


def series(logger: MemoryLogger, split: str, name: str) -> list[float]:
    return [e["value"] for e in logger.events if e["type"] == "metric" and e["split"] == split and e["name"] == name]


def backbone(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith("backbone.")}


def test_the_source_task_is_scored_with_the_base_s_head_from_step_0(home, tmp_path, base):
    folder, source = base
    logger, _ = tune(tmp_path, folder, strategy="full")
    forgetting = series(logger, "forgetting", "prev_task_accuracy")
    assert len(forgetting) == 2  # step 0 and the evaluation
    # Step 0: the base itself on its own validation split, as its pretraining last scored it (mnist, 28 pixels:
    # the fine-tune reads digits at the base's size).
    assert forgetting[0] == pytest.approx(source["validation", "accuracy"], abs=1e-9)
    assert forgetting[-1] != forgetting[0]  # full fine-tuning moved the backbone under the source head
    # The test split's reliability diagram: its bins hold every test image, and their accuracy is the test's.
    counts, accuracies = series(logger, "reliability", "count"), series(logger, "reliability", "accuracy")
    assert sum(counts) == 180  # digits' test split
    assert np.dot(counts, accuracies) / 180 == pytest.approx(series(logger, "test", "accuracy")[0])
    notes = " ".join(e["message"] for e in logger.events if e["type"] == "note")
    assert "source task mnist scored" in notes and "at 28 pixels" in notes


def test_a_linear_probe_and_freeze_bottom_leave_their_frozen_layers_bit_identical(home, tmp_path, base):
    folder, _ = base
    start = backbone(load_image_classifier(folder)[0].state_dict())  # weights and batch-norm statistics
    logger, probe = tune(tmp_path, folder, "probe", strategy="linear_probe")
    assert all(torch.equal(start[k], v) for k, v in backbone(probe).items())
    assert len(set(series(logger, "forgetting", "prev_task_accuracy"))) == 1  # nothing under the head moved
    _, bottom = tune(tmp_path, folder, "bottom", strategy="freeze_bottom", freeze_layers=1)
    frozen = [k for k in start if k.startswith(("backbone.stem.", "backbone.stages.0."))]
    assert frozen and all(torch.equal(start[k], bottom[k]) for k in frozen)
    assert not torch.equal(start["backbone.stages.2.0.conv1.weight"], bottom["backbone.stages.2.0.conv1.weight"])


def test_gradual_unfreezing_trains_the_head_alone_first(home, tmp_path, base):
    folder, _ = base
    start = backbone(load_image_classifier(folder)[0].state_dict())
    _, head_only = tune(tmp_path, folder, strategy="gradual_unfreeze", unfreeze_every_steps=4)
    assert all(torch.equal(start[k], v) for k, v in backbone(head_only).items())
    _, opened = tune(tmp_path, folder, "opened", strategy="gradual_unfreeze", unfreeze_every_steps=2)
    assert not torch.equal(start["backbone.stages.2.0.conv1.weight"], opened["backbone.stages.2.0.conv1.weight"])
    assert torch.equal(start["backbone.stem.0.weight"], opened["backbone.stem.0.weight"])  # stage 1: top stage


@pytest.mark.parametrize("change", [{"replay_fraction": 0.25}, {"l2sp": 10.0}, {"scratch": True},
                                    {"label_fraction": 0.5}, {"strategy": "discriminative"}, {"image_size": 16},
                                    {"augment": "none"}, {"dropout": 0.5}])
def test_each_field_that_shapes_a_fine_tune_changes_it(home, tmp_path, base, change):
    folder, _ = base
    _, plain = tune(tmp_path, folder, "plain")
    logger, changed = tune(tmp_path, folder, "changed", **change)
    assert plain.keys() != changed.keys() or any(not torch.equal(plain[k], changed[k]) for k in plain)
    if change == {"scratch": True}:  # random weights of the base's shape: no source task to score
        assert series(logger, "forgetting", "prev_task_accuracy") == []
        record = load_image_classifier(tmp_path / "changed" / "checkpoints" / "final")[1]
        assert record["mean"] == load_image_classifier(folder)[1]["mean"]  # the base's pipeline, weights aside


def test_a_transfer_between_classes_scores_the_source_classes_with_the_source_head(home, tmp_path):
    low = ["0", "1", "2", "3", "4"]
    source = MemoryLogger()
    run_image_pretrain(dataclasses.replace(SOURCE, classes=low, max_steps=10), tmp_path / "low", source)
    base_model, base_record = load_image_classifier(tmp_path / "low" / "checkpoints" / "final")
    assert base_record["label_names"] == low and base_model.classifier.out_features == 5
    logger, state = tune(tmp_path, tmp_path / "low" / "checkpoints" / "final", "high", dataset="mnist",
                         classes=["5", "6", "7", "8", "9"])
    assert state["classifier.weight"].shape[0] == 5
    assert load_image_classifier(tmp_path / "high" / "checkpoints" / "final")[1]["label_names"] == list("56789")
    # Step 0 is the base on its own validation images (0-4 only, 5 outputs), as its pretraining last scored it.
    before = [e["value"] for e in source.events if e["type"] == "metric" and e["split"] == "validation"
              and e["name"] == "accuracy"][-1]
    assert series(logger, "forgetting", "prev_task_accuracy")[0] == pytest.approx(before, abs=1e-9)
    from ptft_core.vision.data import load_images

    test = load_images("mnist", "test", 28, 1, ["5", "6", "7", "8", "9"])
    assert len(test) == 250 and sorted(set(test.labels.tolist())) == [0, 1, 2, 3, 4]  # 50 a class, renumbered


def test_the_final_checkpoint_holds_the_best_validation_accuracy_s_weights(home, tmp_path, base):
    logger, final = tune(tmp_path, base[0], "best", max_steps=12, eval_count=6)
    scored = [e for e in logger.events if e["type"] == "metric" and e["split"] == "validation"
              and e["name"] == "accuracy" and e["step"] > 0]  # step 0 is no candidate: an untrained head
    best = max(scored, key=lambda e: (e["value"], -e["step"]))  # the first of equals
    saved = [e for e in logger.events if e["type"] == "checkpoint" and e["path"].endswith("final")]
    assert saved[-1]["step"] == best["step"]
    model, record = load_image_classifier(tmp_path / "best" / "checkpoints" / "final")
    from ptft_core.training.images import score
    from ptft_core.vision.data import Normalisation, load_images

    validation = load_images("digits", "validation", 28, 1)
    again = score(model, validation, Normalisation(tuple(record["mean"]), tuple(record["std"])), torch.device("cpu"))
    assert again["accuracy"] == pytest.approx(best["value"], abs=1e-9)
    assert final.keys() == model.state_dict().keys()


def test_early_stopping_ends_a_fine_tune_that_stopped_improving(home, tmp_path, base):
    # A linear probe at a vanishing learning rate scores the same at every evaluation: no new best after the first.
    still = dict(strategy="linear_probe", max_steps=12, eval_count=6, optim=OptimConfig(lr=1e-12))
    patient, _ = tune(tmp_path, base[0], "patient", **still)
    stopped, _ = tune(tmp_path, base[0], "stopped", early_stopping_patience=2, **still)
    assert max(e["step"] for e in patient.events if e["type"] == "metric" and e["split"] == "train") == 12
    assert [e["step"] for e in stopped.events if e["type"] == "early_stop"] == [6]  # best at 2, then 4 and 6
    assert max(e["step"] for e in stopped.events if e["type"] == "metric" and e["split"] == "train") == 6


def test_a_preset_base_trains_at_the_set_s_size_and_replay_needs_a_pretrained_base(home, tmp_path, base):
    logger, state = tune(tmp_path, "vgg-small", "preset")
    assert "vgg-small from random weights" in " ".join(e["message"] for e in logger.events if e["type"] == "note")
    assert series(logger, "forgetting", "prev_task_accuracy") == []
    with pytest.raises(ConfigError, match="replay_fraction: replays the source task of a pretrained base"):
        run_image_finetune(dataclasses.replace(TINY, base="vgg-small", replay_fraction=0.2), tmp_path / "r",
                           MemoryLogger())
    with pytest.raises(ConfigError, match="replay_fraction: .*scratch"):
        run_image_finetune(dataclasses.replace(TINY, base=str(base[0]), scratch=True, replay_fraction=0.2),
                           tmp_path / "s", MemoryLogger())
    with pytest.raises(ConfigError, match=r"base: run:ip-nope: no checkpoint 'final' in run 'ip-nope'"):
        run_image_finetune(dataclasses.replace(TINY, base="run:ip-nope"), tmp_path / "n", MemoryLogger())
    with pytest.raises(ConfigError, match=r"is no image model"):
        run_image_finetune(dataclasses.replace(TINY, base=str(tmp_path)), tmp_path / "t", MemoryLogger())


def test_a_cancelled_fine_tune_resumes_to_the_weights_of_an_uninterrupted_one(home, tmp_path, base):
    folder = str(base[0])
    config = dataclasses.replace(TINY, base=folder, max_steps=6, replay_fraction=0.25, l2sp=1.0,
                                 strategy="gradual_unfreeze", unfreeze_every_steps=2)
    _, whole = tune(tmp_path, folder, "whole", max_steps=6, replay_fraction=0.25, l2sp=1.0,
                    strategy="gradual_unfreeze", unfreeze_every_steps=2)
    asked = iter(range(100))
    assert run_image_finetune(config, tmp_path / "cut", MemoryLogger(),
                              should_stop=lambda: next(asked) == 2) == "cancelled"
    assert run_image_finetune(config, tmp_path / "cut", MemoryLogger(), resume=True) == "completed"
    cut = load_image_classifier(tmp_path / "cut" / "checkpoints" / "final")[0].state_dict()
    assert all(torch.equal(whole[k], cut[k]) for k in whole)


def test_inspect_explains_a_fine_tune_before_and_after(home, tmp_path, base):
    from ptft_core import inspect
    from ptft_core.data import load_split
    from ptft_core.data.images import decode_split

    folder, _ = base
    for strategy, frozen in (("linear_probe", True), ("full", False)):
        tune(tmp_path, folder, strategy, strategy=strategy)
        tuned = inspect.LoadedImages(*(lambda m, r: (m.eval(), r, r["label_names"]))(
            *load_image_classifier(tmp_path / strategy / "checkpoints" / "final")))
        start = inspect.load_image_start({"kind": "image_finetune", "base": str(folder), "dataset": "digits"}, tuned)
        assert start.record["image_size"] == 28 and start.labels == [str(d) for d in range(10)]  # the base's
        same = (inspect.image_filters(start) == inspect.image_filters(tuned)).all()
        assert same == frozen  # a linear probe leaves the first layer as it was; full fine-tuning moves it
    pixels = decode_split(load_split("digits", "test").head(8), 28)
    probs = inspect.predict_images(tuned, pixels)
    assert probs.shape == (8, 10) and abs(probs.sum(axis=1) - 1).max() < 1e-5
    cam, predicted, probability = inspect.grad_cam(tuned, pixels[0])
    assert cam.shape == (28, 28) and cam.min() >= 0 and cam.max() == pytest.approx(1.0)
    assert predicted == probs[0].argmax() and probability == pytest.approx(probs[0].max(), abs=1e-5)
    other = (predicted + 1) % 10
    cam_other, target, _ = inspect.grad_cam(tuned, pixels[0], target=other)
    assert target == other and not (cam_other == cam).all()  # another class, other evidence
    random = inspect.load_image_start({"kind": "image_finetune", "base": "vgg-small", "dataset": "digits"}, tuned)
    assert random.record is tuned.record and len(random.labels) == 10


def test_a_run_starting_from_the_other_modality_s_run_is_refused_when_submitted(home):
    from ptft_core.config import FinetuneConfig, PretrainConfig

    with Engine(cpu_slots=1) as engine:  # not started: the runs stay queued, the checks happen at submit
        image = engine.submit(SOURCE)
        text = engine.submit(PretrainConfig())
        with pytest.raises(ConfigError, match=rf"base: run:{image}: run {image} is image_pretrain; finetune starts "
                                              "from a text run"):
            engine.submit(FinetuneConfig(base=f"run:{image}"))
        with pytest.raises(ConfigError, match=rf"run {text} is pretrain; image_finetune starts from an image run"):
            engine.submit(dataclasses.replace(TINY, base=f"run:{text}"))
        assert engine.submit(dataclasses.replace(TINY, base=f"run:{image}"))  # the same modality is queued


def test_a_fine_tune_queued_on_its_pretraining_runs_after_it_through_the_engine(home):
    with Engine(cpu_slots=1) as engine:
        parent = engine.submit(dataclasses.replace(SOURCE, max_steps=10))
        child = engine.submit(dataclasses.replace(TINY, base=f"run:{parent}", strategy="linear_probe"),
                              parent=parent)
        engine.start()
        ended = engine.wait([parent, child], timeout=600)
        assert ended == {parent: "completed", child: "completed"}, engine.store.get_run(child).get("error")
        rows = engine.store.metric_rows([child])
    assert child.startswith("if-") and parent.startswith("ip-")
    assert set(rows[rows.split == "forgetting"]["name"]) == {"prev_task_accuracy", "prev_task_loss"}
    assert {"validation", "test", "reference", "train"} <= set(rows["split"])
