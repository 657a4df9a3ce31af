"""The read-buffer pool: exact sizes, reuse once the last view is gone, bounded idle memory."""

from __future__ import annotations

import gc
import threading

import torch

from hubmerge.weights.buffers import BufferPool


def test_a_buffer_comes_back_only_when_every_view_is_gone():
    pool = BufferPool(max_idle_bytes=64 * 2**20)
    buffer = pool.take(3 * 2**20 + 5)
    assert buffer.dtype == torch.uint8 and buffer.numel() == 3 * 2**20 + 5
    view = buffer[16:32].view(torch.float32)
    address = buffer.data_ptr()
    del buffer
    gc.collect()
    assert pool.idle_bytes == 0  # a float view still uses it
    view.fill_(1.0)
    del view
    gc.collect()
    assert pool.idle_bytes == 4 * 2**20  # its size class
    again = pool.take(2**22)
    assert again.data_ptr() == address and pool.idle_bytes == 0


def test_small_buffers_are_not_pooled_and_idle_memory_is_capped():
    pool = BufferPool(max_idle_bytes=8 * 2**20)
    small = pool.take(1000)
    assert small.numel() == 1000
    del small
    big = [pool.take(4 * 2**20) for _ in range(4)]
    del big
    gc.collect()
    assert pool.idle_bytes == 8 * 2**20
    pool.clear()
    assert pool.idle_bytes == 0


def test_threads_take_and_release_without_sharing_a_buffer():
    pool = BufferPool()
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def work(value: int) -> None:
        for _ in range(50):
            buffer = pool.take(2**20)
            buffer.fill_(value)
            assert bool((buffer == value).all())
            with lock:
                seen.append((value, buffer.data_ptr()))
            del buffer

    threads = [threading.Thread(target=work, args=(v,)) for v in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 200
