"""Prometheus gauges that stay on the port while their owner lives.

Ray's metrics agent drops a gauge series about two export intervals (20 s at Ray's default) after its last `set`,
while counters stay. So a value set once (the items an index run expects) or rarely (an idle encoder's queue, an
epoch's score) vanished from the dashboard, and a panel built on it showed "no data". `watch` registers a reader
for one series; one daemon thread per process sets every watched series from its reader at half Ray's export
interval, so each export carries a fresh value.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
import weakref
from typing import Any, Callable

log = logging.getLogger(__name__)
DEFAULT_EXPORT_S = 10.0  # Ray's default metrics_report_interval_ms, when Ray's config cannot be read


class Watched:
    """The series one process keeps fresh: readers held weakly when they are bound methods, set on demand."""

    def __init__(self):
        self._lock = threading.Lock()
        self._series: list[tuple[Any, dict, Callable[[], Callable[[], float] | None]]] = []

    def __len__(self) -> int:
        return len(self._series)

    def add(self, gauge: Any, tags: dict, read: Callable[[], float], owner: Any = None) -> None:
        """Keep `gauge{tags}` set from `read()` while `owner` lives (a bound method: its object; else the process),
        and set it now."""
        ref = weakref.WeakMethod(read) if inspect.ismethod(read) else _while_alive(read, owner)
        with self._lock:
            self._series.append((gauge, dict(tags), ref))
        _set(gauge, tags, read)

    def refresh(self) -> int:
        """Set every series from its reader once, forgetting those whose owner is gone; how many were set."""
        with self._lock:
            live = [(gauge, tags, ref()) for gauge, tags, ref in self._series]
            self._series = [entry for entry, (_, _, read) in zip(self._series, live) if read is not None]
        return sum(_set(gauge, tags, read) for gauge, tags, read in live if read is not None)


def _while_alive(read: Callable[[], float], owner: Any) -> Callable[[], Callable[[], float] | None]:
    """`read` while `owner` lives (always without one)."""
    if owner is None:
        return lambda: read
    alive = weakref.ref(owner)
    return lambda: read if alive() is not None else None


_WATCHED = Watched()
_thread: threading.Thread | None = None
_thread_lock = threading.Lock()


def watch(gauge: Any, tags: dict, read: Callable[[], float], owner: Any = None) -> None:
    """Set `gauge{tags}` to `read()` now and every refresh_seconds() on this process's refresh thread, until its
    owner is gone (then the series ages out of Ray): a bound method's object, else `owner`, else never. Neither is
    kept alive by this (a `read` that holds its owner would be)."""
    _WATCHED.add(gauge, tags, read, owner)
    _start()


def _set(gauge: Any, tags: dict, read: Callable[[], float]) -> bool:
    try:
        gauge.set(float(read()), tags=tags)
        return True
    except Exception as err:  # noqa: BLE001 - a metric is best effort: the work it describes goes on without it
        log.debug("gauge not refreshed: %s", err)
        return False


def refresh_seconds() -> float:
    """Half Ray's export interval (which Ray floors at 1 s), so every export sees a value set since the last one."""
    try:
        import ray

        export_ms = ray._config.metrics_report_interval_ms()
    except Exception:  # noqa: BLE001 - Ray's private config moved: its documented default
        export_ms = DEFAULT_EXPORT_S * 1000
    return max(export_ms, 1000) / 2000


def _start() -> None:
    global _thread
    with _thread_lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_loop, args=(refresh_seconds(),), name="gauge-refresh", daemon=True)
            _thread.start()


def _loop(every_s: float) -> None:
    while True:
        time.sleep(every_s)
        _WATCHED.refresh()
