"""Prefetch: results in order, and the reads run ahead as far as the byte budget allows, no further."""

from __future__ import annotations

import threading
import time

from hubmerge.weights.prefetch import Job, prefetch

BUDGET = 10
SIZES = [4, 6, 5, 5, 3, 7, 10, 15, 2, 2]  # 15: larger than the budget, so it must run alone
# Which jobs have started and are not yet consumed while the consumer holds each result: the next jobs
# are submitted when it asks for the next result, as long as they fit in the budget beside the unconsumed.
AHEAD = [{0, 1}, {1}, {2, 3}, {3, 4}, {4, 5}, {5}, {6}, {7}, {8, 9}, {9}]


def test_reads_ahead_as_far_as_the_byte_budget_allows_and_no_further():
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

    def started_now(expected: set[int]) -> set[int]:
        """The outstanding jobs once every submitted one has started (waits for the worker threads)."""
        deadline = time.monotonic() + 5
        while True:
            with lock:
                now = set(outstanding)
            if now == expected or time.monotonic() > deadline:
                return now
            time.sleep(0.001)

    results = []
    for step, index in enumerate(prefetch((job(i) for i in range(len(SIZES))), workers=8, max_bytes=BUDGET)):
        assert started_now(AHEAD[step]) == AHEAD[step], step
        with lock:
            del outstanding[index]
        results.append(index)

    assert results == list(range(len(SIZES)))
    for started in seen_at_start:
        assert sum(started.values()) <= BUDGET or len(started) == 1, started
