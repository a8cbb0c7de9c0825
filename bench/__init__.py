"""Benchmarks (`python -m bench [NAME ...]`, `make bench`); results in bench/results/*.json (git-ignored).

Each `<name>_bench.py` module exposes `run() -> list[dict]`; see `__main__.py`.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def save_result(name: str, result: dict) -> Path:
    """Write `bench/results/<name>.json`."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    return path


@contextlib.contextmanager
def throwaway_home() -> Iterator[Path]:
    """A temporary lab home that links the prepared datasets and models of this one (nothing the bench does
    reaches the user's own lab)."""
    from ptft_core import paths

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        for folder in ("datasets", "models"):
            (home / folder).symlink_to(paths.home() / folder)
        yield home


@contextlib.contextmanager
def models_switched(switches: dict[str, bool]) -> Iterator[None]:
    """`ptft_core.models` switches (CPU_CHEAP_DROPOUT, CPU_BF16_LAYER_NORM, ...) set for the block only: an arm of
    ptft as it was before a change; restored even when the block fails."""
    from ptft_core import models

    before = {name: getattr(models, name) for name in switches}
    for name, value in switches.items():
        setattr(models, name, value)
    try:
        yield
    finally:
        for name, value in before.items():
            setattr(models, name, value)


def row(bench: str, metric: str, value: float, unit: str, target: str | None, digits: int = 1) -> dict:
    """One result row; `target` like ">= 100000" or "< 2" sets `ok` (None when there is no target)."""
    ok = None
    if target:
        op, bound = target.split()
        ok = value >= float(bound) if op == ">=" else value < float(bound)
    return {"bench": bench, "metric": metric, "value": round(value, digits), "unit": unit, "target": target, "ok": ok}
