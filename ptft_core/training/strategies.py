"""Fine-tuning strategies: which parameters train, and at which learning rate.

Every strategy works on the same view of a classifier, bottom to top, found generically for any BERT-like
encoder (BERT, RoBERTa, DistilBERT, ...):

    group 0          the embeddings
    groups 1..L      the transformer layers, bottom to top
    group L+1        the head: everything else (pooler, classifier)

- full: everything trains.
- linear_probe: only the parameters outside the encoder (`model.base_model`) train: the classifier, not the
  pooler, which belongs to the encoder.
- freeze_bottom: the embeddings and the bottom `freeze_layers` layers stay frozen.
- gradual_unfreeze: at stage s the top s+1 groups train (head first, then layer L-1, L-2, ..., embeddings last);
  the stage is the epoch, or `step // unfreeze_every_steps`.
- discriminative: everything trains; group g's lr is lr * layer_decay ** (its depth from the top): the head
  gets lr, layer L-1 lr * decay, ..., the embeddings the lowest.
"""

from __future__ import annotations

from torch import nn

from ptft_core.config import ConfigError, FinetuneConfig
from ptft_core.training.common import decay_groups


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layer stack: the longest ModuleList inside the encoder (`encoder.layer` in BERT and
    RoBERTa, `transformer.layer` in DistilBERT), found without knowing the architecture's names."""
    lists = [m for m in model.base_model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise ConfigError(f"{type(model).__name__}: found no layer stack to freeze or decay")
    return max(lists, key=len)


def layer_groups(model: nn.Module) -> list[list[tuple[str, nn.Parameter]]]:
    """Named parameters in groups, bottom to top: embeddings, each layer, head (see the module docstring)."""
    layers = encoder_layers(model)
    layer_of = {id(p): i for i, layer in enumerate(layers) for p in layer.parameters()}
    embeddings = {id(p) for name, p in model.base_model.named_parameters() if name.startswith("embeddings")}
    groups: list[list[tuple[str, nn.Parameter]]] = [[] for _ in range(len(layers) + 2)]
    for name, p in model.named_parameters():
        if id(p) in embeddings:
            groups[0].append((name, p))
        elif id(p) in layer_of:
            groups[1 + layer_of[id(p)]].append((name, p))
        else:
            groups[-1].append((name, p))
    return groups


def head_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The parameters outside the encoder: the task head."""
    encoder = {id(p) for p in model.base_model.parameters()}
    return [(name, p) for name, p in model.named_parameters() if id(p) not in encoder]


def unfreeze_stage(config: FinetuneConfig, epoch: int, task_step: int) -> int:
    """gradual_unfreeze's stage after `task_step` steps of the current task (0: the head alone)."""
    return task_step // config.unfreeze_every_steps if config.unfreeze_every_steps else epoch


def apply_strategy(model: nn.Module, config: FinetuneConfig, stage: int = 0) -> int:
    """Set `requires_grad` for the strategy (and gradual_unfreeze's stage); return the trainable parameter count."""
    groups = layer_groups(model)
    n_layers = len(groups) - 2
    if config.strategy == "linear_probe":
        trainable = {id(p) for _, p in head_parameters(model)}
    else:
        if config.strategy == "freeze_bottom":
            if config.freeze_layers > n_layers:
                raise ConfigError(f"freeze_layers: {config.freeze_layers} > the model's {n_layers} layers")
            open_groups = groups[1 + config.freeze_layers:]
        elif config.strategy == "gradual_unfreeze":
            open_groups = groups[max(0, len(groups) - 1 - stage):]
        else:  # full, discriminative
            open_groups = groups
        trainable = {id(p) for group in open_groups for _, p in group}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def strategy_param_groups(model: nn.Module, config: FinetuneConfig) -> list[dict]:
    """Optimizer param groups: layer-wise lrs for discriminative, one lr otherwise; no decay on biases/norms.

    Frozen parameters are included: they get no gradient, so the optimizer skips them until they are unfrozen.
    """
    if config.strategy != "discriminative":
        return decay_groups(model.named_parameters(), config.optim.weight_decay, config.optim.lr)
    groups = layer_groups(model)
    param_groups = []
    for g, named in enumerate(groups):
        depth = len(groups) - 1 - g
        param_groups += decay_groups(named, config.optim.weight_decay, config.optim.lr * config.layer_decay ** depth)
    return param_groups
