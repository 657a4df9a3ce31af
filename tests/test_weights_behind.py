"""Background steps: run in order, bounded, the first error stops the rest and reaches the submitter."""

from __future__ import annotations

import threading
import time

import pytest

from hubmerge.weights.behind import Behind


def test_steps_run_in_submission_order_on_one_thread():
    seen: list[tuple[int, str]] = []
    with Behind(max_pending=3) as behind:
        for i in range(20):
            behind.submit(lambda i=i: (time.sleep(0.001 * (i % 3)), seen.append((i, threading.current_thread().name))))
    assert [i for i, _ in seen] == list(range(20))
    assert len({name for _, name in seen}) == 1 and seen[0][1] != threading.current_thread().name


def test_submit_waits_when_max_pending_steps_are_queued():
    release = threading.Event()
    behind = Behind(max_pending=2)
    try:
        behind.submit(release.wait)
        behind.submit(lambda: None)
        blocked = threading.Thread(target=behind.submit, args=(lambda: None,))
        blocked.start()
        blocked.join(0.2)
        assert blocked.is_alive()  # a third step waits for the first to finish
        release.set()
        blocked.join(5)
        assert not blocked.is_alive()
        behind.drain()
    finally:
        release.set()
        behind.close()


def test_first_error_skips_later_steps_and_is_raised():
    ran: list[int] = []

    def fail() -> None:
        raise ValueError("step 1 failed")

    with pytest.raises(ValueError, match="step 1 failed"), Behind(max_pending=8) as behind:
        behind.submit(lambda: ran.append(0))
        behind.submit(fail)
        for i in range(2, 6):
            behind.submit(lambda i=i: ran.append(i))
    assert ran == [0]


def test_leaving_on_an_error_of_the_block_waits_for_the_running_step_and_keeps_that_error():
    finished = threading.Event()
    with pytest.raises(KeyError), Behind() as behind:
        behind.submit(lambda: (time.sleep(0.1), finished.set()))
        raise KeyError("the merge failed")
    assert finished.is_set()  # nothing writes into a directory being removed


def test_an_earlier_steps_error_reaches_the_next_submit():
    """A failed write stops the merge at the next group, not only when every group has been merged."""
    def fail() -> None:
        raise ValueError("step 0 failed")

    behind = Behind(max_pending=8)
    try:
        behind.submit(fail)
        deadline = time.monotonic() + 5
        while not behind._pending[0].done() and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(ValueError, match="step 0 failed"):
            behind.submit(lambda: None)
    finally:
        behind.close()


def test_leaving_on_an_error_of_the_block_keeps_it_over_a_steps_error():
    """The block's own error (the merge's, or Ctrl+C) is what the caller sees, not a write's that followed."""
    def fail() -> None:
        raise ValueError("the write failed")

    with pytest.raises(KeyError, match="the merge failed"), Behind() as behind:
        behind.submit(fail)
        raise KeyError("the merge failed")
