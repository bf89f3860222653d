"""Working planes a thread keeps from one matte to the next.

A full-resolution matte needs tens of megabytes of scratch planes. Freshly allocated, they
come from memory the process has just handed back to the system whenever other work in the
same thread (decoding, encoding, the baseline in ``bench/matte.py``) shrank the heap in
between, and every page costs a fault: at 3840x2160 the strand estimate took 5500 faults
per call this way, 7 of its 17 ms. :func:`reusable_plane` hands out the same memory
again instead, per thread and per name, up to :data:`KEPT_BYTES_PER_THREAD` kept.
"""

from __future__ import annotations

import mmap
import threading

import numpy as np

#: Most bytes of planes one thread keeps between calls; a request beyond it gets a fresh array.
KEPT_BYTES_PER_THREAD = 64 * 2**20


class _ThreadPlanes(threading.local):
    def __init__(self) -> None:
        self.buffers: dict[str, np.ndarray] = {}


_planes = _ThreadPlanes()


def reusable_plane(name: str, shape: tuple[int, ...], dtype: type | np.dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape`` and ``dtype`` that this thread gets back
    (the same memory, grown when too small) the next time it asks for ``name``.

    The caller must be done with it before asking for ``name`` again on the same thread, and
    must not hand it out (return values are fresh arrays). Once this thread would keep more
    than :data:`KEPT_BYTES_PER_THREAD` bytes, the request gets a fresh array instead.
    """
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffers = _planes.buffers
    buffer = buffers.get(name)
    if buffer is None or buffer.nbytes < size:
        kept = sum(b.nbytes for key, b in buffers.items() if key != name)
        if kept + size + size // 4 > KEPT_BYTES_PER_THREAD:
            return np.empty(shape, dtype)
        # A quarter more than asked for: the next crop is rarely the same size to the row.
        buffer = buffers[name] = _mapped(size + size // 4)
    return buffer[:size].view(dtype).reshape(shape)


def _mapped(size: int) -> np.ndarray:
    """``size`` bytes of their own anonymous mapping, freed when the array is: a long-lived block
    in the middle of the malloc heap would keep the heap from ever shrinking below it."""
    return np.frombuffer(mmap.mmap(-1, max(1, size)), np.uint8)


def kept_bytes() -> int:
    """Bytes of planes this thread keeps now."""
    return sum(buffer.nbytes for buffer in _planes.buffers.values())
