"""Fine-tuning strategies: which parameters train, and at which learning rate.

Every strategy works on the same view of a classifier, bottom to top, found generically for every family
(BERT, RoBERTa, DistilBERT, XLNet, GPT-2, T5: see layer_groups):

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


def layer_stacks(model: nn.Module) -> list[nn.ModuleList]:
    """The transformer layer stacks of the base model, in order, found without knowing the architecture's
    names: lists of blocks of one class (`encoder.layer` in BERT and RoBERTa, `transformer.layer` in DistilBERT
    and XLNet, `h` in GPT-2; T5 has two, the encoder's `block` and then the decoder's), not counting lists
    inside a block (T5's sub-layers)."""
    stacks, inside = [], set()
    for module in model.base_model.modules():  # parents before their children
        if id(module) in inside or not isinstance(module, nn.ModuleList) or not len(module):
            continue
        if len({type(block) for block in module}) == 1 and any(True for _ in module.parameters()):
            stacks.append(module)
            inside |= {id(m) for m in module.modules()}
    if not stacks:
        raise ConfigError(f"{type(model).__name__}: found no layer stack to freeze or decay")
    return stacks


def layer_groups(model: nn.Module) -> list[list[tuple[str, nn.Parameter]]]:
    """Named parameters in groups, bottom to top: embeddings, each layer, head (see the module docstring).

    The base model's parameters before its first layer are the embeddings; those between two stacks (T5's
    encoder-final norm) go with the layer below them; those after the last layer (a final norm, BERT's
    pooler) and everything outside the base model go with the head."""
    layers = [layer for stack in layer_stacks(model) for layer in stack]
    layer_of = {id(p): i for i, layer in enumerate(layers) for p in layer.parameters()}
    base = {id(p) for p in model.base_model.parameters()}
    groups: list[list[tuple[str, nn.Parameter]]] = [[] for _ in range(len(layers) + 2)]
    current = 0  # the group of the last layer seen (0: none yet)
    for name, p in model.named_parameters():
        if id(p) in layer_of:
            current = 1 + layer_of[id(p)]
            groups[current].append((name, p))
        elif id(p) in base and current < len(layers):
            groups[current].append((name, p))
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
