"""The CLI's progress displays: where the byte bar's last state lands among what is printed after it, and
what each leaves in a log."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from hubmerge.progress import byte_progress


def test_a_finished_bar_is_printed_before_what_follows_it():
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100, color_system=None)
    with byte_progress(console, "merging") as on_progress:
        on_progress(5_000_000, 10_000_000)
        on_progress(10_000_000, 10_000_000)
        console.print("the evaluation table")  # push evaluates while the bar's context is still open
    text = screen.getvalue()
    assert "10.0/10.0 MB" in text
    assert text.rindex("merging") < text.index("the evaluation table")  # not redrawn under the table


def test_quiet_draws_nothing():
    screen = io.StringIO()
    with byte_progress(Console(file=screen), "merging", disable=True) as on_progress:
        on_progress(1, 1)
    assert screen.getvalue() == ""


@pytest.mark.parametrize("terminal", [True, False])
def test_no_bar_is_drawn_for_work_refused_before_it_started(terminal):
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=terminal, width=100, color_system=None)
    with pytest.raises(ValueError), byte_progress(console, "merging"):
        raise ValueError("the output exists")  # checks that run inside the bar's context, before any byte
    assert screen.getvalue().strip("\x1b[?25lh\r") == ""  # not even a blank line in a log


def test_off_a_terminal_the_finished_bar_is_one_line_and_no_blank_ones():
    screen = io.StringIO()
    with byte_progress(Console(file=screen, force_terminal=False, width=100), "merging") as on_progress:
        on_progress(10, 10)
        on_progress(10, 10)
    lines = screen.getvalue().split("\n")
    assert len(lines) == 2 and lines[0].startswith("merging") and lines[1] == ""


def test_reports_after_the_end_do_not_draw_the_bar_again():
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100, color_system=None)
    with byte_progress(console, "merging") as on_progress:
        on_progress(10, 10)
        console.print("the evaluation table")
        on_progress(10, 10)
    text = screen.getvalue()
    assert "merging" not in text[text.index("the evaluation table"):]


@pytest.mark.parametrize("terminal", [True, False])
def test_the_evaluation_display_leaves_no_blank_line_in_a_log(terminal):
    """Off a terminal the evaluation's transient display would show nothing, yet rich ends it with an empty
    line: before the error of a failed `evaluate`, or as the only thing on stderr of a good one."""
    from hubmerge.evaluation.loop import progress_bars

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=terminal, force_interactive=terminal, width=100)
    with progress_bars(console) as progress:
        if progress is not None:
            progress.remove_task(progress.add_task("loading the base", total=None))
    assert (progress is not None) is terminal
    if not terminal:
        assert screen.getvalue() == ""


@pytest.mark.parametrize("was_on", [True, False])
def test_the_hubs_own_bars_are_off_meanwhile_then_as_they_were(was_on, monkeypatch):
    """Bars a caller had turned off stay off after hubmerge's work; bars that were on come back."""
    import importlib

    from huggingface_hub import utils as hub_utils

    from hubmerge.progress import hub_bars_off

    hub_tqdm = importlib.import_module("huggingface_hub.utils.tqdm")  # the module, not its tqdm class
    monkeypatch.setattr(hub_tqdm, "HF_HUB_DISABLE_PROGRESS_BARS", None)  # the suite turns them off by environment
    was_disabled = hub_utils.are_progress_bars_disabled()
    try:
        (hub_utils.enable_progress_bars if was_on else hub_utils.disable_progress_bars)()
        with hub_bars_off():
            assert hub_utils.are_progress_bars_disabled()
        assert hub_utils.are_progress_bars_disabled() is not was_on
    finally:
        (hub_utils.disable_progress_bars if was_disabled else hub_utils.enable_progress_bars)()


