"""Fine-tuning: batching, schedules, subsets, a real tiny run, early stopping, exact resume, the end-to-end chain,
and the evaluate run kind (cross-domain scores of a fine-tune)."""

import json

import numpy as np
import pytest
import torch
from tiny_runs import tiny_finetune, tiny_pretrain
from transformers import AutoModelForSequenceClassification

from ptft_core import paths
from ptft_core.config import (
    ConfigError,
    EvaluateConfig,
    FinetuneConfig,
    OptimConfig,
    eval_steps,
    load_config,
    probe_steps,
)
from ptft_core.journal import MemoryLogger
from ptft_core.models import load_tokenizer, resolve_checkpoint
from ptft_core.training import run_evaluate, run_finetune, run_pretrain
from ptft_core.training.common import PhaseClock, build_scheduler, length_grouped_batches, pad_batch
from ptft_core.training.finetune import build_task, stratified_subset


def test_pad_batch_pads_to_the_longest_in_the_batch():
    batch = pad_batch([[5, 6, 7], [8], [9, 10]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]


def test_length_grouped_batches_cover_everything_once_with_little_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, size=1000).tolist()
    batches = length_grouped_batches(lengths, batch_size=16, seed=3, mega_batches=10)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert [len(b) for b in batches].count(16) == len(batches) - 1  # one short batch at most (1000 = 62*16 + 8)
    assert batches == length_grouped_batches(lengths, batch_size=16, seed=3, mega_batches=10)
    assert batches != length_grouped_batches(lengths, batch_size=16, seed=4, mega_batches=10)

    def padding(groups):
        return sum(max(lengths[i] for i in g) * len(g) - sum(lengths[i] for i in g) for g in groups)

    shuffled = rng.permutation(1000)
    random_batches = [shuffled[i:i + 16].tolist() for i in range(0, 1000, 16)]
    assert padding(batches) < 0.2 * padding(random_batches)


@pytest.mark.parametrize(("schedule", "expected"), [
    ("constant", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]),
    ("linear", [0.5, 1.0, 0.75, 0.5, 0.25, 0.0]),
    ("cosine", [0.5, 1.0, 0.8535534, 0.5, 0.1464466, 0.0]),
])
def test_schedules_warm_up_then_decay(schedule, expected):
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = build_scheduler(optimizer, OptimConfig(lr=1.0, schedule=schedule, warmup_ratio=0.2), total_steps=5)
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx(expected)


def test_stratified_subset_keeps_class_shares():
    labels = np.array([0] * 800 + [1] * 200)
    picked = stratified_subset(labels, 0.1, seed=0)
    assert np.sum(labels[picked] == 0) == 80 and np.sum(labels[picked] == 1) == 20
    assert list(picked) == list(stratified_subset(labels, 0.1, seed=0))
    assert list(picked) != list(stratified_subset(labels, 0.1, seed=1))


