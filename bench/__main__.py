"""`python -m bench [NAME ...]`: run the benchmarks, print one table, write `bench/results/<name>.json`.

Each `bench/<name>_bench.py` module with a `run() -> list[dict]` is a benchmark named `<name>` (rows: bench,
metric, value, unit, target, ok). With no NAME, all of them run. The training-throughput benchmarks (finetune, mlm,
gpu) take minutes and options of their own, so they run on their own: `python -m bench.<name>_bench --help`.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
import traceback
from pathlib import Path

from bench import RESULTS

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    """The benchmarks this harness runs: modules that define `run()`."""
    return sorted(p.name[: -len("_bench.py")] for p in HERE.glob("*_bench.py") if "\ndef run(" in p.read_text())


def standalone() -> list[str]:
    """The modules without `run()`: they take options of their own (`python -m bench.<module> --help`)."""
    harnessed = set(available())
    return sorted(p.stem for p in HERE.glob("*_bench.py") if p.name[: -len("_bench.py")] not in harnessed)


def machine() -> dict:
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"python": platform.python_version(), "platform": platform.platform(), "cores": cores,
            "load_1min_at_start": load}


def main(argv: list[str]) -> int:
    names = argv or available()
    unknown = [n for n in names if n not in available()]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available())} "
              f"(on their own: {', '.join(f'python -m bench.{m}' for m in standalone())})", file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)
    rows: list[dict] = []
    failed = False
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        info = machine()
        try:
            result = importlib.import_module(f"bench.{name}_bench").run()
        except Exception:
            traceback.print_exc()
            failed = True
            continue
        elapsed = time.perf_counter() - start
        (RESULTS / f"{name}.json").write_text(json.dumps(
            {"bench": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(elapsed, 1),
             "machine": info, "rows": result}, indent=1))
        rows.extend(result)
    _print(rows)
    return 1 if failed else 0


def _print(rows: list[dict]) -> None:
    if not rows:
        return
    table = [("bench", "metric", "value", "unit", "target", "ok")]
    for r in rows:
        ok = "" if r.get("ok") is None else ("yes" if r["ok"] else "NO")
        table.append((r["bench"], r["metric"], f"{r['value']:,}", r["unit"], r.get("target") or "", ok))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    for i, row in enumerate(table):
        print("  ".join(str(c).rjust(w) if j == 2 else str(c).ljust(w) for j, (c, w) in enumerate(zip(row, widths,
                                                                                                 strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
