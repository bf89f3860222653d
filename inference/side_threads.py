"""The matte's side threads: two per process, for the steps a matte can run at the same time.

OpenCV and numpy release the GIL in their big operations, so two threads keep both cores of
the 2-core machines ``bench/matte.py`` runs on busy. A side task never waits on another side
task (with both side threads waiting, neither would ever run).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

_side_workers: tuple[int, ThreadPoolExecutor] | None = None
_side_workers_lock = threading.Lock()


def side_workers() -> ThreadPoolExecutor:
    """Two threads the matte modules hand independent steps to, so a matte uses both cores
    (OpenCV and numpy release the GIL in their big operations). One pool per process: a
    forked child gets its own (a parent's threads do not survive a fork)."""
    global _side_workers
    with _side_workers_lock:
        if _side_workers is None or _side_workers[0] != os.getpid():
            _side_workers = (os.getpid(), ThreadPoolExecutor(max_workers=2, thread_name_prefix="matte"))
        return _side_workers[1]


def run_on_both_cores(parts: Sequence[Callable[[], object]]) -> None:
    """Call every part, this thread and one side thread each taking the next one as soon as it
    is free (so uneven parts still keep both cores busy to the end). A part may wait for parts
    before it in the list (each of those is already taken by one thread or the other), not for
    other side tasks. An exception in a part is raised here once both threads have stopped."""
    queue = iter(parts)
    lock = threading.Lock()

    def take_parts() -> None:
        while True:
            with lock:
                part = next(queue, None)
            if part is None:
                return
            part()

    helper = side_workers().submit(take_parts)
    try:
        take_parts()
    finally:
        helper.result()