@pytest.mark.slow
def test_tiny_finetune_logs_evaluates_and_keeps_the_best(home, tmp_path):
    logger = MemoryLogger()
    # 149 examples: 10 steps an epoch; evaluations before the first step, every 4 steps and at each epoch's end.
    config = tiny_finetune(epochs=2, max_steps=0, label_fraction=0.05, eval_every=4)
    assert run_finetune(config, tmp_path, logger) == "completed"

    metrics = [e for e in logger.events if e["type"] == "metric"]
    assert {(e["split"], e["name"]) for e in metrics} >= {
        ("train", n) for n in ("loss", "lr", "grad_norm", "tokens_per_s", "trainable_params", "accuracy", "f1",
                               "eval_loss")} | {
        (s, n) for s in ("validation", "test") for n in ("loss", "accuracy", "precision", "recall", "f1", "ece")} | {
        ("forgetting", "cka_similarity")}
    eval_steps = [0, 4, 8, 10, 12, 16, 20]
    assert [e["step"] for e in metrics if e["split"] == "validation" and e["name"] == "accuracy"] == eval_steps
    # The train sample and the probes: one evaluation in probe_every (5: step 0 and step 16), and the last.
    for split, name in [("train", "accuracy"), ("forgetting", "cka_similarity")]:
        assert [e["step"] for e in metrics if e["split"] == split and e["name"] == name] == [0, 16, 20], name
    assert logger.values("cka_similarity", "forgetting")[0] > 0.5
    # The test split's reliability diagram: its bins hold every test example; their accuracy is the test's.
    counts, accuracies = logger.values("count", "reliability"), logger.values("accuracy", "reliability")
    assert sum(counts) == 371  # amazon's test split
    assert np.dot(counts, accuracies) / 371 == pytest.approx(logger.values("accuracy", "test")[0])
    assert [e["step"] for e in logger.events if e["type"] == "progress"][-1] == 20
    # The Runs page and the CLI show step 0/20 from the start: the total comes before the step-0 evaluation.
    first = next(e for e in logger.events if e["type"] in ("progress", "metric") and e.get("split") != "device")
    assert (first["type"], first["step"], first["total_steps"]) == ("progress", 0, 20)
    # From the first step on, the pace: training steps/s and the time left on the run's own schedule, which
    # shrinks to the test split's scoring after the last evaluation.
    paced = [e for e in logger.events if e["type"] == "progress" and "eta_s" in e]
    assert paced[0]["step"] == 1 and all(e["train_steps_per_s"] > 0 for e in paced)
    assert paced[0]["eta_s"] > paced[-1]["eta_s"] > 0 and paced[-1]["step"] == 20

    # The test metrics come from the best validation checkpoint, which is what final holds.
    accuracy = logger.values("accuracy", "validation")
    best_step = eval_steps[1 + int(np.argmax(accuracy[1:]))]  # step 0 is a reference, never the best
    saves = [(e["step"], e["path"].rsplit("/", 1)[-1]) for e in logger.events if e["type"] == "checkpoint"]
    assert saves == [(10, "step-10"), (best_step, "final")]  # an epoch-end resume point; final = the best
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["final"]  # resume points removed
    final = tmp_path / "checkpoints" / "final"
    assert json.loads((final / "ptft_config.json").read_text())["dataset"] == "amazon"
    model = AutoModelForSequenceClassification.from_pretrained(final)
    assert model.config.id2label == {0: "negative", 1: "positive"}


@pytest.mark.slow
def test_early_stopping_stops_after_patience(home, tmp_path):
    logger = MemoryLogger()
    # An lr this small cannot change the predictions: no evaluation improves on the first one after a step (the
    # one before any step is a reference, not a candidate), so steps 4 and 6 are the two without improvement.
    config = tiny_finetune(max_steps=10, eval_every=2, eval_train_samples=0, probe_drift=False,
                           early_stopping_patience=2, early_stopping_metric="accuracy", optim=OptimConfig(lr=1e-12))
    assert run_finetune(config, tmp_path, logger) == "completed"
    assert [e for e in logger.events if e["type"] == "early_stop"] == [
        {"type": "early_stop", "step": 6, "best": logger.values("accuracy", "validation")[1]}]
    assert max(e["step"] for e in logger.events if e["type"] == "metric" and e["split"] == "train") == 6
    assert len(logger.values("accuracy", "test")) == 1


@pytest.mark.slow
def test_cancel_then_resume_gives_the_same_run(home, tmp_path):
    config = tiny_finetune(max_steps=6, eval_every=2)
    straight = MemoryLogger()
    run_finetune(config, tmp_path / "straight", straight)

    calls = []
    interrupted = MemoryLogger()
    stop_after_three = lambda: calls.append(1) or len(calls) >= 3
    assert run_finetune(config, tmp_path / "cut", interrupted, should_stop=stop_after_three) == "cancelled"
    assert run_finetune(config, tmp_path / "cut", interrupted, resume=True) == "completed"

    def series(logger, split, name):
        return [(e["step"], round(e["value"], 5)) for e in logger.events
                if e["type"] == "metric" and e["split"] == split and e["name"] == name]

    assert [s for s, _ in series(interrupted, "train", "loss")] == [1, 2, 3, 4, 5, 6]
    for split, name in [("train", "loss"), ("validation", "loss"), ("test", "accuracy")]:
        assert series(interrupted, split, name) == series(straight, split, name), (split, name)


