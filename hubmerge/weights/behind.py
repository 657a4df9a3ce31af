"""Run the finishing work of each merged group on one background thread, in order, a few steps behind.

Why: on a CPU merge the calling thread is busy adding tensors. Casting the previous group to the
output dtype, checking it for NaN, writing it and dropping its input pages can run meanwhile on
another core. One thread keeps the writes in plan order; ``max_pending`` bounds the groups waiting
(and so the memory they hold).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

__all__ = ["Behind"]


class Behind:
    """Ordered background steps; the first error stops later steps and is raised to the submitter.

    Use as a context manager: leaving it waits for every step, and raises a step's error unless the
    block is already leaving on an exception of its own.
    """

    def __init__(self, *, max_pending: int = 2, name: str = "hubmerge-write") -> None:
        self.max_pending = max(1, max_pending)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: deque[Future[None]] = deque()
        self._failed = threading.Event()

    def submit(self, step: Callable[[], None]) -> None:
        """Queue ``step``; waits while ``max_pending`` steps are queued, and raises an earlier step's error."""
        while self._pending and (len(self._pending) >= self.max_pending or self._pending[0].done()):
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._run, step))

    def _run(self, step: Callable[[], None]) -> None:
        if self._failed.is_set():
            return  # an earlier step failed: the output is void, later steps would only add noise
        try:
            step()
        except BaseException:
            self._failed.set()
            raise

    def drain(self) -> None:
        """Wait for every queued step; raise the first error."""
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        """Stop: queued steps are skipped, a running one finishes. Errors are not raised."""
        self._failed.set()
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Behind:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                self.drain()
        finally:
            self.close()
