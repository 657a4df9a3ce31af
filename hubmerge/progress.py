"""Progress on long work: a rich progress bar with bytes/s and ETA, behind a plain callback.

The library only ever calls ``on_progress(done, total)``; the CLI turns that into a bar, the UI into
``gr.Progress``. ``disable=True`` (``--quiet``) gives a callback that does nothing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["byte_progress", "hub_bars_off", "quietly", "setting_changed"]

_settings_lock = threading.Lock()
_setting_users: dict[str, int] = {}
_settings_found: dict[str, Any] = {}


@contextlib.contextmanager
def setting_changed(key: str, read: Callable[[], Any], change: Callable[[], None],
                    restore: Callable[[Any], None]) -> Iterator[None]:
    """A process-wide setting (a library's bars, a logger's level) ``change``d while any thread of this
    process works: the first one in ``read``s it, the last one out ``restore``s that. Each saving and
    restoring its own, two merges or evaluations at once (the web app's sessions) restored the setting under
    the other, and the last one out put back the other's 'off' for good."""
    with _settings_lock:
        if not _setting_users.get(key):
            _settings_found[key] = read()
            change()
        _setting_users[key] = _setting_users.get(key, 0) + 1
    try:
        yield
    finally:
        with _settings_lock:
            _setting_users[key] -= 1
            if not _setting_users[key]:
                restore(_settings_found.pop(key))


def quietly(switch: Callable[[], None]) -> Callable[[], None]:
    """``switch`` without the warnings it gives (bars the user's environment variable keeps off, which has the
    last word): for ``setting_changed``'s ``change`` and ``restore``, which run under its lock. The warnings
    filters are the whole process's: changed around work that other threads do too, the last one out restored
    the 'ignore' another had added, and the process showed no warning again."""

    def run() -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            switch()

    return run


@contextlib.contextmanager
def hub_bars_off() -> Iterator[None]:
    """huggingface_hub's own bars off meanwhile, then as they were; HF_HUB_DISABLE_PROGRESS_BARS, when the
    user set it, has the last word either way (its warnings that it does are not shown)."""
    from huggingface_hub import utils as hub_utils

    def switch(on: bool) -> None:
        quietly(hub_utils.enable_progress_bars if on else hub_utils.disable_progress_bars)()

    with setting_changed("huggingface_hub bars", lambda: not hub_utils.are_progress_bars_disabled(),
                         lambda: switch(False), switch):
        yield


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
