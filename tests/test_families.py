"""Every model family the guides name, offline: pretraining with its objective, checkpoints that reload with
plain `transformers`, fine-tuning strategies that find the family's layer groups, and classifiers that learn."""

import hashlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from tiny_runs import tiny_finetune, tiny_pretrain
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

from ptft_core import paths
from ptft_core.config import FAMILIES, FAMILY_OBJECTIVE, ConfigError, OptimConfig, PretrainConfig
from ptft_core.data import load_texts
from ptft_core.families import load_classifier, train_tokenizer
from ptft_core.journal import MemoryLogger
from ptft_core.training import run_finetune, run_pretrain
from ptft_core.training.lm_data import SPAN_LENGTH, block_markers, span_corrupt, text_blocks
from ptft_core.training.strategies import apply_strategy, layer_groups, strategy_param_groups

LABELS = ["negative", "positive"]
LM_CLASS = {"mlm": AutoModel, "clm": AutoModelForCausalLM, "span": AutoModelForSeq2SeqLM}


def test_each_family_has_one_objective_and_refuses_another():
    assert PretrainConfig(family="gpt2").objective == "clm" and PretrainConfig(family="t5").objective == "span"
    assert PretrainConfig(model="minilm-l6").objective == "auto"  # a checkpoint's own, read when it loads
    with pytest.raises(ConfigError, match="objective: bert trains with mlm here, not clm"):
        PretrainConfig(family="bert", objective="clm")
    with pytest.raises(ConfigError, match="freeze_encoder: only for masked LM"):
        PretrainConfig(family="gpt2", freeze_encoder=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizers_frame_texts_as_their_family_does(home, family):
    tokenizer = train_tokenizer(family, load_texts(["news"], "train")[:300], 500)
    head, tail = block_markers(tokenizer)
    expected = {"bert": (["[CLS]"], ["[SEP]"]), "roformer": (["[CLS]"], ["[SEP]"]),
                "distilbert": (["[CLS]"], ["[SEP]"]), "roberta": (["<s>"], ["</s>"]),
                "xlnet": ([], ["<sep>", "<cls>"]), "t5": ([], ["</s>"]), "gpt2": ([], [])}[family]
    assert (tokenizer.convert_ids_to_tokens(head), tokenizer.convert_ids_to_tokens(tail)) == expected
    blocks = text_blocks(tokenizer, ["one short text", "and another one"] * 20, 16)
    assert blocks.shape[1] == 16 and (blocks != tokenizer.pad_token_id).all()  # packed: no padding
    if family == "gpt2":  # texts are separated by end-of-text instead
        assert (blocks == tokenizer.eos_token_id).any()
    assert tokenizer.padding_side == ("left" if family == "xlnet" else "right")


@pytest.mark.slow
def test_a_tokenizer_is_trained_once_per_home_and_every_process_gets_the_same(home):
    """Two processes train the same tokenizer at once (a study's seeds starting together): the first rename wins,
    both use its vocabulary, no staging folder is left; a third call in this process loads it; another
    vocabulary size is another tokenizer."""
    script = ("import hashlib, json; from ptft_core.data import load_texts; "
              "from ptft_core.families import train_tokenizer; "
              "t = train_tokenizer('bert', load_texts(['news'], 'train')[:400], 700); "
              "print(hashlib.sha256(json.dumps(sorted(t.get_vocab().items())).encode()).hexdigest())")
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=paths.REPO_ROOT, env=os.environ) for _ in range(2)]
    digests = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs) and digests[0] == digests[1] != ""
    cache = home / "cache" / "tokenizers"
    assert len(list(cache.iterdir())) == 1, list(cache.iterdir())  # one folder, no staging left behind
    texts = load_texts(["news"], "train")[:400]
    again = train_tokenizer("bert", texts, 700)
    assert hashlib.sha256(json.dumps(sorted(again.get_vocab().items())).encode()).hexdigest() == digests[0]
    assert len(train_tokenizer("bert", texts, 600)) <= 600 and len(list(cache.iterdir())) == 2


