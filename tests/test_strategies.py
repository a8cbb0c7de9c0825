"""Fine-tuning strategies: what trains, in which order, at which learning rate, for any BERT-like encoder."""

import pytest
import torch
from tiny_runs import tiny_finetune
from transformers import AutoModelForSequenceClassification, DistilBertConfig, RobertaConfig
from transformers.modeling_utils import PreTrainedModel

from ptft_core.config import ConfigError, OptimConfig
from ptft_core.families import load_classifier
from ptft_core.journal import MemoryLogger
from ptft_core.training import run_finetune
from ptft_core.training.checkpoint import load_weights
from ptft_core.training.common import build_optimizer, build_scheduler, seed_everything
from ptft_core.training.strategies import apply_strategy, layer_groups, layer_stacks, strategy_param_groups

LABELS = ["negative", "positive"]


def starting_and_final(config, tmp_path) -> tuple[dict, dict]:
    """The weights a tiny-preset run started from (same seed, same init) and its final checkpoint's weights."""
    assert run_finetune(config, tmp_path / "run", MemoryLogger()) == "completed"
    seed_everything(config.seed)
    start, _ = load_classifier(config.base, LABELS)
    final, _ = load_classifier(config.base, LABELS)
    load_weights(final, tmp_path / "run" / "checkpoints" / "final")
    return start.state_dict(), final.state_dict()


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "frozen_prefixes"), [
    ("freeze_bottom", ("bert.embeddings.", "bert.encoder.layer.0.")),
    ("linear_probe", ("bert.",)),
])
def test_frozen_parameters_do_not_move_while_the_rest_trains(home, tmp_path, strategy, frozen_prefixes):
    start, final = starting_and_final(tiny_finetune(strategy=strategy, freeze_layers=1), tmp_path)
    for name, tensor in start.items():
        if name.startswith(frozen_prefixes):
            assert torch.equal(tensor, final[name]), f"{name} is frozen but changed"
    assert not torch.equal(start["classifier.weight"], final["classifier.weight"])
    if strategy == "freeze_bottom":
        assert not torch.equal(start["bert.encoder.layer.1.output.dense.weight"],
                               final["bert.encoder.layer.1.output.dense.weight"])


def test_gradual_unfreezing_opens_groups_top_down(home):
    model, _ = load_classifier("tiny", LABELS)
    config = tiny_finetune(strategy="gradual_unfreeze")
    opened = []
    for stage in range(5):
        apply_strategy(model, config, stage)
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        opened.append(trainable - set().union(*opened) if opened else trainable)
    assert opened[0] == {n for n, _ in model.named_parameters() if n.startswith(("classifier.", "bert.pooler."))}
    assert opened[1] == {n for n, _ in model.named_parameters() if n.startswith("bert.encoder.layer.1.")}
    assert opened[2] == {n for n, _ in model.named_parameters() if n.startswith("bert.encoder.layer.0.")}
    assert opened[3] == {n for n, _ in model.named_parameters() if n.startswith("bert.embeddings.")}
    assert opened[4] == set()


@pytest.mark.slow
def test_gradual_unfreezing_in_a_run_logs_growing_trainable_counts(home, tmp_path):
    logger = MemoryLogger()
    run_finetune(tiny_finetune(strategy="gradual_unfreeze", unfreeze_every_steps=2), tmp_path, logger)
    counts = [(e["step"], e["value"]) for e in logger.events
              if e["type"] == "metric" and e["name"] == "trainable_params"]
    assert [step for step, _ in counts] == [0, 2, 4]
    assert counts[0][1] < counts[1][1] < counts[2][1]


def test_discriminative_lrs_decay_exactly_per_layer(home):
    model, _ = load_classifier("tiny", LABELS)
    config = tiny_finetune(strategy="discriminative", layer_decay=0.5,
                           optim=OptimConfig(lr=1e-3, schedule="constant", warmup_ratio=0.0))
    optimizer = build_optimizer(strategy_param_groups(model, config), config.optim)
    build_scheduler(optimizer, config.optim, total_steps=10)
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    expected = {"bert.embeddings.": 1e-3 * 0.5 ** 3, "bert.encoder.layer.0.": 1e-3 * 0.5 ** 2,
                "bert.encoder.layer.1.": 1e-3 * 0.5, "bert.pooler.": 1e-3, "classifier.": 1e-3}
    for name, p in model.named_parameters():
        prefix = next(k for k in expected if name.startswith(k))
        assert lr_of[id(p)] == pytest.approx(expected[prefix], rel=1e-12), name
    # No weight decay on biases and LayerNorm weights.
    for group in optimizer.param_groups:
        assert all(p.ndim >= 2 for p in group["params"]) == (group["weight_decay"] > 0)


@pytest.mark.parametrize("config", [
    DistilBertConfig(vocab_size=100, dim=32, n_layers=3, n_heads=2, hidden_dim=64),
    RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                  intermediate_size=64),
])
def test_layer_stack_is_found_for_other_encoders(config):
    model: PreTrainedModel = AutoModelForSequenceClassification.from_config(config)
    assert [len(stack) for stack in layer_stacks(model)] == [3]
    groups = layer_groups(model)
    assert len(groups) == 5
    assert all("embeddings" in name for name, _ in groups[0])
    assert all(name.startswith(("classifier", "pre_classifier")) for name, _ in groups[-1])
    apply_strategy(model, tiny_finetune(strategy="freeze_bottom", freeze_layers=2))
    trainable = [g for g in groups if all(p.requires_grad for _, p in g)]
    assert trainable == groups[3:]


def test_freezing_more_layers_than_the_model_has_is_a_config_error(home):
    model, _ = load_classifier("tiny", LABELS)
    with pytest.raises(ConfigError, match="freeze_layers"):
        apply_strategy(model, tiny_finetune(strategy="freeze_bottom", freeze_layers=3))
