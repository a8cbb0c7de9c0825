"""Supervised image pretraining: a real run through the engine learns far past the majority class, its final
folder reloads to the same test score, a cancelled run resumes to the very weights of an uninterrupted one, and
each field that shapes the run changes it (real models, the built-in digits)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from scipy.stats import binomtest

from ptft_core.config import ConfigError, ImagePretrainConfig
from ptft_core.data.registry import register_user_dataset
from ptft_core.engine import Engine
from ptft_core.journal import MemoryLogger
from ptft_core.training import run_image_pretrain
from ptft_core.training.checkpoint import load_image_classifier
from ptft_core.training.images import score
from ptft_core.vision.data import Normalisation, augment, load_images
from ptft_core.vision.models import PRESETS
from tests.test_data_user_images import image_folder, png

pytestmark = pytest.mark.slow

TINY = ImagePretrainConfig(dataset="digits", image_size=8, batch_size=32, epochs=1, max_steps=4, eval_count=2,
                           log_every=2, precision="float32")


def test_the_image_models_of_the_config_are_the_built_ones():
    assert tuple(PRESETS) == ImagePretrainConfig.__pydantic_fields__["model"].annotation.__args__


def final_weights(tmp_path, name: str, **changes) -> dict[str, torch.Tensor]:
    config = dataclasses.replace(TINY, **changes)
    assert run_image_pretrain(config, tmp_path / name, MemoryLogger()) == "completed"
    return load_image_classifier(tmp_path / name / "checkpoints" / "final")[0].state_dict()


def differ(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() != b.keys() or any(not torch.equal(a[k], b[k]) for k in a)


def test_a_run_through_the_engine_beats_the_majority_class_and_its_final_folder_reloads(home):
    config = dataclasses.replace(TINY, epochs=3, max_steps=0, eval_count=4, precision="auto")
    with Engine(cpu_slots=1) as engine:
        run_id = engine.submit(config)
        engine.start()
        assert engine.wait([run_id], timeout=600) == {run_id: "completed"}
        rows = engine.store.metric_rows([run_id])
        folder = engine.run_dir(run_id) / "checkpoints" / "final"
    last = rows.sort_values("seq").groupby(["split", "name"]).last()["value"]
    validation = rows[(rows.split == "validation") & (rows.name == "loss")].sort_values("step")["value"]
    assert validation.iloc[-1] < 0.5 * validation.iloc[0]  # the loss falls (step 0: about ln 10 = 2.3)
    test = load_images("digits", "test", 8, 1)
    correct = round(last["test", "accuracy"] * len(test))
    # Stated test: one-sided exact binomial test of the test accuracy against the majority class's accuracy.
    assert binomtest(correct, len(test), last["reference", "accuracy"], alternative="greater").pvalue < 1e-6
    model, record = load_image_classifier(folder)
    again = score(model, test, Normalisation(tuple(record["mean"]), tuple(record["std"])), torch.device("cpu"))
    assert again["accuracy"] == pytest.approx(last["test", "accuracy"], abs=1 / len(test))  # bf16 vs float32


def test_a_cancelled_run_resumes_to_the_weights_of_an_uninterrupted_one(home, tmp_path):
    config = dataclasses.replace(TINY, max_steps=6, augment="crop_flip", dropout=0.2)
    whole = final_weights(tmp_path, "whole", max_steps=6, augment="crop_flip", dropout=0.2)
    asked = iter(range(100))
    logger = MemoryLogger()
    assert run_image_pretrain(config, tmp_path / "cut", logger, should_stop=lambda: next(asked) == 2) == "cancelled"
    assert (tmp_path / "cut" / "checkpoints" / "step-3" / "training_state.pt").is_file()
    resumed = MemoryLogger()
    assert run_image_pretrain(config, tmp_path / "cut", resumed, resume=True) == "completed"
    assert min(e["step"] for e in resumed.events if e["type"] == "metric" and e["split"] == "train") > 3
    cut = load_image_classifier(tmp_path / "cut" / "checkpoints" / "final")[0].state_dict()
    assert not differ(whole, cut)


@pytest.mark.parametrize("change", [{"model": "vgg-small"}, {"image_size": 12}, {"augment": "none"},
                                    {"augment": "crop_flip"}, {"dropout": 0.5}, {"seed": 1}, {"batch_size": 16},
                                    {"max_steps": 5}, {"optim": {"lr": 1e-2}}, {"classes": ["0", "1", "2"]}])
def test_each_field_that_shapes_the_run_changes_it(home, tmp_path, change):
    baseline = final_weights(tmp_path, "baseline")
    changes = {k: (dataclasses.replace(TINY.optim, **v) if k == "optim" else v) for k, v in change.items()}
    assert differ(baseline, final_weights(tmp_path, "changed", **changes))


def test_the_schedule_fields_change_what_is_logged(home, tmp_path):
    def steps(split: str, **changes) -> list[int]:
        logger = MemoryLogger()
        run_image_pretrain(dataclasses.replace(TINY, **changes), tmp_path / str(changes), logger)
        return sorted({e["step"] for e in logger.events if e["type"] == "metric" and e["split"] == split})

    assert steps("validation") == [0, 2, 4] and steps("validation", eval_count=4) == [0, 1, 2, 3, 4]
    assert steps("validation", eval_every=3) == [0, 3, 4]
    assert steps("train") == [2, 4] and steps("train", log_every=1) == [1, 2, 3, 4]
    assert steps("validation", max_steps=0, epochs=2)[-1] == 2 * (1437 // 32)  # epochs: whole passes


def test_augmentation_shifts_and_mirrors_and_repeats_with_its_generator():
    pixels = torch.arange(2 * 8 * 8, dtype=torch.uint8).view(2, 1, 8, 8)
    same = [augment(pixels, "crop", torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(same[0], same[1]) and same[0].shape == pixels.shape
    assert not torch.equal(augment(pixels, "crop", torch.Generator().manual_seed(4)), same[0])
    assert torch.equal(augment(pixels, "none", torch.Generator()), pixels)
    flipped = augment(pixels, "crop_flip", torch.Generator().manual_seed(0))
    assert flipped.shape == pixels.shape


def test_a_user_image_set_trains_and_a_batch_larger_than_its_training_split_is_refused(home, tmp_path):
    register_user_dataset("pets", image_folder(tmp_path / "pets", {"cat": 10, "dog": 10}, mode="RGB"))
    config = dataclasses.replace(TINY, dataset="pets", image_size=0, batch_size=8, max_steps=2)
    assert run_image_pretrain(config, tmp_path / "run", MemoryLogger()) == "completed"
    model, record = load_image_classifier(tmp_path / "run" / "checkpoints" / "final")
    assert record["channels"] == 3 and record["label_names"] == ["cat", "dog"] and len(record["mean"]) == 3
    assert record["image_size"] == 12  # image_size 0: the set's own
    mixed = image_folder(tmp_path / "mixed", {"a": 8, "b": 8})
    (mixed / "a" / "000.png").write_bytes(png(0, size=(20, 20)))
    register_user_dataset("mixed", mixed)
    with pytest.raises(ConfigError, match=r"image_size: mixed's images have several sizes"):
        run_image_pretrain(dataclasses.replace(config, dataset="mixed"), tmp_path / "m", MemoryLogger())
    with pytest.raises(ConfigError, match=r"batch_size: 32 is more than the 16 training images of pets"):
        run_image_pretrain(dataclasses.replace(config, batch_size=32), tmp_path / "big", MemoryLogger())
