"""Progress on long work: a rich progress bar with bytes/s and ETA, behind a plain callback.

The library only ever calls ``on_progress(done, total)``; the CLI turns that into a bar, the UI into
``gr.Progress``. ``disable=True`` (``--quiet``) gives a callback that does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["byte_progress", "hub_bars_off"]


@contextlib.contextmanager
def hub_bars_off() -> Iterator[None]:
    """huggingface_hub's own bars off meanwhile, then as they were; HF_HUB_DISABLE_PROGRESS_BARS, when the
    user set it, has the last word either way (its warnings that it does are not shown)."""
    import warnings

    from huggingface_hub import utils as hub_utils

    was_on = not hub_utils.are_progress_bars_disabled()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hub_utils.disable_progress_bars()
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (hub_utils.enable_progress_bars if was_on else hub_utils.disable_progress_bars)()


@contextlib.contextmanager
def byte_progress(console: Console, description: str, *, disable: bool = False) -> Iterator[Callable[[int, int], None]]:
    """Yield an ``on_progress(done_bytes, total_bytes)`` callback drawing a transfer-style bar."""
    if disable:
        yield lambda done, total: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    task = bar.add_task(description, total=None)
    drawn = False

    def finish() -> None:
        if bar.live.is_started:  # rich prints a blank line at every stop off a terminal: stop once, if drawn
            bar.stop()

    def update(done: int, total: int) -> None:
        nonlocal drawn
        bar.update(task, completed=done, total=total)
        if not drawn:  # drawn at the first report, so a refusal before any work leaves no empty bar
            drawn = True
            bar.start()
        if done >= total > 0:  # done: print it where it happened, not under what comes next (evaluation)
            finish()

    try:
        yield update
    finally:
        finish()
