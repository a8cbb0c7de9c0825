"""Models: preset shapes, WordPiece training, checkpoint resolution, label and dropout settings, the masked-LM
wrapper (the families built on them: families.py).

Everything a run trains is a Hugging Face model, so a user can load any checkpoint of ours with `transformers`
directly. The one piece of our own is the MLM head: `MaskedLMHead` projects only the masked positions onto the
vocabulary, which is what makes CPU pretraining affordable (the full-vocabulary projection of every position
dominates the cost of a small BERT). Its weights live beside the encoder in `mlm_head.safetensors`.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from ptft_core import hf_pooling, paths
from ptft_core.config import BUILTIN_CHECKPOINT, CPU_AUTO_BF16, PRESETS, ConfigError
from ptft_core.dropout import CheapDropout
from ptft_core.hf_pooling import MEAN_POOLED, POOLING_ATTR
from ptft_core.layer_norm import Bf16LayerNorm
from ptft_core.rundir import RunDir
from ptft_core.specs import run_reference

PRESET_SHAPES: dict[str, dict[str, int]] = {
    "tiny": {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 512},
    "mini": {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024},
    "small": {"num_hidden_layers": 4, "hidden_size": 512, "num_attention_heads": 8, "intermediate_size": 2048},
    "base": {"num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072},
}
assert set(PRESET_SHAPES) == set(PRESETS)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MLM_HEAD_FILE = "mlm_head.safetensors"
# Dropout lives under different names in BERT/RoBERTa (first three) and DistilBERT (last three).
DROPOUT_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout",
                  "dropout", "attention_dropout", "seq_classif_dropout")


class CheckpointError(ConfigError):
    """A model spec that cannot be resolved or loaded; a user error (one line in the CLI, not a traceback)."""


# --- devices -------------------------------------------------------------------------------------------------


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} asked for, but this machine has no CUDA GPU")
    return torch.device(name)


# The dtype a run computes in, set once per run by `compute_precision` (a context, so runs one after the other
# in one process, as in the tests, each keep their own); None: bf16 on CUDA, float32 on CPU.
_COMPUTE_DTYPE: ContextVar[torch.dtype | None] = ContextVar("compute_dtype", default=None)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or AMX
    (elsewhere torch emulates bf16 on a CPU, several times slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The compute dtype of a run's `precision` setting: float32; bf16 (as asked, native or not); auto: bf16
    on a device that computes it natively (a CPU only with CPU_AUTO_BF16), float32 elsewhere. Weights stay
    float32 in every case (autocast computes matmuls in bf16; AdamW updates float32 master weights)."""
    if precision == "float32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    native = native_bf16(device) and (device.type == "cuda" or CPU_AUTO_BF16)
    return torch.bfloat16 if native else torch.float32


@contextlib.contextmanager
def compute_precision(dtype: torch.dtype) -> Iterator[None]:
    token = _COMPUTE_DTYPE.set(dtype)
    try:
        yield
    finally:
        _COMPUTE_DTYPE.reset(token)


def compute_dtype() -> torch.dtype:
    """The dtype the current run computes its matmuls in (float32 outside a run on a CPU)."""
    dtype = _COMPUTE_DTYPE.get()
    return torch.float32 if dtype is None else dtype


CPU_BF16_TRAINING_ATTENTION = ("MATH",)  # SDPBackend names; bench.attention_bench sets others to compare
CPU_CHEAP_DROPOUT = True  # dropout.CheapDropout in CPU training forwards; bench.dropout_bench sets False to compare
CPU_BF16_LAYER_NORM = True  # layer_norm.Bf16LayerNorm in CPU bf16 training forwards; bench.peer_bench compares


def autocast(device: torch.device, training: bool = False) -> contextlib.AbstractContextManager:
    """bf16 autocast where the run computes in bf16 (see compute_precision; no loss scaling needed for bf16),
    nothing in float32.

    `training`: a forward that will be backpropagated. On a CPU its dropout then draws a quarter of the random
    numbers (dropout.py: the masks were 17 % of a MiniLM fine-tuning step), and in bf16 its attention takes the
    math kernel: the flash kernel's CPU backward cost about 6x its forward there (26.7 ms against 4.3 ms a call on
    MiniLM's batches of 32), and the math kernel made the whole fine-tuning step 1.42-1.54x faster at the same
    accuracy (`python -m bench.attention_bench`, docs/benchmarks.md section 6). Evaluation forwards keep PyTorch's
    own choices."""
    dtype = _COMPUTE_DTYPE.get()
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    stack = contextlib.ExitStack()
    if dtype != torch.float32:
        stack.enter_context(torch.autocast(device.type, dtype=dtype))
    if training and device.type == "cpu":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        if CPU_CHEAP_DROPOUT:
            stack.enter_context(CheapDropout())
        if dtype != torch.float32:
            stack.enter_context(sdpa_kernel([getattr(SDPBackend, name) for name in CPU_BF16_TRAINING_ATTENTION]))
        if dtype == torch.bfloat16 and CPU_BF16_LAYER_NORM:
            stack.enter_context(Bf16LayerNorm())
    return stack


