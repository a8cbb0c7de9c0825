"""Model families from scratch: each family's `transformers` config at a preset's shape, its tokenizer trained on
the run's own text, and the language model its pretraining objective trains.

| family     | classes (pretraining → classification)                  | objective here | tokenizer            |
|------------|---------------------------------------------------------|----------------|----------------------|
| bert       | BertModel + our MLM head → BertForSequenceClassification | masked LM      | WordPiece            |
| roformer   | RoFormerModel + MLM head → RoFormerForSequenceClassification | masked LM   | WordPiece            |
| roberta    | RobertaModel + MLM head → RobertaForSequenceClassification | masked LM    | byte-level BPE       |
| distilbert | DistilBertModel + MLM head → DistilBert…Classification  | masked LM      | WordPiece            |
| xlnet      | XLNetModel + MLM head → XLNetForSequenceClassification  | masked LM (*)  | SentencePiece-style BPE |
| gpt2       | GPT2LMHeadModel → GPT2ForSequenceClassification         | causal LM      | byte-level BPE       |
| t5         | T5ForConditionalGeneration → T5ForSequenceClassification | span corruption | SentencePiece-style BPE |

RoFormer is BERT with rotary position embeddings in every attention layer (Su et al. 2021) instead of learned
absolute positions: what lets a tiny masked LM learn past word frequencies on a 2-core CPU in minutes (a
position-relative attention pattern is there from the first step; BERT's absolute positions leave a 2-layer
model at the unigram plateau for 6,000 steps: `python -m bench.pretrain_levers_bench`, docs/studies.md).

(*) XLNet's own objective, permutation LM, needs two attention streams and target mappings per example; the
lab trains XLNet's architecture with masked LM instead, and says so (`OBJECTIVE_NOTE`). GPT-2 cannot see to
the right, so masked LM would be meaningless for it; T5 trains with its own objective (spans replaced by
sentinels, the decoder writes them out).

Every tokenizer's ids are a function of the text alone (BPE merges are deterministic here; WordPiece ids are
sorted, see models.train_wordpiece), so a seed reproduces its run. Every pretrained folder reloads with plain
`transformers` (`AutoModel…from_pretrained` on it), and every one fine-tunes with
`AutoModelForSequenceClassification`; the MLM head of the encoder families lives beside in
`mlm_head.safetensors` (models.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    DistilBertConfig,
    GPT2Config,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RoFormerConfig,
    T5Config,
    XLNetConfig,
)

from ptft_core import paths
from ptft_core.config import BUILTIN_CHECKPOINT, FAMILY_OBJECTIVE, PRESETS, ConfigError
from ptft_core.data import load_split
from ptft_core.models import (
    POOLING_ATTR,
    PRESET_SHAPES,
    MaskedLMHead,
    MLMModel,
    default_pooling,
    load_from,
    load_mlm,
    load_tokenizer,
    resolve_checkpoint,
    set_dropout,
    set_labels,
    set_pooling,
    train_wordpiece,
)

MAX_POSITIONS = 512
PRESET_VOCAB = 8000  # a from-scratch classifier's own tokenizer (families other than bert), trained on its task
SENTINELS = 100  # T5's <extra_id_0..99>: one per corrupted span of a block
OBJECTIVE_NOTE = {"xlnet": "XLNet trains with masked LM here, not its permutation LM",
                  "roformer": "BERT with rotary position embeddings"}


# --- tokenizers ----------------------------------------------------------------------------------------------


def _bpe(texts: list[str], vocab_size: int, specials: list[str], byte_level: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=None if byte_level else "<unk>"))
    if byte_level:  # GPT-2 / RoBERTa: any byte sequence has a spelling, no unknown token
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:  # XLNet / T5 use SentencePiece: words marked by a leading "▁"
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        alphabet = []
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                             initial_alphabet=alphabet))
    return tokenizer


def _template(tokenizer, single: str, pair: str, specials: list[str]) -> None:
    from tokenizers import processors

    tokenizer.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(s, tokenizer.token_to_id(s)) for s in specials])


TOKENIZER_RECIPE = "1"  # part of a trained tokenizer's cache key: bump it when _train_tokenizer changes


def train_tokenizer(family: str, texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """The family's kind of tokenizer, trained on `texts`, with the special tokens its model classes expect;
    trained once per lab home for the same family, vocabulary size and texts, and loaded from
    `paths.tokenizer_cache` after that.

    Why a cache: the trainers break ties between equally frequent merges in a process-random order, so a second
    training on the same texts can swap a token at the vocabulary's edge, and two runs with the same config and
    seed would not be the same run (a sweep's rerun of its own trials, a study's seeds). Reusing the first makes
    them so, and saves the training (seconds per from-scratch run). Concurrent trainings each write a folder of
    their own and rename it into place; the first rename wins, and every run loads the winner."""
    import tokenizers

    digest = hashlib.sha256()
    for part in (family, str(vocab_size), TOKENIZER_RECIPE, tokenizers.__version__, *texts):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    folder = paths.tokenizer_cache(digest.hexdigest()[:32])
    if not (folder / "tokenizer.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        _train_tokenizer(family, texts, vocab_size).save_pretrained(staging)
        try:
            staging.rename(folder)
        except OSError:  # another process's tokenizer is in place: use that one
            shutil.rmtree(staging, ignore_errors=True)
    return AutoTokenizer.from_pretrained(str(folder))


def _train_tokenizer(family: str, texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    if family in ("bert", "roformer", "distilbert"):
        return train_wordpiece(texts, vocab_size, MAX_POSITIONS)
    if family == "roberta":
        tok = _bpe(texts, vocab_size, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], byte_level=True)
        _template(tok, "<s> $A </s>", "<s> $A </s> </s> $B </s>", ["<s>", "</s>"])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                                       sep_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                                       model_max_length=MAX_POSITIONS)
    if family == "gpt2":  # no markers around a text: packed blocks separate texts with <|endoftext|>
        tok = _bpe(texts, vocab_size, ["<|endoftext|>", "<pad>"], byte_level=True)
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                       unk_token="<|endoftext|>", pad_token="<pad>", model_max_length=MAX_POSITIONS)
    if family == "xlnet":  # XLNet puts <sep> <cls> at the end and pads on the left (it pools the last token)
        tok = _bpe(texts, vocab_size, ["<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>"],
                   byte_level=False)
        _template(tok, "$A <sep> <cls>", "$A <sep> $B <sep> <cls>", ["<sep>", "<cls>"])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                       sep_token="<sep>", pad_token="<pad>", cls_token="<cls>", mask_token="<mask>",
                                       padding_side="left", model_max_length=MAX_POSITIONS)
    if family == "t5":
        sentinels = [f"<extra_id_{i}>" for i in range(SENTINELS)]
        tok = _bpe(texts, vocab_size, ["<pad>", "</s>", "<unk>", *sentinels], byte_level=False)
        _template(tok, "$A </s>", "$A </s> $B </s>", ["</s>"])
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                                       additional_special_tokens=sentinels, model_max_length=MAX_POSITIONS)
    raise ConfigError(f"family: unknown {family!r}")


# --- configs at a preset's shape -----------------------------------------------------------------------------


def preset_config(family: str, preset: str, tokenizer: PreTrainedTokenizerFast) -> PretrainedConfig:
    """The family's config of a preset's shape (layers, width, heads, feed-forward) sized to `tokenizer`."""
    s = PRESET_SHAPES[preset]
    layers, width, heads, ff = (s["num_hidden_layers"], s["hidden_size"], s["num_attention_heads"],
                                s["intermediate_size"])
    ids = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    if family == "bert":
        return BertConfig(max_position_embeddings=MAX_POSITIONS, **ids, **s)
    if family == "roformer":  # positions are rotations of queries and keys: no position table to learn
        return RoFormerConfig(embedding_size=width, max_position_embeddings=MAX_POSITIONS, **ids, **s)
    if family == "roberta":  # positions start after the padding index, as in RoBERTa's own checkpoints
        return RobertaConfig(max_position_embeddings=MAX_POSITIONS + 2, type_vocab_size=1,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **ids, **s)
    if family == "distilbert":
        return DistilBertConfig(n_layers=layers, dim=width, n_heads=heads, hidden_dim=ff,
                                max_position_embeddings=MAX_POSITIONS, **ids)
    if family == "gpt2":
        return GPT2Config(n_layer=layers, n_embd=width, n_head=heads, n_inner=ff, n_positions=MAX_POSITIONS,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **ids)
    if family == "xlnet":
        return XLNetConfig(n_layer=layers, d_model=width, n_head=heads, d_inner=ff,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **ids)
    if family == "t5":
        return T5Config(num_layers=layers, d_model=width, num_heads=heads, d_kv=width // heads, d_ff=ff,
                        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id, **ids)
    raise ConfigError(f"family: unknown {family!r}")


# --- the language models the objectives train ----------------------------------------------------------------


class WholeLM(nn.Module):
    """A `transformers` model that computes its own LM loss from `labels` (causal LM shifts them; T5's decoder
    reads them shifted right), behind the same call as `MLMModel`: `model(inputs, labels, mask) -> loss`."""

    head = None  # nothing saved beside the model: its LM head is part of it (tied to the embeddings)

    def __init__(self, lm: PreTrainedModel):
        super().__init__()
        self.lm = lm

    @property
    def saved(self) -> PreTrainedModel:
        return self.lm

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss.float()


LanguageModel = MLMModel | WholeLM


def scratch_lm(family: str, preset: str, tokenizer: PreTrainedTokenizerFast) -> LanguageModel:
    config = preset_config(family, preset, tokenizer)
    objective = FAMILY_OBJECTIVE[family]
    if objective == "mlm":
        encoder = AutoModel.from_config(config)
        return MLMModel(encoder, MaskedLMHead(encoder.config))
    auto = AutoModelForCausalLM if objective == "clm" else AutoModelForSeq2SeqLM
    return WholeLM(auto.from_config(config))


def checkpoint_objective(path: str) -> str:
    """The objective a checkpoint continues with: masked LM for an encoder (with or without our MLM head),
    causal LM for a decoder, span corruption for T5."""
    file = Path(path) / "config.json"
    model_type = (json.loads(file.read_text(encoding="utf-8")) if file.is_file()
                  else AutoConfig.from_pretrained(path).to_dict()).get("model_type", "")
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if model_type in ("t5", "mt5"):
        return "span"
    if model_type == "xlnet" or model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "mlm"
    return "clm" if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES else "mlm"


def load_lm(spec: str) -> tuple[LanguageModel, PreTrainedTokenizerFast, str]:
    """A checkpoint as the language model of its objective: (model, tokenizer, objective)."""
    path = resolve_checkpoint(spec)
    objective = checkpoint_objective(path)
    if objective == "mlm":
        model, tokenizer = load_mlm(spec)
    else:
        auto = AutoModelForCausalLM if objective == "clm" else AutoModelForSeq2SeqLM
        lm = load_from(auto.from_pretrained, spec, path, dtype=torch.float32)  # float32 master weights
        tokenizer = load_from(AutoTokenizer.from_pretrained, spec, path)
        if tokenizer.pad_token_id is None:  # GPT-2's own tokenizer has none; packed blocks never pad, batches may
            tokenizer.pad_token = tokenizer.eos_token
        model = WholeLM(lm)
    # Further pretraining keeps how its checkpoint is read: MiniLM further pretrained is still read by its mean
    # (`pooling: auto` on its checkpoints), not by a [CLS] it was never trained for.
    config = model.saved.config
    setattr(config, POOLING_ATTR, default_pooling(spec, path, config))
    return model, tokenizer, objective


# --- classifiers -----------------------------------------------------------------------------------------------


def preset_parts(preset: str, family: str, dataset: str | None) -> tuple[PretrainedConfig, PreTrainedTokenizerFast]:
    """The config and tokenizer of a randomly initialised classifier: a BERT or RoFormer preset reads with the
    built-in (bert-base-uncased) WordPiece tokenizer; another family has no built-in tokenizer of its kind, so one
    is trained on the task's training text."""
    if family in ("bert", "roformer"):
        tokenizer = load_tokenizer(BUILTIN_CHECKPOINT)
    elif dataset is None:
        raise ConfigError(f"family: a {family} preset trains its tokenizer on a dataset; none given")
    else:

        tokenizer = train_tokenizer(family, load_split(dataset, "train")["text"].tolist(), PRESET_VOCAB)
    return preset_config(family, preset, tokenizer), tokenizer


