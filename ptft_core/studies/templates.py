"""Study templates: one small function per study, turning a preset into a plan (a list of planned runs).

A planned run is a validated config plus what the report groups it by (`labels`: arm, seed, label fraction...)
and its lineage: `base_from` names the planned run (and optionally the `step-<N>` checkpoint of it) whose
checkpoint becomes this run's `base` (fine-tune) or `model` (further pretraining). The driver (driver.py)
submits a planned run once that checkpoint exists; the report (report.py) reads the runs back by their keys.

Presets: `quick` finishes in about 15 minutes on a 2-core CPU that the lab has to itself (fewer seeds, fewer
steps; the report says what the preset cut), `full` is meant for a GPU. `tiny=True` (`--tiny-for-tests`)
keeps a plan's shape (every arm kind and every lineage link) but thins its grids to two levels per factor and
makes every run a few steps of a tiny model with one seed: the CI form, about 30 runs for all six studies.

Time estimates come from the cost model at the bottom of this file (`COSTS`), measured on this project's
2-core CPU machine, times each run's step and evaluation counts. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ptft_core.config import (
    BUILTIN_CHECKPOINT,
    PRESETS,
    ConfigError,
    FinetuneConfig,
    OptimConfig,
    PretrainConfig,
    RunConfig,
    config_from_dict,
    config_to_dict,
)

STUDY_PRESETS = ("quick", "full")
SENTIMENT_DOMAINS = ("movies", "amazon", "nyt", "tweets")
TRANSFER_SPLIT = "transfer"  # cross-domain test metrics: split "transfer", names "<metric>@<dataset>"


# --- plan types -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseFrom:
    """Lineage: this run starts from planned run `key`'s checkpoint (`checkpoint` None: its final one)."""

    key: str
    checkpoint: str | None = None  # "step-<N>"

    def spec(self, run_id: str) -> str:
        return f"run:{run_id}" + (f"/{self.checkpoint}" if self.checkpoint else "")


@dataclass
class PlannedRun:
    key: str  # unique within the study; the run carries it as tag `study-key:<key>`
    config: RunConfig
    labels: dict[str, Any] = field(default_factory=dict)
    base_from: BaseFrom | None = None
    cross_eval: tuple[str, ...] = ()  # datasets whose test split the final checkpoint is also scored on
    priority: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "config": config_to_dict(self.config), "labels": dict(self.labels),
                "base_from": dataclasses.asdict(self.base_from) if self.base_from else None,
                "cross_eval": list(self.cross_eval), "priority": self.priority}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlannedRun:
        base = data.get("base_from")
        return cls(data["key"], config_from_dict(data["config"]), dict(data.get("labels") or {}),
                   BaseFrom(**base) if base else None, tuple(data.get("cross_eval") or ()),
                   int(data.get("priority") or 0))


@dataclass(frozen=True)
class Template:
    name: str
    title: str
    question: str
    description: str
    expectation: str  # what the literature leads one to expect; the report compares the data against it
    build: Callable[[str, bool], list[PlannedRun]]


TEMPLATES: dict[str, Template] = {}


