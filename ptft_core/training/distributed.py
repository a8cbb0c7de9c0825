"""Data parallelism for a run with `ranks > 1`: one process per rank under `torchrun --standalone`, each on its
own slice of every batch, the gradients averaged before each optimizer step.

Why not `DistributedDataParallel`: DDP registers its hooks on the parameters that require gradients when it
wraps the model, and the fine-tuning strategies change that set during the run (gradual unfreezing opens one
layer group at a time, the linear probe and frozen layers keep most of the encoder fixed), so a wrapped model
would either refuse the unused parameters or silently never average the newly opened ones. Averaging every
gradient that exists, flattened into one buffer and reduced in one call, is correct for every strategy and keeps
the training loop as it reads for one process. The price is no overlap of the reduction with the backward pass,
which matters little at these model sizes.

Every decision that must agree across ranks goes through `agree` (an all-reduce of flags): a stop request
reaches the ranks at different steps, and resume points are due by wall-clock time, so each rank's own view is
reduced before anyone acts on it. Rank 0 alone writes files (journal, checkpoints); evaluations run on every
rank (the same data and weights give the same numbers, and so the same early-stopping decisions).

With one process (`world == 1`), everything here is a no-op and torch.distributed is never initialised.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1


ONE_PROCESS = Ranks()


def from_env() -> Ranks:
    """The ranks torchrun describes in the environment (one process when it did not start this one)."""
    return Ranks(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                 int(os.environ.get("LOCAL_RANK", 0)))


def start(ranks: Ranks, device: torch.device) -> torch.device:
    """Join the process group; the device this rank trains on. On GPUs the group has both backends: nccl for
    the gradients (CUDA tensors), gloo for the small flags and checksums of `agree` and `weight_spread`, which
    are CPU tensors (nccl refuses those)."""
    if not ranks.parallel:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")
    return device


def shard(indices: Iterable[int], ranks: Ranks) -> list[int]:
    """This rank's part of a batch: every world-th example (the batch's length grouping is kept per rank). A
    batch smaller than the world (an epoch's last) lends a rank without one an example of another: a step
    needs every rank."""
    indices = list(indices)
    return indices[ranks.rank::ranks.world] or [indices[ranks.rank % len(indices)]]


def average_gradients(parameters: Iterable[torch.nn.Parameter], ranks: Ranks) -> None:
    """The mean over ranks of every gradient, in one all-reduce of one flat buffer."""
    if ranks.parallel:
        _average_in_place([p.grad for p in parameters if p.grad is not None], ranks)


def average_buffers(model: torch.nn.Module, ranks: Ranks) -> None:
    """The mean over ranks of the model's floating-point buffers (batch norm's running statistics). Each rank's
    come from its own slice of every batch, so they drift apart; averaged before every evaluation and
    checkpoint, every rank scores (and rank 0 saves) the same model, and early stopping decides alike."""
    if ranks.parallel:
        _average_in_place([b for b in model.buffers() if b.is_floating_point()], ranks)


def _average_in_place(tensors: list[torch.Tensor], ranks: Ranks) -> None:
    """Each tensor replaced by its mean over ranks: one all-reduce of one flat buffer."""
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= ranks.world
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def agree(ranks: Ranks, *flags: bool) -> tuple[bool, ...]:
    """Each flag true on any rank is true on every rank."""
    if not ranks.parallel:
        return tuple(bool(f) for f in flags)
    tensor = torch.tensor([float(f) for f in flags])
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in tensor.tolist())


def barrier(ranks: Ranks) -> None:
    """Wait until every rank is here (rank 0 has written a checkpoint the others are about to read)."""
    if ranks.parallel:
        dist.barrier()


def weight_spread(model: torch.nn.Module, ranks: Ranks) -> float:
    """How far the ranks' weights (and floating-point buffers: batch norm's statistics) are apart: the spread of
    one float64 checksum per rank (0: in sync)."""
    if not ranks.parallel:
        return 0.0
    tensors = [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]
    checksum = torch.tensor([sum(float(t.detach().double().sum()) for t in tensors)], dtype=torch.float64)
    gathered = [torch.zeros_like(checksum) for _ in range(ranks.world)]
    dist.all_gather(gathered, checksum)
    values = np.array([float(t) for t in gathered])
    return float(values.max() - values.min())


def stop(ranks: Ranks) -> None:
    if ranks.parallel and dist.is_initialized():
        dist.destroy_process_group()