def load_classifier(base: str, labels: list[str], scratch: bool = False, dropout: float | None = None,
                    family: str = "bert", dataset: str | None = None,
                    pooling: str = "auto") -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A sequence classifier on `base` (any model `AutoModelForSequenceClassification` supports: encoders, GPT-2
    style decoders pooling their last token, T5).

    A preset base is a randomly initialised model of `family` at that shape (preset_parts); `scratch` keeps a
    checkpoint's architecture and tokenizer but re-initialises every weight. `pooling` (FinetuneConfig.pooling;
    auto: models.default_pooling) is what the head reads; the model's config records it.
    """
    if base in PRESETS:
        config, tokenizer = preset_parts(base, family, dataset)
        path, scratch = None, True
    else:
        path = resolve_checkpoint(base)
        tokenizer = load_from(AutoTokenizer.from_pretrained, base, path)
        config = load_from(AutoConfig.from_pretrained, base, path)
    if tokenizer.pad_token_id is None:  # GPT-2's own tokenizer: batches pad with end-of-text, pooling skips it
        tokenizer.pad_token = tokenizer.eos_token
    config.pad_token_id = tokenizer.pad_token_id  # where a decoder finds each text's last token
    set_labels(config, labels)
    if dropout is not None:
        set_dropout(config, dropout)
    pooling = default_pooling(base, path, config) if pooling == "auto" else pooling
    if scratch:
        model = AutoModelForSequenceClassification.from_config(config)
        set_pooling(model, pooling)
        return model, tokenizer
    # A fine-tuned base may carry a head for another label count: that head is re-initialised, not an error.
    # float32 master weights whatever the file holds: transformers loads a fp16/bf16 checkpoint in its own dtype,
    # and AdamW updates on half-precision weights stall (bf16 autocast still computes in bf16 on CUDA).
    model = load_from(AutoModelForSequenceClassification.from_pretrained, base, path, config=config,
                      ignore_mismatched_sizes=True, dtype=torch.float32)
    set_pooling(model, pooling)
    return model, tokenizer