def template(name: str, title: str, question: str, description: str, expectation: str):
    def register(build: Callable[[str, bool], list[PlannedRun]]):
        TEMPLATES[name] = Template(name, title, question, description, expectation, build)
        return build
    return register


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise ConfigError(f"study: {name!r} is not one of {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def list_templates() -> list[Template]:
    return list(TEMPLATES.values())


def build_runs(name: str, preset: str, tiny: bool = False) -> list[PlannedRun]:
    """The planned runs of template `name` under `preset`; validated (every base_from names an earlier key)."""
    if preset not in STUDY_PRESETS:
        raise ConfigError(f"preset: {preset!r} is not one of {', '.join(STUDY_PRESETS)}")
    runs = get_template(name).build(preset, tiny)
    if tiny:
        runs = shrink_for_tests(runs)
    seen: set[str] = set()
    for run in runs:
        if run.key in seen:
            raise ConfigError(f"study {name}: duplicate run key {run.key!r}")
        if run.base_from is not None and run.base_from.key not in seen:
            raise ConfigError(f"study {name}: {run.key!r} starts from {run.base_from.key!r}, planned after it")
        seen.add(run.key)
    return runs


# --- shared building blocks -------------------------------------------------------------------------------------


def _seeds(preset: str, quick: int, full: int) -> tuple[int, ...]:
    return tuple(range(quick if preset == "quick" else full))


def _ft(preset: str, **fields: Any) -> FinetuneConfig:
    """A fine-tune config with the preset's evaluation budget. Probes are off unless a study needs them."""
    base = dict(max_length=64, batch_size=16, eval_every=1000, log_every=5, eval_train_samples=64,
                probe_drift=False, probe_mlm=False, probe_size=64,
                optim=OptimConfig(lr=1e-4, warmup_ratio=0.1))
    if preset == "full":
        base.update(max_length=128, batch_size=32, eval_every=50, log_every=10, eval_train_samples=512,
                    probe_size=128, optim=OptimConfig(lr=5e-5, warmup_ratio=0.06))
    return FinetuneConfig(**{**base, **fields})


def _pt(preset: str, **fields: Any) -> PretrainConfig:
    base = dict(block_size=64, batch_size=16, log_every=5, eval_every=20, eval_blocks=32)
    if preset == "full":
        base.update(block_size=128, batch_size=32, log_every=10, eval_every=100, eval_blocks=64)
    return PretrainConfig(**{**base, **fields})


def _name(*parts: Any) -> str:
    return "-".join(str(p) for p in parts if p not in (None, ""))


def _pct(fraction: float) -> str:
    return f"{fraction * 100:g}%"


# --- 1. does pretraining help, and when? -------------------------------------------------------------------------


@template(
    "pretraining_helps", "Does pretraining help, and when?",
    "How much does starting from pretrained MiniLM beat the same architecture trained from scratch, and how does "
    "the gap change with the number of labelled examples?",
    "Fine-tunes minilm-l6 and a randomly re-initialised copy (scratch=True: same architecture and tokenizer) on "
    "movies with 1 %, 10 % and 100 % of the labels, several seeds each. Report: test accuracy against labelled "
    "examples (mean ± std), steps to reach a target validation accuracy, and the train − validation accuracy "
    "gap at the end.",
    "Pretraining should win at every label budget, by the widest margin when labels are scarce; the pretrained "
    "model should also reach a given validation accuracy in far fewer steps (Howard & Ruder 2018; Devlin et al. "
    "2019; Hendrycks et al. 2019).",
)
def pretraining_helps(preset: str, tiny: bool) -> list[PlannedRun]:
    quick = preset == "quick"
    fractions = (0.01, 1.0) if tiny else (0.01, 0.1, 1.0) if quick else (0.01, 0.03, 0.1, 0.3, 1.0)
    # quick: a fixed small budget per run (100 % is capped at one 10 %-epoch of steps); full: whole epochs.
    schedule = ({0.01: dict(epochs=2), 0.1: dict(epochs=1),
                 1.0: dict(epochs=1, max_steps=53, eval_every=27)} if quick else
                {0.01: dict(epochs=20), 0.03: dict(epochs=10), 0.1: dict(epochs=5), 0.3: dict(epochs=3),
                 1.0: dict(epochs=3)})
    runs = []
    for seed in _seeds(preset, 2, 5):
        for fraction in fractions:
            for arm, scratch in (("pretrained", False), ("scratch", True)):
                config = _ft(preset, name=_name("pth", arm, _pct(fraction), f"s{seed}"), base=BUILTIN_CHECKPOINT,
                             scratch=scratch, dataset="movies", label_fraction=fraction, seed=seed,
                             **schedule[fraction])
                runs.append(PlannedRun(f"{arm}/frac{fraction:g}/s{seed}", config,
                                       {"arm": arm, "label_fraction": fraction, "seed": seed}))
    return runs


# --- 2. how much pretraining? ------------------------------------------------------------------------------------


@template(
    "how_much_pretraining", "How much pretraining is enough?",
    "How does downstream accuracy grow with the number of pretraining tokens, and what does pretraining cost "
    "next to fine-tuning?",
    "Pretrains a tiny BERT from scratch (its own WordPiece vocabulary) with masked-LM on wiki + news, keeping "
    "checkpoints at several steps; fine-tunes each checkpoint, and the untrained model (step 0: the same "
    "architecture and tokenizer, re-initialised), on movies. Report: movies accuracy against pretraining "
    "tokens beside the pretraining loss curve, and the seconds spent pretraining vs fine-tuning.",
    "Downstream accuracy should rise with pretraining and flatten (diminishing returns) as the masked-LM loss "
    "flattens; a tiny model on under a million words of text gains a few points at most (Turc et al. 2019; "
    "Kaplan et al. 2020). Pretraining costs far more compute than one fine-tune.",
)
def how_much_pretraining(preset: str, tiny: bool) -> list[PlannedRun]:
    quick = preset == "quick"
    steps = (50, 200, 500, 1000) if quick else (250, 500, 1000, 2000, 5000)
    pt = _pt(preset, name="hmp-pretrain", model="tiny" if quick else "mini", corpus=["wiki", "news"],
             vocab_size=8000, max_steps=steps[-1], checkpoint_steps=list(steps[:-1]),
             block_size=128, batch_size=32, eval_every=50 if quick else 250,
             optim=OptimConfig(lr=1e-3, warmup_ratio=0.05))
    runs = [PlannedRun("pretrain", pt, {"arm": "pretrain", "seed": 0}, priority=1)]
    for seed in _seeds(preset, 2, 3):
        for step in (0, steps[0], steps[-1]) if tiny else (0, *steps):
            # Step 0: the first checkpoint's architecture and tokenizer, re-initialised (nothing pretrained).
            checkpoint = None if step == steps[-1] else f"step-{step or steps[0]}"
            config = _ft(preset, name=_name("hmp-ft", f"step{step}", f"s{seed}"), base="pending", scratch=step == 0,
                         dataset="movies", label_fraction=1.0, epochs=1 if quick else 3, seed=seed,
                         batch_size=32, eval_every=100 if quick else 200,
                         optim=OptimConfig(lr=5e-4, warmup_ratio=0.1))
            runs.append(PlannedRun(f"ft/step{step}/s{seed}", config, {
                "arm": f"step {step}", "pretrain_step": step, "pretrain_tokens": step * pt.batch_size * pt.block_size,
                "seed": seed}, base_from=BaseFrom("pretrain", checkpoint)))
    return runs


# --- 3. further pretraining ------------------------------------------------------------------------------------------


FURTHER_ARMS = {  # arm -> (corpus of the further masked-LM pretraining, what it is)
    "none": (None, "MiniLM as shipped"),
    "domain (amazon)": ("amazon", "domain-adaptive: other review text"),
    "task (movies)": ("movies", "task-adaptive: the task's own training text"),
    "unrelated (wiki)": ("wiki", "an unrelated domain"),
}


@template(
    "further_pretraining", "Does further pretraining on related text help?",
    "Does continuing masked-LM pretraining of MiniLM on review text (domain-adaptive) or on the task's own "
    "training text (task-adaptive) improve movies fine-tuning, compared with no further pretraining and with "
    "further pretraining on unrelated text?",
    "Further-pretrains minilm-l6 with masked-LM on amazon review text, on the movies training text (labels "
    "unused) and on wiki, then fine-tunes each (and MiniLM itself) on movies with 10 % of the labels. "
    "Report: test accuracy per arm (mean ± std) and the masked-LM loss curves of the further pretraining.",
    "Domain- and task-adaptive pretraining help most when the task's domain is far from the original "
    "pretraining data and labels are scarce; unrelated text should help less or not at all (Gururangan et al. "
    "2020). Effects are a few points after thousands of steps; a few dozen steps may show nothing.",
)
def further_pretraining(preset: str, tiny: bool) -> list[PlannedRun]:
    quick = preset == "quick"
    runs = []
    arms = {a: v for a, v in FURTHER_ARMS.items() if not tiny or a != "domain (amazon)"}
    for arm, (corpus, _) in arms.items():
        if corpus is None:
            continue
        pt = _pt(preset, name=_name("fpt", corpus), model=BUILTIN_CHECKPOINT, corpus=[corpus],
                 max_steps=40 if quick else 2000, eval_every=20 if quick else 200,
                 optim=OptimConfig(lr=1e-4, warmup_ratio=0.1))
        runs.append(PlannedRun(f"pretrain/{corpus}", pt, {"arm": arm, "corpus": corpus, "seed": 0}, priority=1))
    fractions = (0.1,) if quick else (0.1, 1.0)
    for seed in _seeds(preset, 2, 5):
        for fraction in fractions:
            for arm, (corpus, _) in arms.items():
                config = _ft(preset, name=_name("fpt-ft", corpus or "none", _pct(fraction), f"s{seed}"),
                             base=BUILTIN_CHECKPOINT, dataset="movies", label_fraction=fraction, seed=seed,
                             epochs=1 if quick else 3)
                runs.append(PlannedRun(f"ft/{corpus or 'none'}/frac{fraction:g}/s{seed}", config,
                                       {"arm": arm, "label_fraction": fraction, "seed": seed},
                                       base_from=BaseFrom(f"pretrain/{corpus}") if corpus else None))
    return runs


# --- 4. fine-tuning strategy and learning rate -------------------------------------------------------------------


@template(
    "finetune_strategy", "How should one fine-tune?",
    "Which parts of MiniLM should train, at which learning rate: full fine-tuning, a linear probe, a frozen "
    "bottom half, gradual unfreezing or discriminative learning rates; and what does too large a learning "
    "rate do to what pretraining gave?",
    "Fine-tunes minilm-l6 on movies with five strategies, and full fine-tuning at learning rates from 2e-5 to "
    "1e-3. Report: test accuracy and trainable parameters per strategy, accuracy against learning rate next "
    "to the majority-class rate, and the training curves.",
    "Full fine-tuning at a small rate (2e-5..1e-4) is the strong default; a linear probe is clearly worse on "
    "sentence-level sentiment; freezing the bottom half costs little; too large a rate (1e-3 with Adam) "
    "destroys the pretrained features and falls to chance level (Devlin et al. 2019; Sun et al. 2019; "
    "Howard & Ruder 2018; Mosbach et al. 2021).",
)
def finetune_strategy(preset: str, tiny: bool) -> list[PlannedRun]:
    quick = preset == "quick"
    lr = 1e-4 if quick else 5e-5
    fraction, epochs = (0.05, 1) if quick else (1.0, 3)
    steps = math.ceil(8483 * fraction / (16 if quick else 32)) * epochs
    strategies = {
        "full": dict(strategy="full"),
        "linear_probe": dict(strategy="linear_probe", optim=OptimConfig(lr=1e-3, warmup_ratio=0.1)),
        "freeze_bottom": dict(strategy="freeze_bottom", freeze_layers=3),
        "gradual_unfreeze": dict(strategy="gradual_unfreeze", unfreeze_every_steps=max(1, steps // 8)),
        "discriminative": dict(strategy="discriminative", layer_decay=0.8),
    }
    lrs = (lr, 1e-3) if tiny else (2e-5, 1e-4, 5e-4, 1e-3) if quick else (2e-5, 5e-5, 1e-4, 5e-4, 1e-3)
    runs = []
    for seed in _seeds(preset, 2, 5):
        for strategy, fields in strategies.items():
            fields = {"optim": OptimConfig(lr=lr, warmup_ratio=0.1), **fields}
            config = _ft(preset, name=_name("fts", strategy, f"s{seed}"), dataset="movies", label_fraction=fraction,
                         epochs=epochs, seed=seed, **fields)
            runs.append(PlannedRun(f"strategy/{strategy}/s{seed}", config, {
                "arm": strategy, "group": "strategy", "strategy": strategy, "lr": config.optim.lr, "seed": seed}))
        for rate in lrs:
            if rate == lr:  # the full strategy's run is this point of the sweep
                continue
            config = _ft(preset, name=_name("fts-lr", f"{rate:g}", f"s{seed}"), dataset="movies",
                         label_fraction=fraction, epochs=epochs, seed=seed,
                         optim=OptimConfig(lr=rate, warmup_ratio=0.1))
            runs.append(PlannedRun(f"lr/{rate:g}/s{seed}", config, {
                "arm": f"full, lr {rate:g}", "group": "lr", "strategy": "full", "lr": rate, "seed": seed}))
    return runs


# --- 5. forgetting -----------------------------------------------------------------------------------------------


@template(
    "forgetting", "What does fine-tuning forget, and can replay or L2-SP prevent it?",
    "After fine-tuning on movies, how much movies accuracy is lost while fine-tuning on tweets, with 0 %, 10 % "
    "and 30 % of each batch replayed from movies, or with an L2-SP penalty; and how far do the encoder's "
    "representations and its general masked-LM ability drift during fine-tuning?",
    "A short masked-LM run on wiki first gives MiniLM an MLM head (it ships without one), so the general-text "
    "MLM loss can be probed. From it: sequential fine-tuning movies → tweets (a head per task, a shared "
    "encoder) with replay 0 %, 10 %, 30 % and with L2-SP. Report: movies validation accuracy along the tweets "
    "stage (prev_task_accuracy), tweets accuracy, and CKA similarity to the starting encoder and general MLM "
    "loss along both stages.",
    "Sequential fine-tuning forgets the first task; replaying a fraction of it and L2-SP reduce the loss "
    "(McCloskey & Cohen 1989; Li et al. 2018; de Masson d'Autume et al. 2019). Both tasks here are sentiment, "
    "so the shared encoder may stay useful for movies and forgetting may be small. Fine-tuning moves the top "
    "of the encoder and raises the general MLM loss.",
)
def forgetting(preset: str, tiny: bool) -> list[PlannedRun]:
    quick = preset == "quick"
    head = _pt(preset, name="fgt-mlm-head", model=BUILTIN_CHECKPOINT, corpus=["wiki"],
               max_steps=20 if quick else 500, eval_every=20 if quick else 100,
               optim=OptimConfig(lr=5e-5, warmup_ratio=0.1))
    runs = [PlannedRun("mlm-head", head, {"arm": "mlm-head", "seed": 0}, priority=1)]
    arms = {"replay 0%": dict(), "replay 10%": dict(replay_fraction=0.1), "replay 30%": dict(replay_fraction=0.3),
            "L2-SP": dict(l2sp=0.1)}
    for seed in _seeds(preset, 2, 3):
        for arm, fields in arms.items():
            config = _ft(preset, name=_name("fgt", arm.replace(" ", "").replace("%", "pct"), f"s{seed}"),
                         base="pending", dataset="movies", then_dataset="tweets",
                         label_fraction=0.05 if quick else 0.5, epochs=1, then_epochs=2 if quick else 3,
                         eval_every=1000 if quick else 50, probe_drift=True, probe_mlm=True,
                         probe_size=32 if quick else 128, probe_corpus="wiki", seed=seed, **fields)
            runs.append(PlannedRun(f"seq/{arm}/s{seed}", config, {"arm": arm, "seed": seed},
                                   base_from=BaseFrom("mlm-head")))
    return runs


# --- 6. domain shift ---------------------------------------------------------------------------------------------


DOMAIN_FRACTIONS_QUICK = {"movies": 0.05, "amazon": 0.15, "nyt": 0.1, "tweets": 0.12}  # ~420 examples each


@template(
    "domain_shift", "How well does a fine-tuned model transfer across domains?",
    "Fine-tuned on one sentiment domain, how accurate is the model on the other three, and does pretraining "
    "make it transfer better?",
    "Fine-tunes minilm-l6 and its from-scratch copy on each of movies, amazon, nyt and tweets (quick: about "
    "420 labelled examples each), then scores each final checkpoint on the test split of every domain. "
    "Report: the transfer matrix (train domain × test domain) as a heatmap per arm, and the in-domain vs "
    "out-of-domain drop.",
    "Accuracy drops out of domain; pretrained models transfer much better than models trained from scratch, "
    "whose features are narrower (Hendrycks et al. 2020; Blitzer et al. 2007).",
)
def domain_shift(preset: str, tiny: bool) -> list[PlannedRun]:
    quick = preset == "quick"
    runs = []
    for seed in _seeds(preset, 1, 3):
        for arm, scratch in (("pretrained", False), ("scratch", True)):
            domains = SENTIMENT_DOMAINS[:2] if tiny else SENTIMENT_DOMAINS
            for domain in domains:
                others = tuple(d for d in domains if d != domain)
                config = _ft(preset, name=_name("dsh", arm, domain, f"s{seed}"), base=BUILTIN_CHECKPOINT,
                             scratch=scratch, dataset=domain, seed=seed,
                             label_fraction=DOMAIN_FRACTIONS_QUICK[domain] if quick else 1.0,
                             epochs=1 if quick else 3)
                runs.append(PlannedRun(f"{arm}/{domain}/s{seed}", config,
                                       {"arm": arm, "domain": domain, "seed": seed}, cross_eval=others))
    return runs


# --- the CI form -------------------------------------------------------------------------------------------------


def shrink_for_tests(runs: list[PlannedRun]) -> list[PlannedRun]:
    """Same plan shape, seconds per run: seed 0 only, a tiny model instead of MiniLM, a few steps, max_length 32.

    Step checkpoints of a pretraining run become steps 1, 2, ... in order (the final one stays the last
    step), and the runs that start from them follow."""
    runs = [r for r in runs if r.labels.get("seed", 0) == 0]
    remap: dict[str, dict[str, str]] = {}
    out = []
    for run in runs:
        c = run.config
        labels = dict(run.labels)
        if isinstance(c, PretrainConfig):
            ckpts = sorted(c.checkpoint_steps)
            new_steps = list(range(1, len(ckpts) + 1))
            max_steps = max(3, len(ckpts) + 1)
            remap[run.key] = {f"step-{old}": f"step-{new}" for old, new in zip(ckpts, new_steps, strict=True)}
            config = dataclasses.replace(
                c, model="tiny" if c.model not in PRESETS else c.model, vocab_size=1000, block_size=32, batch_size=8,
                max_steps=max_steps, checkpoint_steps=new_steps, log_every=1, eval_every=2, eval_blocks=4)
        else:
            config = dataclasses.replace(
                c, base="tiny" if c.base == BUILTIN_CHECKPOINT else c.base, max_length=32, batch_size=8,
                label_fraction=min(c.label_fraction, 0.05), epochs=1, then_epochs=1, max_steps=3, eval_every=2,
                log_every=1, eval_train_samples=16, probe_size=8,
                unfreeze_every_steps=1 if c.unfreeze_every_steps else 0,
                freeze_layers=min(c.freeze_layers, 1))
        base_from = run.base_from
        if base_from is not None and base_from.checkpoint:
            new = remap.get(base_from.key, {}).get(base_from.checkpoint, base_from.checkpoint)
            base_from = BaseFrom(base_from.key, new)
        if "pretrain_tokens" in labels and base_from is not None:
            source = next(r.config for r in out if r.key == base_from.key)
            step = int(base_from.checkpoint[5:]) if base_from.checkpoint else source.max_steps
            step = 0 if labels.get("pretrain_step") == 0 else step
            labels.update(pretrain_step=step, pretrain_tokens=step * source.batch_size * source.block_size)
        out.append(dataclasses.replace(run, config=config, labels=labels, base_from=base_from))
    return out


# --- time estimates ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cost:
    """Seconds on this project's 2-core CPU (2 torch threads, float32) for one model family.

    step_s = step_fixed_s + train_s_per_token * tokens in the batch (padded); evaluation (no gradient) costs
    eval_s_per_token per token. Measured with `run_finetune` / `run_pretrain` and a forward/backward loop of
    the real models (batch 16 and 32 at 32 and 48 tokens; pretraining at batch 32 x block 128) on an otherwise
    idle machine. On a shared machine (other users' jobs) runs take 2-4x longer.
    """

    step_fixed_s: float  # optimizer step over all parameters, python overhead
    train_s_per_token: float  # forward + backward
    eval_s_per_token: float  # forward only


COSTS: dict[str, Cost] = {
    BUILTIN_CHECKPOINT: Cost(0.43, 0.74e-3, 0.35e-3),  # 22.7M parameters: 1.19 s per step at 32 x 32 tokens
    "tiny": Cost(0.02, 0.055e-3, 0.017e-3),  # 4.4M (mostly embeddings): 0.075 s per step at 32 x 27
    "mini": Cost(0.05, 0.22e-3, 0.08e-3),
    "small": Cost(0.10, 0.67e-3, 0.25e-3),
    "base": Cost(1.50, 4.3e-3, 1.5e-3),
}
PROCESS_START_S = 10.0  # a worker's python + torch + transformers imports, model load and tokenisation
TOKENIZER_TRAIN_S = 10.0  # WordPiece training on a scratch run's corpus (wiki + news)
PADDING_FACTOR = 1.15  # length-grouped batches still pad a little
GPU_SPEEDUP = 30.0  # rough: one GPU against the 2-core CPU, for the full preset's order of magnitude
# Used when the data room cannot be asked (rows per split, mean tokens per text); the built-ins' real values.
DATASET_FALLBACK = {
    "movies": ({"train": 8483, "validation": 1061, "test": 1061}, 24.9),
    "amazon": ({"train": 2966, "validation": 371, "test": 371}, 20.5),
    "nyt": ({"train": 4152, "validation": 519, "test": 519}, 22.9),
    "tweets": ({"train": 3360, "validation": 420, "test": 420}, 20.9),
}


def dataset_shape(name: str) -> tuple[dict[str, int], float]:
    """(rows per split, mean tokens per text) of a labelled dataset."""
    try:
        from ptft_core.data import dataset_info

        info = dataset_info(name)
        mean = getattr(info, "mean_tokens", None) or DATASET_FALLBACK.get(name, ({}, 30.0))[1]
        return dict(info.splits), float(mean)
    except Exception:  # not prepared, or a user dataset without the numbers: the built-ins' own values
        return DATASET_FALLBACK.get(name, ({"train": 5000, "validation": 500, "test": 500}, 30.0))


def finetune_seconds(config: FinetuneConfig, family: str, cross_eval: tuple[str, ...] = ()) -> float:
    cost = COSTS[family]
    total = PROCESS_START_S
    tasks = [(config.dataset, config.epochs)] + ([(config.then_dataset, config.then_epochs)]
                                                  if config.then_dataset else [])
    first_val = 0
    for index, (dataset, epochs) in enumerate(tasks):
        splits, mean_tokens = dataset_shape(dataset)
        tokens = min(config.max_length, mean_tokens + 2) * PADDING_FACTOR
        examples = max(1, round(config.label_fraction * splits.get("train", 0)))
        steps_per_epoch = math.ceil(examples / config.batch_size)
        steps = steps_per_epoch * epochs
        if config.max_steps:
            steps = min(steps, config.max_steps)
        evals = steps // config.eval_every + math.ceil(steps / steps_per_epoch)
        per_eval = splits.get("validation", 0) + min(config.eval_train_samples, examples) + (first_val if index else 0)
        per_eval_tokens = per_eval * tokens
        if config.probe_drift or config.probe_mlm:
            per_eval_tokens += config.probe_size * config.max_length * (config.probe_drift + config.probe_mlm)
        total += steps * (cost.step_fixed_s + cost.train_s_per_token * config.batch_size * tokens)
        total += evals * per_eval_tokens * cost.eval_s_per_token
        first_val = splits.get("validation", 0)
        if index == len(tasks) - 1:
            total += splits.get("test", 0) * tokens * cost.eval_s_per_token
    if cross_eval:
        total += PROCESS_START_S
        for dataset in cross_eval:
            splits, mean_tokens = dataset_shape(dataset)
            total += splits.get("test", 0) * min(config.max_length, mean_tokens + 2) * cost.eval_s_per_token
    return total


def pretrain_seconds(config: PretrainConfig, family: str) -> float:
    cost = COSTS[family]
    tokens = config.batch_size * config.block_size
    total = PROCESS_START_S + (TOKENIZER_TRAIN_S if config.from_scratch else 0.0)
    total += config.max_steps * (cost.step_fixed_s + cost.train_s_per_token * tokens)
    evals = config.max_steps // config.eval_every + 1
    total += evals * config.eval_blocks * config.block_size * cost.eval_s_per_token
    return total


def run_seconds(runs: list[PlannedRun], device: str = "cpu") -> dict[str, float]:
    """Estimated seconds per planned run (GPU: compute divided by a rough GPU_SPEEDUP, process start kept)."""
    out: dict[str, float] = {}
    family_of: dict[str, str] = {}  # planned key -> the model family its checkpoints are
    for run in runs:
        c = run.config
        inherited = family_of.get(run.base_from.key) if run.base_from else None
        if isinstance(c, PretrainConfig):
            family = c.model if c.model in COSTS else inherited or BUILTIN_CHECKPOINT
            seconds = pretrain_seconds(c, family)
        else:
            family = inherited or (c.base if c.base in COSTS else BUILTIN_CHECKPOINT)
            seconds = finetune_seconds(c, family, run.cross_eval)
        family_of[run.key] = family
        if device == "cuda":
            seconds = PROCESS_START_S + (seconds - PROCESS_START_S) / GPU_SPEEDUP
        out[run.key] = seconds
    return out


def estimate_seconds(runs: list[PlannedRun], slots: int = 1, device: str = "cpu") -> float:
    """Wall-clock seconds for the whole plan on `slots` concurrent slots of `device`."""
    return sum(run_seconds(runs, device).values()) / max(1, slots)


def dataset_chance(name: str) -> float | None:
    """The majority class's share of a dataset's test split: the accuracy of always guessing it."""
    try:
        from ptft_core.data import dataset_info

        balance = dataset_info(name).label_balance.get("test") or {}
    except Exception:
        return None
    total = sum(balance.values())
    return max(balance.values()) / total if total else None
