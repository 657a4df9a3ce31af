"""Run reads ahead of the consumer in worker threads, in order, within a byte budget.

The device merges tensor group *k* while threads already fetch group *k+1, k+2, …*; the budget
caps how many bytes wait unconsumed, so memory is bounded by the budget, not by the model size.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Job", "prefetch"]

T = TypeVar("T")


@dataclass(frozen=True)
class Job(Generic[T]):
    """A read to run ahead: ``run()`` produces about ``nbytes`` bytes."""

    nbytes: int
    run: Callable[[], T]


def prefetch(jobs: Iterable[Job[T]], *, workers: int, max_bytes: int) -> Generator[T, None, None]:
    """Yield the result of each job in order, running up to ``max_bytes`` of later jobs ahead.

    A job larger than the budget still runs, alone. When the consumer stops early or a job fails,
    queued jobs are cancelled and running ones finish before this generator returns; a consumer
    that may stop early closes it (``close()``), or the threads live on as long as the generator does.
    """
    pending: deque[tuple[int, Future[T]]] = deque()
    in_flight = 0
    job_iter = iter(jobs)
    next_job: Job[T] | None = next(job_iter, None)
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="hubmerge-read")
    try:
        while pending or next_job is not None:
            while next_job is not None and (not pending or in_flight + next_job.nbytes <= max_bytes):
                pending.append((next_job.nbytes, pool.submit(next_job.run)))
                in_flight += next_job.nbytes
                next_job = next(job_iter, None)
            nbytes, future = pending.popleft()
            result = future.result()
            in_flight -= nbytes
            yield result
            del result
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