@pytest.mark.slow
def test_end_to_end_pretrain_then_finetune_from_the_run(home):
    """The chain runs and logs. A 1-minute CPU pretraining only reaches unigram statistics, so its fine-tune
    is not expected to beat chance (see the next test for that)."""
    pretrain = tiny_pretrain(corpus=["wiki"], vocab_size=2000, block_size=64, batch_size=16, max_steps=40,
                             eval_every=20, log_every=10, eval_blocks=16)
    assert run_pretrain(pretrain, paths.run_dir("pre"), MemoryLogger()) == "completed"

    logger = MemoryLogger()
    finetune = tiny_finetune(base="run:pre", dataset="movies", label_fraction=0.02, max_steps=0)
    assert run_finetune(finetune, paths.run_dir("ft"), logger) == "completed"
    assert len(logger.values("general_mlm_loss", "forgetting")) == 2  # the pretrain run's MLM head came along
    assert 0 <= logger.values("accuracy", "test")[0] <= 1
    assert (paths.run_dir("ft") / "checkpoints" / "final" / "mlm_head.safetensors").is_file()


@pytest.mark.slow
def test_a_fine_tune_beats_chance(home, tmp_path):
    """MiniLM, all weights, 40 steps of 16 movie sentences: ~0.73 test accuracy (chance: 0.5)."""
    logger = MemoryLogger()
    config = FinetuneConfig(base="minilm-l6", dataset="movies", label_fraction=0.1, max_length=48, batch_size=16,
                            max_steps=40, eval_every=1000, eval_train_samples=0, probe_drift=False,
                            optim=OptimConfig(lr=1e-4))
    assert run_finetune(config, tmp_path, logger) == "completed"
    assert logger.values("accuracy", "test")[0] > 0.6


@pytest.mark.slow
def test_an_evaluate_run_scores_a_fine_tune_on_other_domains(home):
    """The evaluate run kind: a fine-tune's final checkpoint on other test splits, at the fine-tune's length."""
    assert run_finetune(tiny_finetune(max_steps=2), paths.run_dir("ft"), MemoryLogger()) == "completed"
    logger = MemoryLogger()
    config = EvaluateConfig(model="run:ft", datasets=["movies", "nyt"])
    assert run_evaluate(config, paths.run_dir("ev"), logger) == "completed"
    scores = {(e["step"], e["name"]): e["value"] for e in logger.events
              if e["type"] == "metric" and e["split"] == "transfer"}
    for step, dataset in enumerate(["movies", "nyt"], start=1):
        assert 0 <= scores[(step, f"accuracy@{dataset}")] <= 1 and scores[(step, f"loss@{dataset}")] > 0
    assert [(e["step"], e["total_steps"]) for e in logger.events if e["type"] == "progress"] == [(0, 2), (1, 2),
                                                                                                (2, 2)]
    # A stop lands between datasets; labels that are not the classifier's fail before anything is scored.
    stopped = MemoryLogger()
    calls = []
    assert run_evaluate(config, paths.run_dir("ev2"), stopped, should_stop=lambda: calls.append(1) or len(calls) > 1) \
        == "cancelled"
    assert {e["name"] for e in stopped.events if e["type"] == "metric"} >= {"accuracy@movies"}
    assert not any(e["name"].endswith("@nyt") for e in stopped.events if e["type"] == "metric")
    refused = MemoryLogger()
    with pytest.raises(ConfigError, match="sources's labels"):
        run_evaluate(EvaluateConfig(model="run:ft", datasets=["movies", "sources"]), paths.run_dir("ev3"), refused)
    assert refused.events == []


