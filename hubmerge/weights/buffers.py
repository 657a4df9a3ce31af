"""Reusable read buffers for sources that cannot map their files (HTTP).

Why: a remote merge reads gigabytes into buffers of 1-32 MB from several threads. Fresh
allocations of that size either come from glibc's per-thread arenas, which keep what was freed
(private memory grew to 3-4x the prefetch budget), or from new mappings, which fault in every page
again (about a second per 3 GB). Reusing a few buffers per size class keeps both the memory and
the page faults bounded. A buffer returns to the pool when the last tensor viewing it is gone.
"""

from __future__ import annotations

import mmap
import threading
import weakref
from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["SHARED_POOL", "BufferPool"]

_MIN_POOLED = 1 << 20  # smaller buffers come cheaply from malloc's small-object arenas


def _size_class(nbytes: int) -> int:
    return 1 << (nbytes - 1).bit_length()


class BufferPool:
    """Hands out uint8 tensors of at least the asked size; their memory is reused once unreferenced.

    ``max_idle_bytes`` caps what the pool keeps between uses; beyond it, freed buffers go back to the
    system. Thread-safe: buffers are taken by reader threads and released wherever the last view dies.
    """

    def __init__(self, max_idle_bytes: int = 128 * 2**20) -> None:
        self.max_idle_bytes = max_idle_bytes
        self._idle: dict[int, list[np.ndarray]] = defaultdict(list)
        self._idle_bytes = 0
        self._lock = threading.RLock()  # a release may run inside a take (garbage collection)

    def take(self, nbytes: int) -> torch.Tensor:
        """A uint8 tensor of exactly ``nbytes`` (contents undefined)."""
        import torch

        if nbytes < _MIN_POOLED:
            return torch.empty(nbytes, dtype=torch.uint8)
        size = _size_class(nbytes)
        with self._lock:
            idle = self._idle[size]
            slab = idle.pop() if idle else None
            if slab is not None:
                self._idle_bytes -= size
        if slab is None:  # its own mapping: when the pool lets it go, the memory goes back to the system
            slab = np.frombuffer(mmap.mmap(-1, size), dtype=np.uint8)
        lease = slab[:nbytes]  # a view: when every tensor made from it is gone, the slab comes back
        weakref.finalize(lease, self._release, slab)
        return torch.from_numpy(lease)

    def _release(self, slab: np.ndarray) -> None:
        with self._lock:
            if self._idle_bytes + slab.nbytes <= self.max_idle_bytes:
                self._idle[slab.nbytes].append(slab)
                self._idle_bytes += slab.nbytes

    def clear(self) -> None:
        """Drop every idle buffer (e.g. at the end of a merge)."""
        with self._lock:
            self._idle.clear()
            self._idle_bytes = 0

    @property
    def idle_bytes(self) -> int:
        return self._idle_bytes


SHARED_POOL = BufferPool()
