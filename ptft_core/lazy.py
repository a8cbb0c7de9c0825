"""Lazy package exports: a package names what it exports and from which submodule, and the submodule is imported
on first use. The Streamlit app imports `ptft_core.data` and `ptft_core.studies` on every page; this keeps torch,
`datasets` and plotly out of that import until a page really needs them."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module-level `__getattr__` for `package`: `exports` maps an exported name to its submodule."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)  # the next access skips this function
        return value

    return __getattr__
