"""Benchmarks (`python -m bench [NAME ...]`, `make bench`); results in bench/results/*.json (git-ignored).

Each `<name>_bench.py` module exposes `run() -> list[dict]`; see `__main__.py`.
"""
