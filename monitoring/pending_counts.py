"""Counts waiting to reach Triton's metrics API, and the thread that sends them on.

In the Python backend every `Metric.increment` is a round trip from the stub process to
the server, several per served batch if made from `execute`. Instead a batch's counts are
added to one float64 vector per counter layout (a plan's `keys`): memory stays a fixed
size however long the counts wait, and adding is one numpy addition under a lock. A
daemon thread sends the sums every `monitoring.flush_interval_s`, so what a scrape sees
lags by about that interval, also once traffic stops.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from monitoring.batch_counts import Key

Entry = tuple[tuple[Key, ...], np.ndarray]  # a plan's keys, the count of each slot


class PendingCounts:
    """Per-slot sums of the counts not sent yet, safe to add to from one thread while
    another takes them: every count is in exactly one place, this buffer or a taken batch
    (no count lost, none sent twice)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Keyed by id(keys): the entry holds `keys`, so the id cannot be reused while the
        # entry exists, and hashing a tuple of a hundred label tuples per batch is avoided.
        self._entries: dict[int, Entry] = {}

    def add(self, keys: tuple[Key, ...], counts: np.ndarray) -> None:
        with self._lock:
            self._add(keys, counts)

    def _add(self, keys: tuple[Key, ...], counts: np.ndarray) -> None:
        entry = self._entries.get(id(keys))
        if entry is None:
            self._entries[id(keys)] = (keys, np.array(counts, dtype=np.float64))
        else:
            np.add(entry[1], counts, out=entry[1])

    def take(self) -> list[Entry]:
        """Everything pending; the buffer starts again empty."""
        with self._lock:
            entries, self._entries = self._entries, {}
        return list(entries.values())

    def put_back(self, entries: list[Entry]) -> None:
        """Return counts a failed send did not deliver (their sent slots set to zero)."""
        with self._lock:
            for keys, counts in entries:
                self._add(keys, counts)


class PeriodicFlush:
    """Calls `flush` every `interval_s` seconds on a daemon thread until stopped.

    Daemon: a stub process that exits without finalize (killed, crashed) must not hang on
    this thread; finalize stops it and flushes once more instead."""

    def __init__(self, flush: Callable[[], None], interval_s: float, name: str) -> None:
        self._flush = flush
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._flush()

    def stop(self, timeout_s: float) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def is_alive(self) -> bool:
        return self._thread.is_alive()
