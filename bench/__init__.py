"""Benchmarks (`python -m bench [NAME ...]`, `make bench`); results in bench/results/*.json (git-ignored).

Each `<name>_bench.py` module exposes `run() -> list[dict]`; see `__main__.py`.
"""


def row(bench: str, metric: str, value: float, unit: str, target: str | None, digits: int = 1) -> dict:
    """One result row; `target` like ">= 100000" or "< 2" sets `ok` (None when there is no target)."""
    ok = None
    if target:
        op, bound = target.split()
        ok = value >= float(bound) if op == ">=" else value < float(bound)
    return {"bench": bench, "metric": metric, "value": round(value, digits), "unit": unit, "target": target, "ok": ok}
