"""The DuckDB run store: one owning process, idempotent ingestion of run journals, downsampled queries.

`Store` and `StoreLockedError` are the public names; see `store.py` for the design and `schema.py` for the
migrations.
"""

from ptft_core.store.store import Store, StoreLockedError

__all__ = ["Store", "StoreLockedError"]
