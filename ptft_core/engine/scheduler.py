"""Which queued runs start now: higher priority first, then first come first served, backfilling across kinds.

The queue itself lives in the `runs` table (status `queued`, ordered by priority DESC, queued_at, id), so it
survives an engine restart as it is. A run waiting for a busy GPU does not block a CPU run behind it, but
within one slot kind the order is strict: a lower-priority run never overtakes a higher one for the same slot.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ptft_core.engine.devices import DevicePool, Slots


def queue_order(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(runs, key=lambda r: (-(r.get("priority") or 0), r.get("queued_at") or r["created_at"], r["id"]))


def slot_kind(run: dict[str, Any], pool: DevicePool) -> str:
    return pool.kind_for(run["config"].get("device", "auto"))


def pick(queued: Iterable[dict[str, Any]], pool: DevicePool) -> list[tuple[dict[str, Any], Slots]]:
    """Assign free slots to queued runs (mutates the pool's occupancy); returns (run, slots) to launch."""
    chosen = []
    blocked: set[str] = set()
    for run in queue_order(queued):
        kind = slot_kind(run, pool)
        if kind in blocked:
            continue
        slots = pool.acquire(kind, run["id"])
        if slots is None:
            blocked.add(kind)
            continue
        chosen.append((run, slots))
    return chosen
