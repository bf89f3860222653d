"""Per-thread reusable working planes (inference/work_buffers.py)."""

from __future__ import annotations

import threading

import numpy as np

from inference import work_buffers
from inference.work_buffers import kept_bytes, reusable_plane


def test_a_name_gets_its_memory_back_on_the_same_thread_and_grows_when_too_small():
    first = reusable_plane("test plane", (10, 20), np.float32)
    assert first.shape == (10, 20) and first.dtype == np.float32 and first.flags.c_contiguous
    again = reusable_plane("test plane", (20, 5, 2), np.uint8)  # smaller: the same memory, reshaped
    assert again.shape == (20, 5, 2) and again.dtype == np.uint8 and np.shares_memory(first, again)
    other = reusable_plane("test other", (10, 20), np.float32)
    assert not np.shares_memory(first, other)
    bigger = reusable_plane("test plane", (30, 20), np.float32)
    assert bigger.shape == (30, 20) and not np.shares_memory(first, bigger)
    assert np.shares_memory(reusable_plane("test plane", (30, 20), np.float32), bigger)


def test_each_thread_has_its_own_planes():
    here = reusable_plane("test threads", (8, 8), np.float32)
    there: list[np.ndarray] = []
    thread = threading.Thread(target=lambda: there.append(reusable_plane("test threads", (8, 8), np.float32)))
    thread.start()
    thread.join()
    assert not np.shares_memory(here, there[0])


def test_requests_beyond_the_kept_bytes_get_fresh_arrays(monkeypatch):
    monkeypatch.setattr(work_buffers, "KEPT_BYTES_PER_THREAD", 1000)
    seen: dict[str, object] = {}

    def in_new_thread() -> None:  # a thread with no planes yet
        kept = reusable_plane("small", (100,), np.float32)  # 400 bytes, kept with a quarter more
        seen["small kept"] = np.shares_memory(kept, reusable_plane("small", (100,), np.float32))
        big = reusable_plane("big", (200,), np.float32)  # 500 + 1000 > 1000: fresh every time
        seen["big kept"] = np.shares_memory(big, reusable_plane("big", (200,), np.float32))
        seen["kept bytes"] = kept_bytes()

    thread = threading.Thread(target=in_new_thread)
    thread.start()
    thread.join()
    assert seen == {"small kept": True, "big kept": False, "kept bytes": 500}
