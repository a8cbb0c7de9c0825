"""The data room's one user-facing error."""

from __future__ import annotations


class DataError(ValueError):
    """Bad or missing data; the message names the file, row or column at fault (and what to do)."""
