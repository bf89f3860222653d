"""A bounded, thread-safe cache that computes each key's value once.

Loaded models (:mod:`inference.model_cache`) and detections
(:mod:`inference.detection_cache`) are both expensive values that many callers ask
for at once: they share this one mechanism. Concurrent callers with the same key
wait for a single computation; a computation that raises caches nothing, so the
next caller tries again; the least recently used entry goes beyond
``max_entries``; entries older than ``ttl_s`` (when given) are dropped.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Value = TypeVar("Value")


class OnceCache(Generic[Value]):
    """Values by key, each computed once: bounded (LRU), optionally aged out, thread-safe.

    Args:
        max_entries: values kept, at least 1.
        ttl_s: seconds a value is kept after it was computed, > 0; ``None`` keeps it until evicted.
        clock: monotonic seconds (tests pass a fake one).

    ``hits`` and ``misses`` count lookups (for status pages, tests and benchmarks).
    """

    def __init__(
        self, max_entries: int, *, ttl_s: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"expected max_entries >= 1, got {max_entries}")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"expected ttl_s > 0 or None, got {ttl_s}")
        self.max_entries, self.ttl_s, self._clock = max_entries, ttl_s, clock
        self._entries: OrderedDict[Hashable, tuple[float, Value]] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._entries)

    def keys(self) -> list[Hashable]:
        """Cached keys, least recently used first."""
        with self._lock:
            self._expire()
            return list(self._entries)

    def clear(self) -> None:
        """Forget every value (each is freed once no caller holds it)."""
        with self._lock:
            self._entries.clear()

    def get(self, key: Hashable, compute: Callable[[], Value]) -> Value:
        """The value cached under ``key``, calling ``compute()`` once if it is not there."""
        found = self._lookup(key)
        if found is not None:
            return found[0]
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            found = self._lookup(key)
            if found is not None:
                return found[0]
            try:
                value = compute()
                with self._lock:
                    self.misses += 1
                    self._entries[key] = (self._clock(), value)
                    self._entries.move_to_end(key)
                    while len(self._entries) > self.max_entries:
                        self._entries.popitem(last=False)
            finally:  # stored (or failed) before the key's lock goes: no second computation
                with self._lock:
                    self._key_locks.pop(key, None)
            return value

    def _expire(self) -> None:
        if self.ttl_s is None:
            return
        now = self._clock()
        for key in [k for k, (born, _) in self._entries.items() if now - born > self.ttl_s]:
            del self._entries[key]

    def _lookup(self, key: Hashable) -> tuple[Value] | None:
        """``(value,)`` when cached (counted as a hit; a value may itself be falsy), else ``None``."""
        with self._lock:
            self._expire()
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return (entry[1],)