def test_span_corruption_replaces_spans_by_sentinels_and_the_labels_spell_them_out():
    blocks = torch.arange(100, 100 + 2 * 21).view(2, 21)
    blocks[:, -1] = 1  # </s>
    sentinels = list(range(50, 60))
    inputs, labels = span_corrupt(blocks, head=0, tail=1, noise=0.3, sentinels=sentinels,
                                  generator=torch.Generator().manual_seed(0))
    k = round(20 * 0.3 / SPAN_LENGTH)
    assert inputs.shape == (2, 21 - k * (SPAN_LENGTH - 1)) and labels.shape == (2, k * (SPAN_LENGTH + 1) + 1)
    for row, inp, lab in zip(blocks.tolist(), inputs.tolist(), labels.tolist(), strict=True):
        assert inp[-1] == 1 and lab[-1] == 1
        assert [t for t in inp if t in sentinels] == sentinels[:k]  # one sentinel per span, in order
        rebuilt, pieces = [], {lab[i]: lab[i + 1:i + 1 + SPAN_LENGTH] for i in range(0, len(lab) - 1, SPAN_LENGTH + 1)}
        for t in inp:
            rebuilt += pieces.get(t, [t])
        assert rebuilt == row  # the inputs with every sentinel's span put back are the block


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_pretraining_loss_falls_and_the_checkpoint_reloads_with_plain_transformers(home, tmp_path, family):
    config = tiny_pretrain(family=family, max_steps=40, eval_every=40, block_size=64, batch_size=16,
                           vocab_size=2000, optim=OptimConfig(lr=2e-3, warmup_ratio=0.05))
    logger = MemoryLogger()
    assert run_pretrain(config, tmp_path, logger) == "completed"
    start, end = logger.values("loss", "validation")
    assert end < start - 0.2, f"{family}: validation loss {start:.2f} -> {end:.2f}"  # far beyond 0 noise: fixed batches
    assert math.isclose(logger.values("perplexity", "validation")[-1], math.exp(end), rel_tol=1e-6)
    notes = [e["message"] for e in logger.events if e["type"] == "note"]
    assert any({"mlm": "masked LM", "clm": "causal LM", "span": "span corruption"}[FAMILY_OBJECTIVE[family]] in n
               for n in notes)
    folder = tmp_path / "checkpoints" / "final"
    lm = LM_CLASS[FAMILY_OBJECTIVE[family]].from_pretrained(folder)
    assert lm.config.model_type == family
    classifier = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    assert classifier.config.model_type == family


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_strategies_find_the_layer_groups_of_every_family(home, family):
    torch.manual_seed(0)
    model, tokenizer = load_classifier("tiny", LABELS, family=family, dataset="amazon")
    groups = layer_groups(model)
    layers = 4 if family == "t5" else 2  # T5: the encoder's blocks, then the decoder's
    assert len(groups) == layers + 2 and all(groups)
    embedding = model.get_input_embeddings().weight
    assert any(p is embedding for _, p in groups[0])
    head = {name for name, _ in groups[-1]}
    assert head >= {name for name, _ in model.named_parameters()
                    if not name.startswith(model.base_model_prefix + ".")}

    # freeze_bottom: the embeddings and the bottom layer stay exactly as they were; every open group moves.
    config = tiny_finetune(strategy="freeze_bottom", freeze_layers=1)
    apply_strategy(model, config)
    before = [[p.detach().clone() for _, p in group] for group in groups]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = tokenizer(["a fine film", "a dull, bad film"], padding=True, return_tensors="pt")
    model(**batch, labels=torch.tensor([1, 0])).loss.backward()
    optimizer.step()
    moved = [any(not torch.equal(p, b) for (_, p), b in zip(group, old, strict=True))
             for group, old in zip(groups, before, strict=True)]
    assert moved == [False, False] + [True] * layers, moved

    # discriminative: each group's rate is the one above it times the decay.
    decay = 0.5
    param_groups = strategy_param_groups(model, tiny_finetune(strategy="discriminative", layer_decay=decay))
    rate = {id(p): g["lr"] for g in param_groups for p in g["params"]}
    lr = tiny_finetune().optim.lr
    for depth, group in enumerate(reversed(groups)):
        assert all(rate[id(p)] == pytest.approx(lr * decay ** depth) for _, p in group), depth


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_a_short_finetune_from_scratch_beats_chance_on_movies(home, tmp_path, family):
    config = tiny_finetune(family=family, dataset="movies", max_length=64, batch_size=32, epochs=3, max_steps=0,
                           eval_every=0, eval_count=2, optim=OptimConfig(lr=1e-3, warmup_ratio=0.1))
    logger = MemoryLogger()
    assert run_finetune(config, tmp_path, logger) == "completed"
    from ptft_core.data import load_split

    labels = load_split("movies", "test")["label"].to_numpy()
    majority = np.bincount(labels).max() / len(labels)
    accuracy = logger.values("accuracy", "test")[-1]
    # One-sided binomial z-test against always answering the majority class, at about p < 0.001.
    assert accuracy > majority + 3.1 * math.sqrt(majority * (1 - majority) / len(labels)), (accuracy, majority)


@pytest.mark.slow
def test_a_causal_checkpoint_is_pretrained_further_and_fine_tuned_with_a_causal_forgetting_probe(home, tmp_path):
    gpt = tiny_pretrain(family="gpt2", max_steps=4)
    assert run_pretrain(gpt, tmp_path / "gpt", MemoryLogger()) == "completed"
    folder = tmp_path / "gpt" / "checkpoints" / "final"

    further = tiny_pretrain(model=str(folder), corpus=["wiki"], max_steps=4)
    assert further.objective == "auto"  # the checkpoint's own, found when it loads
    logger = MemoryLogger()
    assert run_pretrain(further, tmp_path / "further", logger) == "completed"
    assert any("GPT2LMHeadModel, causal LM" in e["message"] for e in logger.events if e["type"] == "note")
    assert len(logger.values("loss", "validation")) >= 2 and logger.values("tokens_per_s", "train")
    with pytest.raises(ConfigError, match="continues with clm"):
        run_pretrain(tiny_pretrain(model=str(folder), objective="mlm"), tmp_path / "wrong", MemoryLogger())

    logger = MemoryLogger()
    assert run_finetune(tiny_finetune(base=str(folder), probe_mlm=True), tmp_path / "ft", logger) == "completed"
    probe = logger.values("general_clm_loss", "forgetting")
    assert len(probe) == 2 and all(math.isfinite(v) for v in probe)  # before the first step and at the end
    assert not logger.values("general_mlm_loss", "forgetting")
