"""Which queued runs start now: higher priority first, then first come first served, backfilling across kinds;
and which queued runs may start at all (a run waits for the checkpoint it starts from).

The queue itself lives in the `runs` table (status `queued`, ordered by priority DESC, queued_at, id), so it
survives an engine restart as it is. A run waiting for a busy GPU does not block a CPU run behind it, but
within one slot kind the order is strict: a lower-priority run never overtakes a higher one for the same slot.

Dependencies come from the config itself: a run whose `base` (fine-tune) or `model` (pretrain, evaluate) is
`run:<id>[/step-<N>]` depends on that run's checkpoint. The config is the one place that says where a run's
weights come from, so there is no second `depends_on` field that could disagree with it. `waiting_for` says what
a queued run still waits for; the engine starts it when the checkpoint exists and fails it with the reason when
its parent ended without that checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ptft_core.config import CHECKPOINT_FIELD
from ptft_core.engine.devices import Allocation, DevicePool
from ptft_core.specs import run_reference


def queue_order(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(runs, key=lambda r: (-(r.get("priority") or 0), r.get("queued_at") or r["created_at"], r["id"]))


def depends_on(config: dict[str, Any]) -> tuple[str, str] | None:
    """(run id, checkpoint name) a run's config starts from, when it names another run's checkpoint."""
    field = CHECKPOINT_FIELD.get(config.get("kind"))
    return run_reference(str(config.get(field) or "")) if field else None


def slot_kind(run: dict[str, Any], pool: DevicePool) -> str:
    return pool.kind_for(run["config"].get("device", "auto"))


def ranks(run: dict[str, Any]) -> int:
    """A run's data-parallel processes: on GPUs, one GPU each."""
    return int(run["config"].get("ranks") or 1)


def pick(queued: Iterable[dict[str, Any]], pool: DevicePool) -> list[tuple[dict[str, Any], Allocation]]:
    """Assign free slots to queued runs (mutates the pool's occupancy); returns (run, slots) to launch."""
    chosen = []
    blocked: set[str] = set()
    for run in queue_order(queued):
        kind = slot_kind(run, pool)
        if kind in blocked:
            continue
        slots = pool.acquire(kind, run["id"], gpus=ranks(run))
        if slots is None:
            blocked.add(kind)
            continue
        chosen.append((run, slots))
    return chosen
