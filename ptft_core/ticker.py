"""`Ticker`: what the studies' and the sweeps' drivers share: a `tick()` called every `interval` seconds by a
daemon thread (`start()` / `stop()`), ending when its engine's store closes, and outliving one bad tick; and one
driver of each kind per engine in a process (`for_engine`)."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

_DRIVERS: dict[tuple[type, int], Ticker] = {}
_DRIVERS_LOCK = threading.Lock()


class Ticker:
    """Subclasses set `engine` and `interval` and define `tick()`; ticks of one driver are serialised by `_lock`."""

    name = "ptft-ticker"

    def __init__(self, engine, interval: float = 2.0):
        self.engine = engine
        self.interval = interval
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ticked_at: int | None = None  # the store revision the last good tick saw

    @classmethod
    def for_engine(cls, engine, start: bool = False):
        """The one driver of this kind for `engine` in this process (created on first use; `start=True` starts
        its thread)."""
        with _DRIVERS_LOCK:
            driver = _DRIVERS.get((cls, id(engine)))
            if driver is None or driver.engine is not engine:
                driver = _DRIVERS[(cls, id(engine))] = cls(engine)
        return driver.start() if start else driver

    def tick(self) -> object:
        raise NotImplementedError

    def start(self):
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        # The engine's store closes when the engine does: the driver ends with it.
        while not self._stop.is_set() and not self.engine.store.closed:
            self.tick_if_changed()
            self._stop.wait(self.interval)

    def tick_if_changed(self) -> bool:
        """Tick unless nothing was written to the store since the last good tick; True if it ticked. A tick
        decides from the store (and from what the driver itself keeps, as a sweep's Optuna journal), and this
        process's engine is the store's only writer: with no write, the next tick would decide the same, so an
        idle lab runs no query. A failed tick is tried again."""
        revision = self.engine.store.revision  # before the tick: its own writes make the next one look again
        if revision == self._ticked_at:
            return False
        try:
            self.tick()
            self._ticked_at = revision
        except Exception:  # the loop must outlive one bad tick
            log.exception("%s: tick failed", self.name)
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
