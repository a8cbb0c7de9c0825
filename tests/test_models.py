"""Models: WordPiece training, checkpoint specs, the classifier builder and the masked-positions MLM head."""

import os
import subprocess
import sys

import pytest
import tiny_runs  # noqa: F401 - caps torch threads
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from ptft_core import paths
from ptft_core.families import load_classifier, scratch_lm
from ptft_core.models import (
    CheckpointError,
    MaskedLMHead,
    MLMModel,
    classifier_sharing_encoder,
    load_mlm_head,
    load_tokenizer,
    resolve_checkpoint,
    save_mlm_head,
    train_wordpiece,
)
from ptft_core.specs import parent_run

TEXTS = ["The cat sat on the mat.", "A dog barked at the cat!", "Cats and dogs, dogs and cats."] * 20


def test_wordpiece_round_trips_through_save_pretrained(tmp_path):
    tokenizer = train_wordpiece(TEXTS, vocab_size=300)
    assert tokenizer.convert_ids_to_tokens(list(range(5))) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    encoded = tokenizer("THE Cat sat")["input_ids"]
    assert encoded[0] == tokenizer.cls_token_id and encoded[-1] == tokenizer.sep_token_id
    assert encoded == tokenizer("the cat sat")["input_ids"]  # lowercasing normaliser
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded("THE Cat sat")["input_ids"] == encoded
    assert reloaded.mask_token_id == 4 and reloaded.pad_token_id == 0


def test_resolve_builtin(home):
    assert resolve_checkpoint("minilm-l6") == str(paths.models_dir() / "minilm-l6")


def test_resolve_builtin_not_prepared(empty_home):
    with pytest.raises(CheckpointError, match="run python -m ptft_core data prepare"):
        resolve_checkpoint("minilm-l6")


def test_resolve_run_specs_and_lineage(empty_home):
    step = paths.run_dir("abc") / "checkpoints" / "step-3"
    step.mkdir(parents=True)
    (step / "config.json").write_text("{}")
    assert resolve_checkpoint("run:abc/step-3") == str(step)
    with pytest.raises(CheckpointError, match="available: step-3"):
        resolve_checkpoint("run:abc")  # no final yet
    with pytest.raises(CheckpointError, match="no checkpoint 'step-9'"):
        resolve_checkpoint("run:abc/step-9")
    assert parent_run("run:abc/step-3") == parent_run("run:abc") == "abc"
    assert parent_run("minilm-l6") is None


def test_resolve_folders(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        resolve_checkpoint(str(tmp_path / "model"))
    (tmp_path / "model" / "config.json").write_text("{}")
    assert resolve_checkpoint(str(tmp_path / "model")) == str(tmp_path / "model")
    with pytest.raises(CheckpointError, match="no such folder"):
        resolve_checkpoint("./no/such/model")
    assert resolve_checkpoint("bert-base-uncased") == "bert-base-uncased"  # a hub id, loaded later


def test_bad_hub_id_is_a_clear_error():
    with pytest.raises(CheckpointError, match="could not load 'not a repo id' from the Hugging Face hub"):
        load_tokenizer("not a repo id")


@pytest.mark.slow
def test_offline_hub_id_is_one_clear_line():
    code = ("from ptft_core.models import load_tokenizer, CheckpointError\n"
            "try:\n    load_tokenizer('someone/some-bert')\n"
            "except CheckpointError as exc:\n    print('ERROR', exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=paths.REPO_ROOT)
    assert "ERROR could not load 'someone/some-bert' from the Hugging Face hub (no network?)" in out.stdout


def test_mlm_head_scores_only_masked_positions_and_is_tied(tmp_path):
    torch.manual_seed(0)
    tokenizer = train_wordpiece(TEXTS, vocab_size=300)
    model = scratch_lm("bert", "tiny", tokenizer)
    ids = torch.randint(5, len(tokenizer), (2, 12))
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[1, 7], labels[1, 2] = 11, 12, 13
    model.eval()
    loss = model(ids, labels)

    # The same loss as projecting every position and ignoring the unmasked ones (BertForMaskedLM's way).
    hidden = model.encoder(input_ids=ids).last_hidden_state
    full = model.head(hidden, model.encoder.get_input_embeddings().weight)
    assert full.shape == (2, 12, len(tokenizer))
    assert loss.item() == pytest.approx(F.cross_entropy(full.view(-1, len(tokenizer)), labels.view(-1)).item(),
                                        rel=1e-5)
    # Tied: the decoder is the input embedding matrix, so the MLM loss trains the embeddings of predicted tokens.
    loss.backward()
    assert model.encoder.get_input_embeddings().weight.grad[11].abs().sum() > 0
    assert "decoder" not in "".join(model.head.state_dict())

    save_mlm_head(model.head, tmp_path)
    reloaded = load_mlm_head(str(tmp_path), model.encoder)
    assert torch.equal(reloaded.bias, model.head.bias) and torch.equal(reloaded.dense.weight, model.head.dense.weight)
    assert load_mlm_head(str(tmp_path / "elsewhere"), model.encoder) is None
    assert isinstance(MLMModel(model.encoder, MaskedLMHead(model.encoder.config)).head, MaskedLMHead)


def test_classifier_bases(home):
    preset, tokenizer = load_classifier("tiny", ["neg", "pos"])
    assert preset.config.num_hidden_layers == 2 and preset.config.hidden_size == 128
    assert preset.config.vocab_size == len(tokenizer) == 30522  # bert-base-uncased vocabulary
    assert preset.config.id2label == {0: "neg", 1: "pos"}
    assert preset.config._attn_implementation == "sdpa"

    pretrained, _ = load_classifier("minilm-l6", ["a", "b", "c"], dropout=0.25)
    scratch, _ = load_classifier("minilm-l6", ["a", "b", "c"], scratch=True)
    assert pretrained.num_labels == 3 and pretrained.config.num_hidden_layers == 6
    assert pretrained.config.hidden_dropout_prob == pretrained.config.attention_probs_dropout_prob == 0.25
    assert pretrained.dropout.p == 0.25  # the classifier's dropout too
    word = "bert.embeddings.word_embeddings.weight"
    assert not torch.equal(pretrained.state_dict()[word], scratch.state_dict()[word])

    second = classifier_sharing_encoder(pretrained, ["x", "y"])
    assert second.bert is pretrained.bert and second.num_labels == 2
    assert second.classifier is not pretrained.classifier