def test_two_threads_quieting_the_hub_at_once_leave_its_bars_as_they_were(monkeypatch):
    """Two merges or evaluations in one process (two sessions of the web app): each saved the setting as it
    found it, so the second saved 'off' (the first had turned them off), restored it last, and the bars
    stayed off for good; the last one out restores what the first one in found."""
    import importlib
    import threading

    from huggingface_hub import utils as hub_utils

    from hubmerge.progress import hub_bars_off

    hub_tqdm = importlib.import_module("huggingface_hub.utils.tqdm")
    monkeypatch.setattr(hub_tqdm, "HF_HUB_DISABLE_PROGRESS_BARS", None)
    was_disabled = hub_utils.are_progress_bars_disabled()
    second_in, first_out = threading.Event(), threading.Event()

    def second() -> None:
        with hub_bars_off():
            second_in.set()
            first_out.wait(10)

    try:
        hub_utils.enable_progress_bars()
        thread = threading.Thread(target=second)
        with hub_bars_off():
            thread.start()
            second_in.wait(10)
        assert hub_utils.are_progress_bars_disabled()  # the second still works
        first_out.set()
        thread.join(10)
        assert not hub_utils.are_progress_bars_disabled()
    finally:
        (hub_utils.disable_progress_bars if was_disabled else hub_utils.enable_progress_bars)()


def test_two_evaluations_at_once_leave_the_libraries_bars_as_they_were(monkeypatch):
    """The same for the bars transformers and datasets draw, which an evaluation turns off meanwhile."""
    import importlib
    import threading

    import datasets
    from transformers.utils import logging as hf_logging

    from hubmerge.evaluation.loop import _library_bars_off

    monkeypatch.setattr(importlib.import_module("huggingface_hub.utils.tqdm"), "HF_HUB_DISABLE_PROGRESS_BARS", None)
    was = hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    second_in, first_out = threading.Event(), threading.Event()

    def second() -> None:
        with _library_bars_off():
            second_in.set()
            first_out.wait(10)

    try:
        hf_logging.enable_progress_bar()
        datasets.enable_progress_bars()
        thread = threading.Thread(target=second)
        with _library_bars_off():
            thread.start()
            second_in.wait(10)
        assert not hf_logging.is_progress_bar_enabled() and not datasets.is_progress_bar_enabled()
        first_out.set()
        thread.join(10)
        assert hf_logging.is_progress_bar_enabled() and datasets.is_progress_bar_enabled()
    finally:
        (hf_logging.enable_progress_bar if was[0] else hf_logging.disable_progress_bar)()
        (datasets.enable_progress_bars if was[1] else datasets.disable_progress_bars)()


def test_an_evaluation_ending_leaves_the_hubs_bars_off_under_another_threads_fetch(monkeypatch):
    """transformers' switch turns huggingface_hub's bars on with its own: an evaluation ending while another
    thread fetched or merged (hub_bars_off) turned the Hub's bars back on under it; they stay off until that
    one ends, then come back as they were."""
    import importlib
    import threading

    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    from hubmerge.evaluation.loop import _library_bars_off
    from hubmerge.progress import hub_bars_off

    monkeypatch.setattr(importlib.import_module("huggingface_hub.utils.tqdm"), "HF_HUB_DISABLE_PROGRESS_BARS", None)
    was = hub_utils.are_progress_bars_disabled(), hf_logging.is_progress_bar_enabled()
    fetching, evaluated = threading.Event(), threading.Event()
    seen: list[bool] = []

    def fetch() -> None:
        with hub_bars_off():
            fetching.set()
            evaluated.wait(10)
            seen.append(hub_utils.are_progress_bars_disabled())

    try:
        hf_logging.enable_progress_bar()  # the Hub's too
        thread = threading.Thread(target=fetch)
        thread.start()
        fetching.wait(10)
        with _library_bars_off():
            pass
        evaluated.set()
        thread.join(10)
        assert seen == [True]
        assert not hub_utils.are_progress_bars_disabled() and hf_logging.is_progress_bar_enabled()
    finally:
        (hf_logging.enable_progress_bar if was[1] else hf_logging.disable_progress_bar)()
        (hub_utils.disable_progress_bars if was[0] else hub_utils.enable_progress_bars)()


def test_two_evaluations_at_once_leave_the_warnings_filters_as_they_were():
    """The evaluation silenced the bar switches' warnings by changing the process's warnings filters around
    its whole work: the first one out put back the filters it found, the second one the 'ignore' the first had
    added, and the process showed no warning again."""
    import threading
    import warnings

    from hubmerge.evaluation.loop import _library_bars_off

    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def second() -> None:
        first_in.wait(10)
        with _library_bars_off():
            second_in.set()
            first_out.wait(10)

    with warnings.catch_warnings():  # the filters come back whatever happens here
        before = list(warnings.filters)
        thread = threading.Thread(target=second)
        thread.start()
        try:
            with _library_bars_off():
                first_in.set()
                second_in.wait(10)
        finally:
            first_out.set()
            thread.join(10)
        assert warnings.filters == before
