"""Detections by picture digest and settings, shared by every door.

A detection (segmenter plus refiner) is the expensive half of a cutout, so it is
computed once per picture and settings and kept in a bounded, aged-out,
thread-safe cache. :data:`SHARED_DETECTIONS` is the process-wide one the
studio, the command line, the batch page and the API share.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from inference.pipeline import Detection
from inference.segmenter import DetectionSettings, resolve_backend


def settings_key(settings: DetectionSettings) -> tuple:
    """What a detection depends on: every detection setting plus the backend ``auto`` resolves to now."""
    return dataclasses.astuple(settings) + (resolve_backend(settings.backend).name,)


class DetectionCache:
    """Detections by ``(picture digest, settings key)``: bounded (LRU), aged out, thread-safe.

    Two callers asking for the same key at once wait for one computation.
    ``hits``/``misses`` count lookups (for tests and benchmarks).
    """

    def __init__(self, max_entries: int = 32, ttl_s: float = 3600.0, *, clock: Callable[[], float] = time.monotonic):
        if max_entries < 1:
            raise ValueError(f"expected max_entries >= 1, got {max_entries}")
        if ttl_s <= 0:
            raise ValueError(f"expected ttl_s > 0, got {ttl_s}")
        self.max_entries, self.ttl_s, self._clock = max_entries, ttl_s, clock
        self._entries: OrderedDict[tuple, tuple[float, Detection]] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, (born, _) in self._entries.items() if now - born > self.ttl_s]:
            del self._entries[key]

    def _lookup(self, key: tuple) -> Detection | None:
        with self._lock:
            self._expire()
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def get_or_detect(self, key: tuple, compute: Callable[[], Detection]) -> Detection:
        """The cached detection for ``key``, or ``compute()``'s (stored), computed once per key."""
        found = self._lookup(key)
        if found is not None:
            with self._lock:
                self.hits += 1
            return found
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            found = self._lookup(key)
            if found is not None:
                with self._lock:
                    self.hits += 1
                return found
            try:
                detection = compute()
                with self._lock:
                    self.misses += 1
                    self._entries[key] = (self._clock(), detection)
                    self._entries.move_to_end(key)
                    while len(self._entries) > self.max_entries:
                        self._entries.popitem(last=False)
            finally:  # a failed computation is not cached: the next caller tries again
                with self._lock:
                    self._key_locks.pop(key, None)
            return detection


#: The process-wide cache every door shares unless it passes its own.
SHARED_DETECTIONS = DetectionCache()