# --- tokenizers and configs ----------------------------------------------------------------------------------


def train_wordpiece(texts: list[str], vocab_size: int, model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """A lowercasing BERT WordPiece tokenizer trained on `texts`, wrapped so `save_pretrained` and
    `AutoTokenizer.from_pretrained` round-trip it."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
    from tokenizers.models import WordPiece

    tokenizer = Tokenizer(WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    tokenizer.train_from_iterator(texts, trainer)
    # The trainer breaks ties between equally frequent merges in a process-random order, so the same texts give
    # the same tokens under shuffled ids. Sorted ids make a seed reproduce its run (a tie at the very edge of
    # the vocabulary can still swap one rare token); WordPiece matching does not depend on the order.
    learned = sorted(set(tokenizer.get_vocab()) - set(SPECIAL_TOKENS))
    tokenizer.model = WordPiece({token: i for i, token in enumerate(SPECIAL_TOKENS + learned)}, unk_token="[UNK]")
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=model_max_length,
    )


# --- resolving checkpoint specs -------------------------------------------------------------------------------


def resolve_checkpoint(spec: str) -> str:
    """Where a model spec's files are: a local folder, or a hub id left for `from_pretrained`.

    `minilm-l6` is the built-in checkpoint; `run:<id>` is a run's final checkpoint and `run:<id>/step-<N>` one of
    its step checkpoints; an existing folder is itself; anything else is taken for a Hugging Face hub id.
    """
    if spec == BUILTIN_CHECKPOINT:
        path = paths.models_dir() / BUILTIN_CHECKPOINT
        if not (path / "config.json").is_file():
            raise CheckpointError(f"the built-in checkpoint {spec!r} is not prepared: "
                                  "run python -m ptft_core data prepare")
        return str(path)
    reference = run_reference(spec)
    if reference is not None:
        run_id, name = reference
        folder = RunDir(paths.run_dir(run_id))
        if not folder.has_checkpoint(name):
            available = folder.saved_checkpoints()
            raise CheckpointError(f"{spec}: no checkpoint {name!r} in run {run_id!r}; available: "
                                  f"{', '.join(available) or 'none (is the run finished?)'}")
        return str(folder.checkpoint(name))
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{spec}: this folder holds no Hugging Face model (no config.json)")
        return str(path.resolve())
    if spec.startswith((".", "/", "~")):
        raise CheckpointError(f"{spec}: no such folder")
    return spec


def load_from(loader, spec: str, path: str, **kwargs):
    """`loader(path)`, with hub failures (offline, unknown id) turned into one clear user error."""
    if Path(path).is_dir():
        return loader(path, **kwargs)
    try:
        return loader(path, **kwargs)
    except (OSError, ValueError) as exc:  # offline / unknown repo are OSErrors; a malformed id is a ValueError
        raise CheckpointError(f"could not load {spec!r} from the Hugging Face hub (no network?): "
                              f"{str(exc).splitlines()[0]}") from exc


def load_tokenizer(spec: str) -> PreTrainedTokenizerFast:
    return load_from(AutoTokenizer.from_pretrained, spec, resolve_checkpoint(spec))


# --- classification ------------------------------------------------------------------------------------------


def set_dropout(config, dropout: float) -> None:
    for name in DROPOUT_FIELDS:
        if hasattr(config, name):
            setattr(config, name, dropout)


def set_labels(config, labels: list[str]) -> None:
    """Label count and names, so a saved classifier reads well in `transformers` pipelines too."""
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: i for i, name in enumerate(labels)}


# What a classifier's head reads (FinetuneConfig.pooling): "cls", the architecture's own pooling (BERT's pooler
# over [CLS], the [CLS] head of RoBERTa and RoFormer, GPT-2's last token); "mean", the mean of the encoder's last
# hidden states over the text's tokens, the sentence embedding sentence-transformers models (MiniLM) were
# trained to produce (hf_pooling.py, the file an exported model carries). Stored in the model's config
# (POOLING_ATTR), so a saved fine-tune reloads with its pooling.
MEAN_POOLABLE = frozenset(MEAN_POOLED)  # heads that read the first position of the base model's last hidden states
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json")
POOLING_NOTE = {"cls": "cls, the head reads the architecture's own pooling ([CLS] or last token)",
                "mean": "mean, the head reads the mean of the last hidden states over the text's tokens"}


def default_pooling(base: str, path: str | None, config) -> str:
    """`pooling: auto`: what a checkpoint was trained to be read by. A fine-tune keeps its base's pooling; a
    sentence-transformers checkpoint (the built-in MiniLM, or a folder with their module files) is read by its
    mean; every other checkpoint and every preset by the architecture's own pooling."""
    if getattr(config, POOLING_ATTR, None):
        return getattr(config, POOLING_ATTR)
    if base == BUILTIN_CHECKPOINT or (path and any((Path(path) / f).is_file() for f in SENTENCE_TRANSFORMERS_FILES)):
        return "mean"
    return "cls"


def mean_pool(model: PreTrainedModel) -> None:
    """Make `model`'s head read the masked mean of the last hidden states (hf_pooling.mean_pool); refused for an
    architecture whose head reads another position."""
    kind = model.config.model_type
    if kind not in MEAN_POOLABLE:
        raise ConfigError(f"pooling: mean is implemented for {', '.join(sorted(MEAN_POOLABLE))} classifiers; "
                          f"a {kind} classifier pools its own way (use cls)")
    hf_pooling.mean_pool(model)


def set_pooling(model: PreTrainedModel, pooling: str) -> None:
    if pooling == "mean":
        mean_pool(model)
    else:
        setattr(model.config, POOLING_ATTR, "cls")


# --- masked LM -----------------------------------------------------------------------------------------------


class MaskedLMHead(nn.Module):
    """BERT's MLM head (dense, GELU, LayerNorm, vocabulary projection) whose decoder is the input embedding
    matrix, passed in at call time: the tie needs no copy and the head's own file stays small."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=getattr(config, "layer_norm_eps", 1e-12))
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        nn.init.normal_(self.dense.weight, std=getattr(config, "initializer_range", 0.02))
        nn.init.zeros_(self.dense.bias)

    def forward(self, hidden: torch.Tensor, decoder_weight: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(F.gelu(self.dense(hidden))), decoder_weight, self.bias)


class MLMModel(nn.Module):
    """An encoder (any `AutoModel`) plus a `MaskedLMHead` tied to its input embeddings."""

    def __init__(self, encoder: PreTrainedModel, head: MaskedLMHead):
        super().__init__()
        self.encoder = encoder
        self.head = head

    @property
    def saved(self) -> PreTrainedModel:
        """What a checkpoint saves with `save_pretrained` (the head goes beside it)."""
        return self.encoder

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy over the masked positions (labels != -100)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        decoder = self.encoder.get_input_embeddings().weight
        if hidden.is_cuda:
            # On a GPU, gathering a data-dependent number of positions forces a host sync each step, which
            # costs more than projecting every position (measured on an H100: 0.6-0.9x the full projection).
            return F.cross_entropy(self.head(hidden, decoder).flatten(0, 1).float(), labels.flatten())
        # On a CPU, gather the ~15% masked positions before the vocabulary projection: the projection is the
        # expensive part, and the other 85% of its output would be thrown away.
        selected = labels != -100
        return F.cross_entropy(self.head(hidden[selected], decoder).float(), labels[selected])


def save_mlm_head(head: MaskedLMHead, folder: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(folder / MLM_HEAD_FILE))


def load_mlm_head(folder: str, encoder: PreTrainedModel) -> MaskedLMHead | None:
    """The MLM head saved beside a checkpoint, or None when it has none (MiniLM, a hub model, a preset)."""
    file = Path(folder) / MLM_HEAD_FILE
    if not file.is_file():
        return None
    head = MaskedLMHead(encoder.config)
    head.load_state_dict(load_file(str(file)))
    return head


def load_mlm(spec: str) -> tuple[MLMModel, PreTrainedTokenizerFast]:
    """An encoder checkpoint with its MLM head, or a fresh head tied to its embeddings when it has none."""
    path = resolve_checkpoint(spec)
    encoder = load_from(AutoModel.from_pretrained, spec, path, dtype=torch.float32)  # float32 master weights
    tokenizer = load_from(AutoTokenizer.from_pretrained, spec, path)
    head = load_mlm_head(path, encoder) or MaskedLMHead(encoder.config)
    return MLMModel(encoder, head), tokenizer


def classifier_sharing_encoder(model: PreTrainedModel, labels: list[str]) -> PreTrainedModel:
    """A second classifier (a fresh head for `labels`) on the very same encoder modules as `model`."""
    config = copy.deepcopy(model.config)
    set_labels(config, labels)
    other = AutoModelForSequenceClassification.from_config(config)
    setattr(other, other.base_model_prefix, model.base_model)
    return other.to(next(model.parameters()).device)
