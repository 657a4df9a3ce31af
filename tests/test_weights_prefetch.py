"""Prefetch: results in order, and the reads run ahead bounded by the byte budget."""

from __future__ import annotations

import threading
import time

from hubmerge.weights.prefetch import Job, prefetch

BUDGET = 10
SIZES = [4, 6, 5, 5, 3, 7, 10, 15, 2, 2]  # 15: larger than the budget, so it must run alone


def test_reads_ahead_stay_within_the_byte_budget():
    lock = threading.Lock()
    outstanding: dict[int, int] = {}  # jobs started and not yet consumed: index -> bytes
    seen_at_start: list[dict[int, int]] = []

    def job(index: int) -> Job[int]:
        def run() -> int:
            with lock:
                outstanding[index] = SIZES[index]
                seen_at_start.append(dict(outstanding))
            return index

        return Job(SIZES[index], run)

    results = []
    for index in prefetch((job(i) for i in range(len(SIZES))), workers=8, max_bytes=BUDGET):
        time.sleep(0.02)  # a slow consumer: every job already submitted has time to start
        with lock:
            del outstanding[index]
        results.append(index)

    assert results == list(range(len(SIZES)))
    for started in seen_at_start:
        assert sum(started.values()) <= BUDGET or len(started) == 1, started
    # and it does read ahead, as far as the budget allows (4 + 6: exactly the budget), freeing what was
    # consumed; the job larger than the budget ran alone
    ahead = [{0: 4, 1: 6}, {2: 5, 3: 5}, {3: 5, 4: 3}, {4: 3, 5: 7}, {6: 10}, {7: 15}, {8: 2, 9: 2}]
    assert all(group in seen_at_start for group in ahead), seen_at_start
