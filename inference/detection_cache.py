"""Detections by picture digest and settings, shared by every door.

A detection (segmenter plus refiner) is the expensive half of a cutout, so it is
computed once per picture and settings and kept in a bounded, aged-out,
thread-safe cache. :data:`SHARED_DETECTIONS` is the process-wide one the
studio, the command line, the batch page and the API share.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from inference.once_cache import OnceCache
from inference.pipeline import Detection
from inference.segmenter import DetectionSettings, resolve_backend


def settings_key(settings: DetectionSettings) -> tuple:
    """What a detection depends on: every detection setting plus the backend ``auto`` resolves to now."""
    return dataclasses.astuple(settings) + (resolve_backend(settings.backend).name,)


class DetectionCache(OnceCache[Detection]):
    """Detections by ``(picture digest, settings key)``: bounded (LRU), aged out, thread-safe.

    Two callers asking for the same key at once wait for one computation (see
    :class:`~inference.once_cache.OnceCache`); ``hits``/``misses`` count lookups.
    """

    def __init__(self, max_entries: int = 32, ttl_s: float = 3600.0, *, clock: Callable[[], float] = time.monotonic):
        super().__init__(max_entries, ttl_s=ttl_s, clock=clock)


#: The process-wide cache every door shares unless it passes its own.
SHARED_DETECTIONS = DetectionCache()