def test_example_configs_are_valid():
    files = sorted((paths.REPO_ROOT / "configs").glob("*.yaml"))
    assert len(files) >= 10
    kinds = {load_config(f).kind for f in files}
    assert kinds == {"pretrain", "finetune", "evaluate", "image_pretrain", "image_finetune"}


def test_the_pace_prices_each_phases_work_left_at_its_own_cost():
    clock = PhaseClock()
    assert clock.pace({"train": 10}) == {}  # no step timed yet: no pace, no ETA
    clock.seconds.update(train=10.0, evaluate=4.0)
    clock.units.update(train=20, evaluate=400)  # 0.5 s a step, 10 ms an example
    assert clock.pace({"train": 10, "evaluate": 200, "probes": 3}) == {"train_steps_per_s": 2.0, "eta_s": 7.0}


def test_probes_follow_every_nth_evaluation_from_step_0_and_the_last():
    assert sorted(probe_steps(eval_steps(27, 0, 10), 5)) == [0, 14, 27]  # evaluations 0, 5 and 10
    assert sorted(probe_steps(eval_steps(27, 0, 10), 1)) == [0, 3, 5, 8, 11, 14, 16, 19, 22, 24, 27]
    assert sorted(probe_steps(eval_steps(25, 4, 10, steps_per_epoch=10), 3)) == [0, 10, 20, 25]
    assert sorted(probe_steps(frozenset(), 5)) == [0]


def test_the_validation_sample_is_stratified_and_the_same_for_every_seed(home):
    tokenizer = load_tokenizer(resolve_checkpoint("minilm-l6"))
    tasks = [build_task(tiny_finetune(seed=seed, eval_val_samples=64), 0, "amazon", None, tokenizer)
             for seed in (0, 1)]
    assert tasks[0].validation.ids == tasks[1].validation.ids and len(tasks[0].validation) == 64
    assert tasks[0].train.ids != tasks[1].train.ids  # the training subset is the seed's own
    shares = np.bincount(tasks[0].validation.labels) / 64
    whole = build_task(tiny_finetune(eval_val_samples=0), 0, "amazon", None, tokenizer).validation
    assert len(whole) == 371
    assert np.allclose(shares, np.bincount(whole.labels) / len(whole), atol=0.02)


@pytest.mark.slow
def test_probe_every_thins_the_train_sample_and_probe_series(home, tmp_path):
    def run(name, **overrides):
        logger = MemoryLogger()
        config = tiny_finetune(max_steps=6, eval_every=1, eval_train_samples=16, **overrides)
        assert run_finetune(config, tmp_path / name, logger) == "completed"
        return logger

    def steps(logger, split, name):
        return [e["step"] for e in logger.events if e["type"] == "metric" and e["split"] == split
                and e["name"] == name]

    every, sparse = run("every", probe_every=1, eval_val_samples=64), run("sparse", probe_every=3, eval_val_samples=64)
    assert steps(every, "validation", "accuracy") == steps(sparse, "validation", "accuracy") == list(range(7))
    assert steps(every, "train", "eval_loss") == steps(every, "forgetting", "cka_similarity") == list(range(7))
    assert steps(sparse, "train", "eval_loss") == steps(sparse, "forgetting", "cka_similarity") == [0, 3, 6]


def test_eval_schedule_by_count_or_interval():
    # By count (eval_every 0): ten evaluations spread evenly, the last step always one of them.
    assert sorted(eval_steps(27, 0, 10)) == [3, 5, 8, 11, 14, 16, 19, 22, 24, 27]
    assert sorted(eval_steps(2000, 0, 10)) == list(range(200, 2001, 200))
    assert sorted(eval_steps(3, 0, 10)) == [1, 2, 3]  # fewer steps than evaluations: one after each step
    # An explicit interval wins, with the epoch ends and the last step added.
    assert sorted(eval_steps(25, 4, 10, steps_per_epoch=10)) == [4, 8, 10, 12, 16, 20, 24, 25]
    assert sorted(eval_steps(6, 1000, 10)) == [6]
    assert eval_steps(0, 0, 10) == frozenset()
